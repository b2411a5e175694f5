// Package auth authenticates and authorizes every way into oshirase: the
// API keys of OSHIRASE_API_KEYS and the managed accounts' keys (Keys, Role;
// accounts.go), the key that made a request (Actor), the checks browser
// surfaces share (SameOrigin), the wrong-key guard, and sign-in through an
// OpenID provider (OIDC). The API, the support console and the monitoring
// UI all use it; none of them owns it.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
)

// Role is what an API key may do.
type Role string

const (
	RoleAdmin    Role = "admin"    // everything
	RoleSupport  Role = "support"  // look up, resend, read campaigns
	RoleOperator Role = "operator" // read campaigns, monitoring, metrics
)

// Key is one API key from OSHIRASE_API_KEYS, or a managed account (see
// Account) that made a request.
type Key struct {
	Name string
	Role Role
	hash [32]byte // SHA-256 of the secret; the secret itself is not kept
	// Account is the managed account behind the key (nil for a key of
	// OSHIRASE_API_KEYS), as read for this request.
	Account *store.Account
}

// ParseKeys reads "name:role:key,name:role:key". A key of exactly 64 hex
// digits, or "sha256:" and 64 hex digits, is taken as the SHA-256 of the
// real key, so the real key need not be written in the environment (and a
// key of 64 hex digits cannot be used as itself).
func ParseKeys(s string) ([]Key, error) {
	var out []Key
	seen := map[string]bool{}
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		parts := strings.SplitN(f, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			return nil, fmt.Errorf("OSHIRASE_API_KEYS entry %d: want name:role:key", i+1)
		}
		k := Key{Name: parts[0], Role: Role(parts[1])}
		switch k.Role {
		case RoleAdmin, RoleSupport, RoleOperator:
		default:
			return nil, fmt.Errorf("OSHIRASE_API_KEYS entry %d (%s): role %q is not admin, support or operator", i+1, k.Name, parts[1])
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("OSHIRASE_API_KEYS entry %d: name %q used twice", i+1, k.Name)
		}
		seen[k.Name] = true
		if h, ok := strings.CutPrefix(parts[2], "sha256:"); ok {
			// Unmistakably a hash: a bad one is an error, not a plain key.
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("OSHIRASE_API_KEYS entry %d (%s): sha256: must be followed by 64 hex digits", i+1, k.Name)
			}
			copy(k.hash[:], b)
		} else if b, err := hex.DecodeString(parts[2]); err == nil && len(b) == 32 {
			copy(k.hash[:], b)
		} else {
			if len(parts[2]) < 16 {
				return nil, fmt.Errorf("OSHIRASE_API_KEYS entry %d (%s): key shorter than 16 characters", i+1, k.Name)
			}
			k.hash = sha256.Sum256([]byte(parts[2]))
		}
		out = append(out, k)
	}
	return out, nil
}

// Fingerprint names the key's secret without revealing it (a hash of its
// hash): a session records it, so that replacing a leaked secret under the
// same name ends the sessions the old one opened.
func (k *Key) Fingerprint() string {
	h := sha256.Sum256(append([]byte("oshirase key fingerprint\x00"), k.hash[:]...))
	return hex.EncodeToString(h[:12])
}

// HashKey returns the SHA-256 hex form of a key, for OSHIRASE_API_KEYS.
func HashKey(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Keys authenticates secrets.
type Keys struct {
	keys     []Key
	guard    *authGuard // slows down sources of wrong keys; nil = off
	accounts Directory  // managed accounts; nil = only OSHIRASE_API_KEYS
	touched  lastUsed
}

// NewKeys returns a Keys over ks.
func NewKeys(ks []Key) *Keys { return &Keys{keys: ks} }

// Find returns the key whose secret is presented, comparing hashes in
// constant time and always over every key, so timing tells nothing.
func (k *Keys) Find(secret string) (*Key, bool) {
	if secret == "" {
		return nil, false
	}
	h := sha256.Sum256([]byte(secret))
	var found *Key
	for i := range k.keys {
		if subtle.ConstantTimeCompare(h[:], k.keys[i].hash[:]) == 1 {
			found = &k.keys[i]
		}
	}
	return found, found != nil
}

type ctxKey struct{}

// Actor returns the key that authenticated the request.
func Actor(ctx context.Context) *Key {
	k, _ := ctx.Value(ctxKey{}).(*Key)
	return k
}

// WithActor returns ctx carrying the authenticated key.
func WithActor(ctx context.Context, k *Key) context.Context {
	// A request authenticated otherwise than by Authenticate (a console
	// session) is named in the access log too.
	if note, ok := ctx.Value(noteKey{}).(func(string)); ok && k != nil {
		note(k.Name)
	}
	return context.WithValue(ctx, ctxKey{}, k)
}

// Secret extracts a key from "Authorization: Bearer <key>" or, for browsers,
// HTTP basic auth with the key as password.
func Secret(r *http.Request) string {
	h := r.Header.Get("Authorization")
	// The scheme is case-insensitive (RFC 9110 §11.1): "bearer" is Bearer.
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return ""
}

// Require wraps h so that only keys of the given roles reach it: 401 without
// a valid key, 403 with a key of another role.
func (k *Keys) Require(h http.Handler, roles ...Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := k.Authenticate(r, "api", Secret(r))
		var te *ThrottledError
		if errors.As(err, &te) {
			w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(te.RetryAfter)))
			writeError(w, http.StatusTooManyRequests, "too_many_failures", te.Error())
			return
		}
		if err != nil && !errors.Is(err, ErrBadKey) {
			slog.Error("authentication failed", "route", r.Pattern, "err", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", "keys cannot be checked just now; try again")
			return
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="oshirase"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)")
			return
		}
		if !allowed(key.Role, roles) {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("role %s may not do this", key.Role))
			return
		}
		h.ServeHTTP(w, r.WithContext(WithActor(r.Context(), key)))
	})
}

func allowed(r Role, roles []Role) bool {
	if r == RoleAdmin {
		return true
	}
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

// SameOrigin reports whether r may come from a page of this site, for
// endpoints a signed-in browser reaches (the console, asynqmon): browsers
// send Origin and Sec-Fetch-Site with every cross-site POST, so a forged
// form on another site is refused. A request with neither is not from a
// browser page (curl, a script) and is no forgery.
func SameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// ByName returns the key called name: the support console keeps only a key's
// name in its session and resolves it on every request, so a key removed from
// OSHIRASE_API_KEYS ends its sessions too.
func (k *Keys) ByName(name string) (*Key, bool) {
	var found *Key
	for i := range k.keys {
		if subtle.ConstantTimeCompare([]byte(k.keys[i].Name), []byte(name)) == 1 {
			found = &k.keys[i]
		}
	}
	return found, found != nil
}

// authGuard slows down a source address that keeps presenting wrong keys:
// each wrong key takes a token of a per-address GCRA bucket
// (AuthFailuresPerMinute, as large a burst); while the bucket is empty,
// every attempt from the address — with a right key too, so that guessing
// gains nothing — is answered 429 without the key being looked at. One
// token comes back every 60/N seconds: a source stops failing and is let in
// again within seconds, so colleagues behind the same NAT as a mistyping
// script are not locked out for long.
type authGuard struct {
	limiter *redis_rate.Limiter
	prefix  string
	limit   redis_rate.Limit
	log     *slog.Logger
}

// Guard makes k slow down sources that present wrong keys (see authGuard);
// perMinute 0 leaves it off.
func (k *Keys) Guard(rdb redis.UniversalClient, prefix string, perMinute int, log *slog.Logger) {
	if perMinute <= 0 {
		k.guard = nil
		return
	}
	if log == nil {
		log = slog.Default()
	}
	k.guard = &authGuard{limiter: redis_rate.NewLimiter(rdb), prefix: prefix, limit: redis_rate.PerMinute(perMinute), log: log}
}

// ThrottledError is an attempt refused because its source failed too often.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many wrong keys from this address; try again in %s", time.Duration(retrySeconds(e.RetryAfter))*time.Second)
}

// ErrBadKey is a missing or wrong key.
var ErrBadKey = errors.New("a valid API key is required")

// Authenticate returns the key whose secret r presents (secret: from the
// Authorization header, or a sign-in form), on behalf of surface (api,
// console, monitoring: for logs and metrics). A wrong key is logged with the
// source address (never the key) and counted; a source that failed too
// often gets a *ThrottledError. An empty secret is no attempt.
func (k *Keys) Authenticate(r *http.Request, surface, secret string) (*Key, error) {
	if secret == "" {
		return nil, ErrBadKey
	}
	ctx := r.Context()
	src := source(r)
	g := k.guard
	if g != nil {
		// Peek at the bucket (cost 0): empty means throttled.
		res, err := g.limiter.AllowN(ctx, g.key(src), g.limit, 0)
		if err != nil {
			// Fail open: a Redis hiccup must not lock everyone out, and
			// the key is still checked.
			g.log.Warn("auth failure limiter", "err", err)
		} else if res.Remaining < 1 {
			metrics.AuthThrottled.WithLabelValues(surface).Inc()
			emission := g.limit.Period / time.Duration(g.limit.Rate)
			wait := res.ResetAfter - time.Duration(g.limit.Burst-1)*emission
			return nil, &ThrottledError{RetryAfter: max(wait, time.Second)}
		}
	}
	key, err := k.lookup(ctx, secret)
	if err == nil {
		if note, ok := ctx.Value(noteKey{}).(func(string)); ok {
			note(key.Name)
		}
		return key, nil
	}
	if !errors.Is(err, ErrBadKey) {
		return nil, err // Redis is down: not the client's fault, not counted
	}
	metrics.AuthFailures.WithLabelValues(surface).Inc()
	pattern := r.Pattern
	if pattern == "" {
		pattern = r.URL.Path // the console's and monitoring's own paths hold no addresses
	}
	log := slog.Default()
	if g != nil {
		log = g.log
	}
	log.Warn("wrong API key", "surface", surface, "source", src, "route", pattern)
	if g != nil {
		res, err := g.limiter.Allow(ctx, g.key(src), g.limit)
		if err != nil {
			g.log.Warn("auth failure limiter", "err", err)
		} else if res.Remaining < 1 {
			g.log.Warn("source throttled after repeated wrong API keys", "surface", surface, "source", src,
				"max_per_minute", g.limit.Rate)
		}
	}
	return nil, ErrBadKey
}

func (g *authGuard) key(src string) string { return g.prefix + ":authfail:" + src }

// source is the address a request came from: an IPv6 address by its /64,
// which one host usually holds whole. Forwarded headers are not trusted
// (anyone can send them); behind a proxy every client shares its address.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}

func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// writeError answers in the API's error shape,
// {"error":{"code","message"}}: auth refuses before any handler runs.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]map[string]string{"error": {"code": code, "message": msg}})
}

type noteKey struct{}

// WithNote returns ctx with note, which Authenticate calls with the name of
// the key (or account) that authenticated a request made with it: the
// access log names who made each request without reading the key.
func WithNote(ctx context.Context, note func(name string)) context.Context {
	return context.WithValue(ctx, noteKey{}, note)
}
