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

// Idempotency-Key records (the IETF httpapi draft): one per (API key name,
// method, path, Idempotency-Key), named by the hash of the four so that no
// client-chosen text (nor an address in a path) becomes part of a key name:
//
//	<p>:idem:<sha256 hex>   HASH  fp (request fingerprint), owner (token of the
//	                              request running), then status, answer (JSON)
//	                              once it has answered; expires
func (s *Store) idemKey(scope string) string {
	h := sha256.Sum256([]byte(scope))
	return s.k.p + ":idem:" + hex.EncodeToString(h[:])
}

// IdemScope names one idempotency record: the key's name, the method, the
// path and the client's Idempotency-Key, joined unambiguously.
func IdemScope(keyName, method, path, idemKey string) string {
	b, _ := json.Marshal([]string{keyName, method, path, idemKey})
	return string(b)
}

// Results of BeginIdempotent.
var (
	// ErrIdemRunning: the first request with this key has not answered yet.
	ErrIdemRunning = errors.New("a request with this Idempotency-Key is still being processed")
	// ErrIdemMismatch: the key was used for a different request body.
	ErrIdemMismatch = errors.New("this Idempotency-Key was used for a different request")
)

// IdemAnswer is a stored first answer.
type IdemAnswer struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body"`
}

// idemBeginScript claims a key for a request, or reports what holds it.
// KEYS: 1 the record. ARGV: 1 fingerprint, 2 owner token, 3 in-flight TTL (ms).
// Returns {"new"} (claimed: run the request), {"running"} (whatever the
// fingerprint: the first has not answered), {"mismatch"}, or
// {"done", answer JSON}.
var idemBeginScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'fp', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new'}
end
local v = redis.call('HMGET', KEYS[1], 'fp', 'answer')
if not v[2] then return {'running'} end
if v[1] ~= ARGV[1] then return {'mismatch'} end
return {'done', v[2]}
`)

// BeginIdempotent claims scope for a request whose fingerprint is fp, in one
// atomic step (two concurrent requests never both get nil). It returns
// (nil, token, nil) when the caller must run the request and then call
// FinishIdempotent or AbandonIdempotent with token; the stored answer when
// the request already ran; ErrIdemRunning or ErrIdemMismatch otherwise.
// The claim lives inflight, so a process that dies mid-request does not
// hold the key for ever.
func (s *Store) BeginIdempotent(ctx context.Context, scope, fp string, inflight time.Duration) (*IdemAnswer, string, error) {
	token := newID()
	res, err := idemBeginScript.Run(ctx, s.rdb, []string{s.idemKey(scope)}, fp, token, inflight.Milliseconds()).StringSlice()
	if err != nil {
		return nil, "", fmt.Errorf("idempotency claim: %w", err)
	}
	switch res[0] {
	case "new":
		return nil, token, nil
	case "running":
		return nil, "", ErrIdemRunning
	case "mismatch":
		return nil, "", ErrIdemMismatch
	}
	var a IdemAnswer
	if len(res) < 2 || json.Unmarshal([]byte(res[1]), &a) != nil {
		return nil, "", fmt.Errorf("idempotency record: unreadable answer")
	}
	return &a, "", nil
}

// idemBeginStreamScript claims a key for a request whose fingerprint is
// known only once its body has been read (a streamed upload).
// KEYS: 1 the record. ARGV: 1 owner token, 2 in-flight TTL (ms).
// Returns {"new"}, {"running"}, or {"done", fingerprint, answer JSON}.
var idemBeginStreamScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
local v = redis.call('HMGET', KEYS[1], 'fp', 'answer')
if not v[2] then return {'running'} end
return {'done', v[1] or '', v[2]}
`)

// BeginIdempotentStream is BeginIdempotent for a request whose body is
// too large to hold and is hashed as it streams: the claim is taken
// before the body is read, and the fingerprint is stored with the answer
// (FinishIdempotent). It returns the claim's token, or the stored answer
// and its fingerprint for the caller to compare with the retry's body;
// ErrIdemRunning while the first request runs.
func (s *Store) BeginIdempotentStream(ctx context.Context, scope string, inflight time.Duration) (*IdemAnswer, string, string, error) {
	token := newID()
	res, err := idemBeginStreamScript.Run(ctx, s.rdb, []string{s.idemKey(scope)}, token, inflight.Milliseconds()).StringSlice()
	if err != nil {
		return nil, "", "", fmt.Errorf("idempotency claim: %w", err)
	}
	switch res[0] {
	case "new":
		return nil, "", token, nil
	case "running":
		return nil, "", "", ErrIdemRunning
	}
	var a IdemAnswer
	if len(res) < 3 || json.Unmarshal([]byte(res[2]), &a) != nil {
		return nil, "", "", fmt.Errorf("idempotency record: unreadable answer")
	}
	return &a, res[1], "", nil
}

// idemExtendScript keeps a running request's claim alive.
// KEYS: 1 the record. ARGV: 1 owner token, 2 in-flight TTL (ms).
// Returns 1 if extended, 0 if the claim is no longer the caller's.
var idemExtendScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// ExtendIdempotent keeps the claim of a request that runs long (an upload)
// for inflight more: its claim expires soon after its process dies, not
// after the longest upload could take.
func (s *Store) ExtendIdempotent(ctx context.Context, scope, token string, inflight time.Duration) error {
	if err := idemExtendScript.Run(ctx, s.rdb, []string{s.idemKey(scope)}, token, inflight.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("idempotency claim: %w", err)
	}
	return nil
}

// idemFinishScript stores the answer if the caller still owns the claim.
// KEYS: 1 the record. ARGV: 1 owner token, 2 answer JSON, 3 TTL (ms),
// 4 the request's fingerprint ("": the one stored with the claim stays).
// Returns 1 if stored, 0 if the claim was lost (expired and taken again).
var idemFinishScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'answer', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'fp', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// FinishIdempotent stores the first answer to scope for ttl.
func (s *Store) FinishIdempotent(ctx context.Context, scope, token string, a IdemAnswer, ttl time.Duration) error {
	return s.finishIdempotent(ctx, scope, token, a, ttl, "")
}

// FinishIdempotentStream stores the first answer to a claim taken by
// BeginIdempotentStream, with the fingerprint of the body it read.
func (s *Store) FinishIdempotentStream(ctx context.Context, scope, token, fp string, a IdemAnswer, ttl time.Duration) error {
	return s.finishIdempotent(ctx, scope, token, a, ttl, fp)
}

func (s *Store) finishIdempotent(ctx context.Context, scope, token string, a IdemAnswer, ttl time.Duration, fp string) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("idempotency answer: %w", err)
	}
	if err := idemFinishScript.Run(ctx, s.rdb, []string{s.idemKey(scope)}, token, b, ttl.Milliseconds(), fp).Err(); err != nil {
		return fmt.Errorf("idempotency answer: %w", err)
	}
	return nil
}

// idemAbandonScript frees a claim whose request should be retried in full.
// KEYS: 1 the record. ARGV: 1 owner token. Returns 1 if freed, else 0.
var idemAbandonScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// AbandonIdempotent frees scope (a request that failed on the server side
// or was refused for now: a retry with the same key runs again).
func (s *Store) AbandonIdempotent(ctx context.Context, scope, token string) error {
	if err := idemAbandonScript.Run(ctx, s.rdb, []string{s.idemKey(scope)}, token).Err(); err != nil {
		return fmt.Errorf("idempotency release: %w", err)
	}
	return nil
}
