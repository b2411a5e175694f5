package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Webhook endpoints (outgoing status webhooks):
//
//	<p>:webhooks   HASH  endpoint id → Webhook (JSON), secrets included
//
//	<p>:webhooks:v STRING a counter bumped after every change to
//	               the endpoints (create, delete, update)
//
// One hash: the emitter caches the whole list (a few endpoints) and reads
// it again when the counter moved, which it checks once per batch it
// flushes (never per event): an endpoint registered through one process is
// known to every other one by the next batch they send.
func (k keys) webhooks() string        { return k.p + ":webhooks" }
func (k keys) webhooksVersion() string { return k.p + ":webhooks:v" }

// WebhookSecret is one signing secret of an endpoint. During a rotation's
// overlap the old one signs too, until Until.
type WebhookSecret struct {
	Secret string     `json:"secret"` // whsec_<base64>
	Until  *time.Time `json:"until,omitempty"`
}

// Webhook is a registered endpoint.
type Webhook struct {
	ID             string          `json:"id"`
	URL            string          `json:"url"`
	Events         []string        `json:"events"`
	CampaignID     string          `json:"campaign_id,omitempty"`
	IncludeAddress bool            `json:"include_address"`
	CreatedAt      time.Time       `json:"created_at"`
	DisabledAt     *time.Time      `json:"disabled_at,omitempty"`
	DisabledReason string          `json:"disabled_reason,omitempty"`
	Secrets        []WebhookSecret `json:"secrets"`
}

// Signing returns the secrets that sign at now: the newest, and an older
// one whose overlap has not ended.
func (w *Webhook) Signing(now time.Time) []string {
	var out []string
	for _, s := range w.Secrets {
		if s.Until == nil || now.Before(*s.Until) {
			out = append(out, s.Secret)
		}
	}
	return out
}

// CreateWebhook stores a new endpoint and gives it an id.
func (s *Store) CreateWebhook(ctx context.Context, w Webhook) (*Webhook, error) {
	w.ID = "wh_" + newID()
	if err := s.putWebhook(ctx, s.rdb, &w); err != nil {
		return nil, err
	}
	return &w, s.bumpWebhooks(ctx)
}

func (s *Store) putWebhook(ctx context.Context, c redis.Cmdable, w *Webhook) error {
	b, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.ID, err)
	}
	if err := c.HSet(ctx, s.k.webhooks(), w.ID, b).Err(); err != nil {
		return fmt.Errorf("store webhook %s: %w", w.ID, err)
	}
	return nil
}

// Webhooks lists the endpoints, oldest first.
func (s *Store) Webhooks(ctx context.Context) ([]Webhook, error) {
	m, err := s.rdb.HGetAll(ctx, s.k.webhooks()).Result()
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	out := make([]Webhook, 0, len(m))
	for id, v := range m {
		var w Webhook
		if err := json.Unmarshal([]byte(v), &w); err != nil {
			return nil, fmt.Errorf("webhook %s: %w", id, err)
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// GetWebhook returns one endpoint, or ErrNotFound.
func (s *Store) GetWebhook(ctx context.Context, id string) (*Webhook, error) {
	v, err := s.rdb.HGet(ctx, s.k.webhooks(), id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read webhook %s: %w", id, err)
	}
	var w Webhook
	if err := json.Unmarshal(v, &w); err != nil {
		return nil, fmt.Errorf("webhook %s: %w", id, err)
	}
	return &w, nil
}

// DeleteWebhook removes an endpoint (ErrNotFound if none).
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	n, err := s.rdb.HDel(ctx, s.k.webhooks(), id).Result()
	if err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	if err := s.dropWebhookLog(ctx, id); err != nil {
		return err
	}
	return s.bumpWebhooks(ctx)
}

// bumpWebhooks moves the endpoints' change counter on. It runs after the
// change itself: a reader that sees the new count reads the new list.
func (s *Store) bumpWebhooks(ctx context.Context) error {
	if err := s.rdb.Incr(ctx, s.k.webhooksVersion()).Err(); err != nil {
		return fmt.Errorf("webhooks changed: %w", err)
	}
	return nil
}

// WebhooksVersion returns the endpoints' change counter (0 before any
// change): equal counts mean an unchanged list.
func (s *Store) WebhooksVersion(ctx context.Context) (int64, error) {
	v, err := s.rdb.Get(ctx, s.k.webhooksVersion()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("webhooks version: %w", err)
	}
	return v, nil
}

// UpdateWebhook applies fn to an endpoint atomically (WATCH: a rotation and
// a disable at once both land).
func (s *Store) UpdateWebhook(ctx context.Context, id string, fn func(*Webhook) error) (*Webhook, error) {
	var out *Webhook
	for range 10 {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.HGet(ctx, s.k.webhooks(), id).Bytes()
			if errors.Is(err, redis.Nil) {
				return fmt.Errorf("webhook %s: %w", id, ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("read webhook %s: %w", id, err)
			}
			var w Webhook
			if err := json.Unmarshal(v, &w); err != nil {
				return fmt.Errorf("webhook %s: %w", id, err)
			}
			if err := fn(&w); err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error { return s.putWebhook(ctx, p, &w) })
			out = &w
			return err
		}, s.k.webhooks())
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return out, s.bumpWebhooks(ctx)
	}
	return nil, fmt.Errorf("webhook %s: %w", id, ErrConflict)
}

// Contact is who a recipient is, as a status webhook tells it.
type Contact struct {
	CustomerID string
	Email      string
}

// Contacts returns the customer id and address of recipients of campaign
// cid, one HMGET for them all (a webhook batch's worth); recipients that
// are gone (purged) are absent.
func (s *Store) Contacts(ctx context.Context, cid string, ids []int64) (map[int64]Contact, error) {
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = itoa(id)
	}
	vals, err := s.rdb.HMGet(ctx, s.k.campaign(cid).rcpt, fields...).Result()
	if err != nil {
		return nil, fmt.Errorf("read recipients of %s: %w", cid, err)
	}
	out := make(map[int64]Contact, len(ids))
	for i, v := range vals {
		ps, ok := v.(string)
		if !ok {
			continue
		}
		var p profile
		if err := json.Unmarshal([]byte(ps), &p); err != nil {
			return nil, fmt.Errorf("decode recipient %d of %s: %w", ids[i], cid, err)
		}
		out[ids[i]] = Contact{CustomerID: p.CustomerID, Email: p.Email}
	}
	return out, nil
}
