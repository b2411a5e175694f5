package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Session is a support console sign-in. It names the API key that signed
// in, never holds the key itself.
type Session struct {
	KeyName string    `json:"key"`
	KeyFP   string    `json:"key_fp"` // which secret of that name signed in (api.Key.Fingerprint)
	CSRF    string    `json:"csrf"`
	At      time.Time `json:"at"`
}

// sessionKey stores a session under the hash of its id: a copy of the
// database does not hand out live session cookies.
//
//	<p>:session:<sha256 hex of id>   STRING session (JSON), with a TTL
func (s *Store) sessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return s.k.p + ":session:" + hex.EncodeToString(h[:])
}

// CreateSession stores a session for ttl.
func (s *Store) CreateSession(ctx context.Context, id string, sess Session, ttl time.Duration) error {
	b, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.sessionKey(id), b, ttl).Err(); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// Session returns a live session, or ErrNotFound.
func (s *Store) Session(ctx context.Context, id string) (*Session, error) {
	v, err := s.rdb.Get(ctx, s.sessionKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(v, &sess); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	return &sess, nil
}

// DeleteSession ends a session.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, s.sessionKey(id)).Err()
}
