package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/metrics"
)

// ErrUnreplicated is returned (wrapped) by Do when a deciding write ran on
// the primary but WAIT did not see it reach REDIS_WAIT_REPLICAS replicas
// within REDIS_WAIT_TIMEOUT: a failover now could lose it. The StepResult
// returned with it is what the primary answered.
var ErrUnreplicated = errors.New("not acknowledged by enough Redis replicas")

// SetWaitReplicas makes the writes that decide a send (a claim before MAIL,
// an outcome after DATA) wait until n replicas have them, for at most
// timeout (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT). n = 0 turns it off.
// Redis replicates asynchronously: without it, a failover can lose a
// recorded "sent" (the recipient is sent again) or a claim (a second worker
// may take the recipient while the first is sending to it).
func (s *Store) SetWaitReplicas(n int, timeout time.Duration) {
	if timeout <= 0 {
		timeout = time.Second
	}
	s.waitN, s.waitTimeout = n, timeout
}

// evalWait runs script and, when wait is set, WAIT on the same connection
// right after it (WAIT cannot run inside a script): a pipeline of the two
// on the primary that serves keys[0] (on a cluster, the slot's master). It
// returns the script's reply and how many replicas acknowledged it.
func (s *Store) evalWait(ctx context.Context, script *redis.Script, keys []string, wait bool, args ...any) ([]any, int64, error) {
	if !wait {
		v, err := script.Run(ctx, s.rdb, keys, args...).Slice()
		return v, 0, err
	}
	var c redis.Cmdable = s.rdb
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, 0, fmt.Errorf("cluster master of %s: %w", keys[0], err)
		}
		c = node
	}
	run := func(eval func(p redis.Pipeliner) *redis.Cmd) (*redis.Cmd, *redis.Cmd) {
		var ev *redis.Cmd
		var w *redis.Cmd
		c.Pipelined(ctx, func(p redis.Pipeliner) error {
			ev = eval(p)
			// (Pipeliner has no Wait method; the timeout stays below the
			// connection's read timeout, see config's REDIS_WAIT_TIMEOUT.)
			w = p.Do(ctx, "wait", s.waitN, s.waitTimeout.Milliseconds())
			return nil
		})
		return ev, w
	}
	ev, w := run(func(p redis.Pipeliner) *redis.Cmd { return script.EvalSha(ctx, p, keys, args...) })
	if redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") {
		ev, w = run(func(p redis.Pipeliner) *redis.Cmd { return script.Eval(ctx, p, keys, args...) })
	}
	v, err := ev.Slice()
	if err != nil {
		return nil, 0, err
	}
	n, err := w.Int64()
	if err != nil {
		return v, 0, fmt.Errorf("WAIT %d: %w", s.waitN, err)
	}
	return v, n, nil
}

// Refusal names why Redis refused a write because of its replication state
// ("noreplicas": min-replicas-to-write not met; "readonly": a replica, such
// as an old primary after a failover; "masterdown": a replica that lost its
// primary; "loading": a server loading its data), or "" for any other
// error. While writes are refused every campaign stands still.
func Refusal(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, r := range []string{"NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING"} {
		if strings.HasPrefix(msg, r) || strings.Contains(msg, ": "+r+" ") || strings.Contains(msg, " "+r+" ") {
			return strings.ToLower(r)
		}
	}
	return ""
}

// RefusalHook is a go-redis hook that counts every write Redis refuses for
// its replication state (metric oshirase_redis_write_refused_total) and
// logs it at most once per interval per reason, with how many there were:
// while a primary waits for its replica, each worker's every write is
// refused, thousands a minute, and one line says it as well as thousands.
type RefusalHook struct {
	log      *slog.Logger
	interval time.Duration

	mu     sync.Mutex
	last   map[string]time.Time // reason → when last logged
	quiet  map[string]int       // reason → refusals since then, not logged
	latest time.Time            // the latest refusal of any reason
}

// NewRefusalHook returns a hook that logs to log every interval at most.
func NewRefusalHook(log *slog.Logger, interval time.Duration) *RefusalHook {
	return &RefusalHook{log: log, interval: interval, last: map[string]time.Time{}, quiet: map[string]int{}}
}

// Refused reports whether a write was refused within the last d.
func (h *RefusalHook) Refused(d time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.latest.IsZero() && time.Since(h.latest) < d
}

func (h *RefusalHook) note(err error) {
	reason := Refusal(err)
	if reason == "" {
		return
	}
	metrics.RedisWriteRefused.WithLabelValues(reason).Inc()
	now := time.Now()
	h.mu.Lock()
	h.latest = now
	if now.Sub(h.last[reason]) < h.interval {
		h.quiet[reason]++
		h.mu.Unlock()
		return
	}
	n := h.quiet[reason]
	h.last[reason], h.quiet[reason] = now, 0
	h.mu.Unlock()
	h.log.Warn("Redis refuses writes: every campaign waits until it takes them again",
		"reason", reason, "err", err, "refused_since_last_log", n, "next_log_in", h.interval.String())
}

// DialHook implements redis.Hook.
func (h *RefusalHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook implements redis.Hook.
func (h *RefusalHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// The error next returns: cmd.Err() may not be set yet when a hook
		// sees it.
		err := next(ctx, cmd)
		if err != nil {
			h.note(err)
		}
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *RefusalHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if c.Err() != nil {
				h.note(c.Err())
			}
		}
		return err
	}
}

// WriteProbe makes a small write (a key that expires by itself), for
// /readyz: Redis may answer PING and reads while it refuses every write.
func (s *Store) WriteProbe(ctx context.Context) error {
	return s.rdb.Set(ctx, s.k.p+":readyz", time.Now().UnixMilli(), 10*time.Second).Err()
}
