package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
)

// ReplayHeader marks an answer replayed from an earlier request with the same
// Idempotency-Key (the name Stripe uses).
const ReplayHeader = "Idempotent-Replayed"

// DefaultIdempotencyTTL is how long a first answer is kept when
// Config.IdempotencyTTL is 0 (IDEMPOTENCY_TTL's default).
const DefaultIdempotencyTTL = 24 * time.Hour

// idemInflight bounds how long a request that never answers (its process
// died) holds its key: after it a retry runs again. It must outlast any
// request the key guards; these are all short JSON requests.
const idemInflight = 5 * time.Minute

// maxIdemKey is the longest Idempotency-Key taken (Stripe: 255).
const maxIdemKey = 255

// idempotent wraps a POST that creates or sends, per the IETF httpapi
// Idempotency-Key draft. Without the header the request runs as before.
// With it, the first request for (API key name, method, path, key) runs and
// its answer (status, body, Content-Type, Location) is kept for
// IDEMPOTENCY_TTL; a retry with the same body gets that answer again, with
// Idempotent-Replayed: true; a retry with another body is 422; a retry
// while the first still runs is 409. The claim is one atomic step in Redis,
// so two concurrent requests never both run. An answer that says "try again"
// (5xx, 429) is not kept: the retry runs afresh.
func (s *Server) idempotent(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, given := idemKeyOf(w, r)
		if !given {
			h(w, r)
			return
		}
		if key == "" {
			return // answered 400
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
		if err != nil {
			bodyError(w, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		scope := store.IdemScope(actorName(r), r.Method, r.URL.Path, key)
		ans, token, err := s.store.BeginIdempotent(r.Context(), scope, fingerprint(r, body), max(idemInflight, s.cfg.WriteTimeout))
		switch {
		case idemRefused(w, err):
			return
		case err != nil:
			s.fail(w, r, err)
			return
		case ans != nil:
			replay(w, ans)
			return
		}
		rec := &idemRecorder{ResponseWriter: w}
		defer s.settle(r, rec, scope, token, func() (string, bool) { return "", true })
		h(rec, r)
	}
}

// idemRefused answers a request the Idempotency-Key's record refuses (409
// while the first runs, 422 for another body); false if err is neither.
func idemRefused(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, store.ErrIdemRunning):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusConflict, "idempotency_key_in_use",
			"a request with this Idempotency-Key is still being processed; retry later", nil)
	case errors.Is(err, store.ErrIdemMismatch):
		writeError(w, http.StatusUnprocessableEntity, "idempotency_key_reused",
			"this Idempotency-Key was already used for a different request body; use a new key for a new request", nil)
	default:
		return false
	}
	return true
}

// replay answers with a stored first answer.
func replay(w http.ResponseWriter, ans *store.IdemAnswer) {
	for k, v := range ans.Headers {
		w.Header().Set(k, v)
	}
	w.Header().Set(ReplayHeader, "true")
	w.WriteHeader(ans.Status)
	w.Write(ans.Body)
}

// settle keeps the first answer (and, for a streamed body, its
// fingerprint, which fp gives once the body is read) or frees the claim
// when the answer says "try again", or the body could not be read to its
// end (the client broke off: its retry runs afresh).
func (s *Server) settle(r *http.Request, rec *idemRecorder, scope, token string, fp func() (string, bool)) {
	// The request's context may be gone (client left): the record
	// must be settled anyway, or retries see 409 until it expires.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	sum, whole := fp()
	if !whole || rec.status == 0 || rec.status >= 500 || rec.status == http.StatusTooManyRequests {
		if err := s.store.AbandonIdempotent(ctx, scope, token); err != nil {
			s.log.Error("idempotency: release failed", "route", r.Pattern, "err", err)
		}
		return
	}
	hdr := map[string]string{}
	for _, k := range []string{"Content-Type", "Location"} {
		if v := rec.Header().Get(k); v != "" {
			hdr[k] = v
		}
	}
	a := store.IdemAnswer{Status: rec.status, Headers: hdr, Body: rec.body.Bytes()}
	if err := s.store.FinishIdempotentStream(ctx, scope, token, sum, a, s.idemTTL()); err != nil {
		s.log.Error("idempotency: storing the answer failed", "route", r.Pattern, "err", err)
	}
}

// idempotentUpload is idempotent for a recipients upload, whose body may
// be gigabytes and is never held: the key is claimed before the body is
// read (a concurrent retry is 409 at once), the body is hashed as the
// upload streams it, and the hash is stored with the answer. A retry
// after the answer is read through and hashed too, then gets the stored
// answer (same hash) or 422 (another body); nothing of it is stored. The
// claim is renewed while the upload runs, so it outlives no dead process
// by more than idemUploadClaim.
func (s *Server) idempotentUpload(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, given := idemKeyOf(w, r)
		if !given {
			h(w, r)
			return
		}
		if key == "" {
			return // answered 400
		}
		scope := store.IdemScope(actorName(r), r.Method, r.URL.Path, key)
		ans, fp, token, err := s.store.BeginIdempotentStream(r.Context(), scope, idemUploadClaim)
		if idemRefused(w, err) {
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		hb := newBodyHash(r, s.cfg.MaxUploadBytes)
		if ans != nil {
			if got, err := hb.rest(); err != nil {
				bodyError(w, err)
			} else if got != fp {
				idemRefused(w, store.ErrIdemMismatch)
			} else {
				replay(w, ans)
			}
			return
		}
		stop := s.keepClaim(r.Context(), scope, token)
		rec := &idemRecorder{ResponseWriter: w}
		defer s.settle(r, rec, scope, token, func() (string, bool) {
			stop()
			// What the upload left unread (it stopped early) counts too.
			sum, err := hb.rest()
			return sum, err == nil
		})
		r.Body = hb
		h(rec, r)
	}
}

// idemUploadClaim is how long an upload's claim lives without renewal.
const idemUploadClaim = time.Minute

// keepClaim renews a claim every third of idemUploadClaim until the
// returned func runs.
func (s *Server) keepClaim(ctx context.Context, scope, token string) func() {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		t := time.NewTicker(idemUploadClaim / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.store.ExtendIdempotent(ctx, scope, token, idemUploadClaim); err != nil {
					s.log.Warn("idempotency: renewing an upload's claim", "err", err)
				}
			}
		}
	}()
	return cancel
}

func actorName(r *http.Request) string {
	if k := auth.Actor(r.Context()); k != nil {
		return k.Name
	}
	return ""
}

// bodyHash is a request body that hashes what is read from it, after the
// media type and content encoding (a gzip and a plain upload of the same
// rows are different requests).
type bodyHash struct {
	io.ReadCloser
	h     hash.Hash
	limit int64
	n     int64
}

func newBodyHash(r *http.Request, limit int64) *bodyHash {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	b := &bodyHash{ReadCloser: r.Body, h: sha256.New(), limit: limit}
	b.h.Write([]byte(mt + "\n" + strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))) + "\n"))
	return b
}

func (b *bodyHash) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	return n, err
}

// rest reads what is left of the body (up to the upload limit) and returns
// the hash of all of it.
func (b *bodyHash) rest() (string, error) {
	if b.n <= b.limit {
		if _, err := io.Copy(io.Discard, io.LimitReader(b, b.limit-b.n+1)); err != nil {
			return "", err
		}
	}
	if b.n > b.limit {
		return "", &http.MaxBytesError{Limit: b.limit}
	}
	return hex.EncodeToString(b.h.Sum(nil)), nil
}

// idemKeyOf reads the request's Idempotency-Key: given false without one;
// "" after answering 400 for a bad one.
func idemKeyOf(w http.ResponseWriter, r *http.Request) (key string, given bool) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", false
	}
	key, msg := parseIdemKey(vals)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "bad_idempotency_key", msg,
			[]fieldError{{Field: "Idempotency-Key", Error: msg}})
		return "", true
	}
	return key, true
}

// IdempotencyTTL is how long first answers are kept (for the console's
// forms, which use the same records).
func (s *Server) IdempotencyTTL() time.Duration { return s.idemTTL() }

func (s *Server) idemTTL() time.Duration {
	if s.cfg.IdempotencyTTL > 0 {
		return s.cfg.IdempotencyTTL
	}
	return DefaultIdempotencyTTL
}

// parseIdemKey reads the header as the draft writes it (a Structured Field
// string: "abc") or bare (abc), and says what is wrong with it otherwise.
func parseIdemKey(vals []string) (string, string) {
	if len(vals) > 1 {
		return "", "give one Idempotency-Key header, not several"
	}
	v := strings.TrimSpace(vals[0])
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		u, err := strconv.Unquote(v)
		if err != nil {
			return "", "Idempotency-Key is a quoted string that does not parse"
		}
		v = u
	}
	if v == "" {
		return "", "Idempotency-Key is empty"
	}
	if len(v) > maxIdemKey {
		return "", "Idempotency-Key is longer than " + strconv.Itoa(maxIdemKey) + " characters"
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", "Idempotency-Key may hold only printable ASCII characters"
		}
	}
	return v, ""
}

// fingerprint identifies the request's content: its media type and body
// (method, path and key name are in the record's name already).
func fingerprint(r *http.Request, body []byte) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	h := sha256.New()
	h.Write([]byte(mt + "\n"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// idemRecorder passes an answer through and keeps a copy of it.
type idemRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *idemRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *idemRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *idemRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
