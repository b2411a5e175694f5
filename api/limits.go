package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/metrics"
)

// Limits bound what one API key may do, and how often one source address
// may present a wrong key. They live in Redis (GCRA, go-redis/redis_rate,
// as the SMTP rate limit), so every API process shares them. 0 = no limit.
type Limits struct {
	ResendsPerHour         int // resends per key (support agent) per hour
	NotificationsPerMinute int // single notices and test sends per key per minute
	StartsPerHour          int // campaign starts (and schedules) per key per hour
	AuthFailuresPerMinute  int // wrong keys per source address per minute
}

// The quotas a key may reach, as metrics and messages name them.
const (
	limitResends       = "resends"
	limitNotifications = "notifications"
	limitStarts        = "starts"
)

// LimitError is a request refused because its key reached a quota (429).
type LimitError struct {
	Key        string
	Limit      string // resends, notifications, starts
	N          int
	Per        string // hour, minute
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("key %s has used its %d %s per %s; try again in %s", e.Key, e.N, e.Limit, e.Per, roundUp(e.RetryAfter))
}

// roundUp is d in whole seconds, at least one.
func roundUp(d time.Duration) time.Duration {
	return time.Duration(retrySeconds(d)) * time.Second
}

func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// writeLimited answers a request refused by a limit: 429 with Retry-After
// in whole seconds.
func writeLimited(w http.ResponseWriter, retry time.Duration, code, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(retry)))
	writeError(w, http.StatusTooManyRequests, code, msg, nil)
}

// quota takes one of the key's allowance of what (a LimitError when it is
// used up). Requests without a key in ctx (the demo, tests calling the
// server's methods) are not limited.
func (s *Server) quota(ctx context.Context, what string) error {
	n, per, limit := 0, "", redis_rate.Limit{}
	switch what {
	case limitResends:
		n, per, limit = s.cfg.Limits.ResendsPerHour, "hour", redis_rate.PerHour(s.cfg.Limits.ResendsPerHour)
	case limitNotifications:
		n, per, limit = s.cfg.Limits.NotificationsPerMinute, "minute", redis_rate.PerMinute(s.cfg.Limits.NotificationsPerMinute)
	case limitStarts:
		n, per, limit = s.cfg.Limits.StartsPerHour, "hour", redis_rate.PerHour(s.cfg.Limits.StartsPerHour)
	}
	k := Actor(ctx)
	if n <= 0 || k == nil {
		return nil
	}
	res, err := s.limiter.Allow(ctx, s.store.Prefix()+":quota:"+what+":"+k.Name, limit)
	if err != nil {
		return fmt.Errorf("quota %s of key %s: %w", what, k.Name, err)
	}
	if res.Allowed > 0 {
		return nil
	}
	metrics.KeyLimited.WithLabelValues(k.Name, what).Inc()
	// An operator's alert: a key doing this much may be stolen. The name,
	// never the secret; one line per key and limit every 10 s at most (a
	// script hammering away must not flood the log; the metric counts all).
	if s.limitLog.allow(k.Name+"\x00"+what, 10*time.Second) {
		s.log.Warn("API key reached its limit", "key", k.Name, "role", k.Role, "limit", what, "per", per, "max", n, "retry_after", roundUp(res.RetryAfter).String())
	}
	return &LimitError{Key: k.Name, Limit: what, N: n, Per: per, RetryAfter: res.RetryAfter}
}

// logSampler lets a log line through at most once per interval per name.
type logSampler struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *logSampler) allow(name string, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.last[name]) < every {
		return false
	}
	if l.last == nil || len(l.last) > 1000 { // key names are few; bounded anyway
		l.last = map[string]time.Time{}
	}
	l.last[name] = now
	return true
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
	return fmt.Sprintf("too many wrong keys from this address; try again in %s", roundUp(e.RetryAfter))
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
	if key, ok := k.Find(secret); ok {
		noteKey(r, key.Name)
		return key, nil
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
