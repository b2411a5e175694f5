package app

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/oshirase/oshirase/auth"
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

// LimitError says which quota a Limited *Error ran into (its Err): the
// console tells an agent "you have used your 30 resends per hour".
type LimitError struct {
	Key        string
	Limit      string // resends, notifications, starts
	N          int
	Per        string // hour, minute
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("key %s has used its %d %s per %s; try again in %s", e.Key, e.N, e.Limit, e.Per, RoundUp(e.RetryAfter))
}

// RoundUp is d in whole seconds, at least one.
func RoundUp(d time.Duration) time.Duration {
	return time.Duration(RetrySeconds(d)) * time.Second
}

// RetrySeconds is d as a Retry-After header gives it: whole seconds, at
// least one.
func RetrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// quota takes one of the key's allowance of what (a Limited *Error when it
// is used up). Calls without a key in ctx (the demo, tests calling App
// directly) are not limited.
func (a *App) quota(ctx context.Context, what string) error {
	n, per, limit := 0, "", redis_rate.Limit{}
	switch what {
	case limitResends:
		n, per, limit = a.cfg.Limits.ResendsPerHour, "hour", redis_rate.PerHour(a.cfg.Limits.ResendsPerHour)
	case limitNotifications:
		n, per, limit = a.cfg.Limits.NotificationsPerMinute, "minute", redis_rate.PerMinute(a.cfg.Limits.NotificationsPerMinute)
	case limitStarts:
		n, per, limit = a.cfg.Limits.StartsPerHour, "hour", redis_rate.PerHour(a.cfg.Limits.StartsPerHour)
	}
	k := auth.Actor(ctx)
	if n <= 0 || k == nil {
		return nil
	}
	res, err := a.limiter.Allow(ctx, a.store.Prefix()+":quota:"+what+":"+k.Name, limit)
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
	if a.limitLog.allow(k.Name+"\x00"+what, 10*time.Second) {
		a.log.Warn("API key reached its limit", "key", k.Name, "role", k.Role, "limit", what, "per", per, "max", n, "retry_after", RoundUp(res.RetryAfter).String())
	}
	le := &LimitError{Key: k.Name, Limit: what, N: n, Per: per, RetryAfter: res.RetryAfter}
	return &Error{Kind: Limited, Code: "rate_limited", Msg: le.Error(), RetryAfter: res.RetryAfter, Err: le}
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
