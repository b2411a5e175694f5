package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The delivery log of a webhook endpoint, and the messages it can send
// again:
//
//	<p>:wh:<id>:log        STREAM delivery attempts (field a: JSON), the last DeliveryLogSize;
//	                              the entry ids are the pages' cursors
//	<p>:wh:<id>:msg:<mid>  STRING a delivery's payload (ids, statuses and codes: no personal
//	                              data), kept WebhookMessageTTL for redelivery
func (k keys) webhookLog(id string) string      { return k.p + ":wh:" + id + ":log" }
func (k keys) webhookMsg(id, mid string) string { return k.p + ":wh:" + id + ":msg:" + mid }

// DeliveryLogSize is how many attempts an endpoint's log keeps.
const DeliveryLogSize = 1000

// WebhookMessageTTL is how long a delivery's payload is kept for a
// redelivery: the three days its retries may take, and a few more.
const WebhookMessageTTL = 7 * 24 * time.Hour

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

// LogDelivery records an attempt and keeps the message's payload for a
// redelivery (the payload is written on the first attempt only).
func (s *Store) LogDelivery(ctx context.Context, endpoint string, a DeliveryAttempt, payload []byte) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: s.k.webhookLog(endpoint), MaxLen: DeliveryLogSize, Values: []string{"a", string(b)}})
		if payload != nil {
			p.SetNX(ctx, s.k.webhookMsg(endpoint, a.DeliveryID), payload, WebhookMessageTTL)
		}
		return nil
	})
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

// WebhookMessage returns a delivery's stored payload, or ErrNotFound once
// it has expired (or never was).
func (s *Store) WebhookMessage(ctx context.Context, endpoint, mid string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.k.webhookMsg(endpoint, mid)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("delivery %s of webhook %s: %w", mid, endpoint, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("delivery %s of webhook %s: %w", mid, endpoint, err)
	}
	return b, nil
}

// dropWebhookLog removes an endpoint's log (its stored payloads expire).
func (s *Store) dropWebhookLog(ctx context.Context, endpoint string) error {
	if err := s.rdb.Del(ctx, s.k.webhookLog(endpoint)).Err(); err != nil {
		return fmt.Errorf("delivery log %s: %w", endpoint, err)
	}
	return nil
}
