package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The delivery log of a webhook endpoint:
//
//	<p>:wh:<id>:log  STREAM delivery attempts (field a: JSON), the last DeliveryLogSize;
//	                        the entry ids are the pages' cursors
//
// A delivery's events are not copied here: asynq keeps its task (a day
// after success, archived after the last failure), and a redelivery reads
// them from there.
func (k keys) webhookLog(id string) string { return k.p + ":wh:" + id + ":log" }

// DeliveryLogSize is how many attempts an endpoint's log keeps.
const DeliveryLogSize = 1000

// DeliveryAttempt is one attempt to deliver a message to an endpoint.
type DeliveryAttempt struct {
	ID         string    `json:"id,omitempty"` // the log entry's id (a stream id)
	DeliveryID string    `json:"delivery_id"`  // the message's webhook-id
	Attempt    int       `json:"attempt"`      // 1 for the first try of a delivery
	Redelivery bool      `json:"redelivery,omitempty"`
	At         time.Time `json:"at"`
	Events     int       `json:"events"`
	StatusCode int       `json:"status_code,omitempty"` // 0: no answer
	LatencyMS  int64     `json:"latency_ms"`
	Error      string    `json:"error,omitempty"`
}

// LogDelivery records an attempt.
func (s *Store) LogDelivery(ctx context.Context, endpoint string, a DeliveryAttempt) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	err = s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.k.webhookLog(endpoint), MaxLen: DeliveryLogSize, Values: []string{"a", string(b)}}).Err()
	if err != nil {
		return fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	return nil
}

// DeliveryLog returns up to limit attempts of an endpoint, newest first,
// older than the attempt before ("": from the newest), and the cursor of
// the next page ("" at the end).
func (s *Store) DeliveryLog(ctx context.Context, endpoint, before string, limit int) ([]DeliveryAttempt, string, error) {
	end := "+"
	if before != "" {
		end = "(" + before
	}
	ms, err := s.rdb.XRevRangeN(ctx, s.k.webhookLog(endpoint), end, "-", int64(limit)+1).Result()
	if err != nil {
		return nil, "", fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	next := ""
	if len(ms) > limit {
		ms = ms[:limit]
		next = ms[limit-1].ID
	}
	out := make([]DeliveryAttempt, 0, len(ms))
	for _, m := range ms {
		v, _ := m.Values["a"].(string)
		var a DeliveryAttempt
		if err := json.Unmarshal([]byte(v), &a); err != nil {
			return nil, "", fmt.Errorf("delivery log %s: entry %s: %w", endpoint, m.ID, err)
		}
		a.ID = m.ID
		out = append(out, a)
	}
	return out, next, nil
}

// dropWebhookLog removes an endpoint's log.
func (s *Store) dropWebhookLog(ctx context.Context, endpoint string) error {
	if err := s.rdb.Del(ctx, s.k.webhookLog(endpoint)).Err(); err != nil {
		return fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	return nil
}
