package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Suppression is an address oshirase will not send to: its mailbox does not
// exist (a 5.1.x answer) or an admin put it there.
type Suppression struct {
	Email      string    `json:"email"`
	Reason     string    `json:"reason"`
	Code       int       `json:"code,omitempty"`
	Enhanced   string    `json:"enhanced,omitempty"`
	CampaignID string    `json:"campaign_id,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	At         time.Time `json:"at"`
}

// Suppress adds (or replaces) an address on the suppression list.
func (s *Store) Suppress(ctx context.Context, sup Suppression) error {
	sup.Email = EmailKey(sup.Email)
	if sup.At.IsZero() {
		sup.At = s.Now().UTC()
	}
	b, err := json.Marshal(sup)
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.k.suppressed(), sup.Email, b).Err(); err != nil {
		return fmt.Errorf("suppress address: %w", err)
	}
	return nil
}

// Unsuppress removes an address; it reports whether it was there.
func (s *Store) Unsuppress(ctx context.Context, addr string) (bool, error) {
	n, err := s.rdb.HDel(ctx, s.k.suppressed(), EmailKey(addr)).Result()
	if err != nil {
		return false, fmt.Errorf("unsuppress address: %w", err)
	}
	return n > 0, nil
}

// Suppressed returns the suppression records of those addrs that have one,
// keyed by the address as given.
func (s *Store) Suppressed(ctx context.Context, addrs []string) (map[string]*Suppression, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	fields := make([]string, len(addrs))
	for i, a := range addrs {
		fields[i] = EmailKey(a)
	}
	v, err := s.rdb.HMGet(ctx, s.k.suppressed(), fields...).Result()
	if err != nil {
		return nil, fmt.Errorf("check suppressions: %w", err)
	}
	var out map[string]*Suppression
	for i, x := range v {
		str, ok := x.(string)
		if !ok {
			continue
		}
		var sup Suppression
		if err := json.Unmarshal([]byte(str), &sup); err != nil {
			return nil, fmt.Errorf("decode suppression: %w", err)
		}
		if out == nil {
			out = map[string]*Suppression{}
		}
		out[addrs[i]] = &sup
	}
	return out, nil
}

// Suppression returns one address's record, or ErrNotFound.
func (s *Store) Suppression(ctx context.Context, addr string) (*Suppression, error) {
	m, err := s.Suppressed(ctx, []string{addr})
	if err != nil {
		return nil, err
	}
	if m[addr] == nil {
		return nil, fmt.Errorf("suppression: %w", ErrNotFound)
	}
	return m[addr], nil
}

// Suppressions pages through the list with a Redis HSCAN cursor.
func (s *Store) Suppressions(ctx context.Context, cursor uint64, count int64) ([]Suppression, uint64, error) {
	kv, next, err := s.rdb.HScan(ctx, s.k.suppressed(), cursor, "*", count).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list suppressions: %w", err)
	}
	out := make([]Suppression, 0, len(kv)/2)
	for i := 1; i < len(kv); i += 2 {
		var sup Suppression
		if err := json.Unmarshal([]byte(kv[i]), &sup); err != nil {
			return nil, 0, fmt.Errorf("decode suppression: %w", err)
		}
		out = append(out, sup)
	}
	return out, next, nil
}

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	ID         string          `json:"id"` // stream id, time-ordered
	At         time.Time       `json:"at"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	CampaignID string          `json:"campaign_id,omitempty"`
	Recipient  int64           `json:"recipient_id,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Details    json.RawMessage `json:"details,omitempty"`
}

// Audit appends an entry. The stream is never trimmed by oshirase.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	vals := map[string]any{"actor": e.Actor, "action": e.Action}
	if e.CampaignID != "" {
		vals["campaign"] = e.CampaignID
	}
	if e.Recipient != 0 {
		vals["recipient"] = e.Recipient
	}
	if e.Reason != "" {
		vals["reason"] = e.Reason
	}
	if len(e.Details) > 0 {
		vals["details"] = string(e.Details)
	}
	if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.k.audit(), Values: vals}).Err(); err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditQuery filters the audit log.
type AuditQuery struct {
	CampaignID string
	Actor      string
	Before     string // stream id to page backwards from ("" = newest)
	Limit      int
}

// AuditLog reads entries newest first, and a cursor for the next page.
func (s *Store) AuditLog(ctx context.Context, q AuditQuery) ([]AuditEntry, string, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	end := "+"
	if q.Before != "" {
		end = "(" + q.Before
	}
	var out []AuditEntry
	for range 100 { // bounded: at most 100 × 500 entries read per call
		msgs, err := s.rdb.XRevRangeN(ctx, s.k.audit(), end, "-", 500).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, "", fmt.Errorf("read audit log: %w", err)
		}
		for _, m := range msgs {
			e := auditFrom(m)
			if (q.CampaignID == "" || e.CampaignID == q.CampaignID) && (q.Actor == "" || e.Actor == q.Actor) {
				out = append(out, e)
				if len(out) == q.Limit {
					return out, m.ID, nil
				}
			}
		}
		if len(msgs) < 500 {
			return out, "", nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
	return out, end[1:], nil
}

func auditFrom(m redis.XMessage) AuditEntry {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := AuditEntry{ID: m.ID, Actor: str("actor"), Action: str("action"), CampaignID: str("campaign"), Reason: str("reason")}
	if d := str("details"); d != "" {
		e.Details = json.RawMessage(d)
	}
	fmt.Sscan(str("recipient"), &e.Recipient)
	var msec int64
	fmt.Sscanf(m.ID, "%d-", &msec)
	e.At = time.UnixMilli(msec).UTC()
	return e
}
