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
	KeyFP   string    `json:"key_fp"`        // which secret of that name signed in (auth.Key.Fingerprint)
	Via     string    `json:"via,omitempty"` // "oidc" for a sign-in through the identity provider (KeyFP: its subject's)
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

// ConsoleFlash is what the console shows once after a form post redirects
// (POST-redirect-GET): the address searched for and the message.
type ConsoleFlash struct {
	Query string `json:"q"`
	Flash string `json:"flash,omitempty"`
	Error string `json:"error,omitempty"`
	// Secret is a new API key (accounts page): shown once, and kept no
	// longer than the redirect that shows it takes.
	Secret string `json:"secret,omitempty"`
}

// flashKey holds a session's one-time flash, under the session id's hash:
//
//	<p>:flash:<sha256 hex of id>   STRING ConsoleFlash (JSON), 5 minutes
func (s *Store) flashKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return s.k.p + ":flash:" + hex.EncodeToString(h[:])
}

// SetFlash keeps f for the session's next page.
func (s *Store) SetFlash(ctx context.Context, id string, f ConsoleFlash) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.flashKey(id), b, 5*time.Minute).Err(); err != nil {
		return fmt.Errorf("set flash: %w", err)
	}
	return nil
}

// TakeFlash returns and removes the session's flash (nil if none).
func (s *Store) TakeFlash(ctx context.Context, id string) (*ConsoleFlash, error) {
	v, err := s.rdb.GetDel(ctx, s.flashKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take flash: %w", err)
	}
	var f ConsoleFlash
	if err := json.Unmarshal(v, &f); err != nil {
		return nil, fmt.Errorf("decode flash: %w", err)
	}
	return &f, nil
}
