package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrPurging is returned for work on a campaign whose purge has begun: what
// would be sent or recorded for its recipients is being removed.
var ErrPurging = errors.New("the campaign is being purged or was purged")

// Outstanding is a resend or single notice queued or being sent: a purge
// waits for it. Until is when it should be over; past it, the entry is only
// trusted if its task still exists (a crash or a lost task must not block a
// purge for ever).
type Outstanding struct {
	TaskID string
	Until  time.Time
}

// trackScript records an outstanding delivery unless a purge has begun.
// KEYS: 1 state, 2 out. ARGV: 1 task id, 2 deadline (ms).
// Returns 1, or the error PURGING.
var trackScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'purging_at') == 1 or redis.call('HEXISTS', KEYS[1], 'purged_at') == 1 then
  return redis.error_reply('PURGING')
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
`)

// TrackDelivery records that the task taskID (a resend or single notice of
// campaign cid) is queued, until at the latest. It is called before the
// task is enqueued, and refuses (ErrPurging) once a purge has begun, so a
// purge and a resend never both go ahead.
func (s *Store) TrackDelivery(ctx context.Context, cid, taskID string, until time.Time) error {
	ck := s.k.campaign(cid)
	err := trackScript.Run(ctx, s.rdb, []string{ck.state, ck.out}, taskID, ms(until)).Err()
	if err != nil && strings.Contains(err.Error(), "PURGING") {
		return fmt.Errorf("campaign %s: %w", cid, ErrPurging)
	}
	if err != nil {
		return fmt.Errorf("track %s: %w", taskID, err)
	}
	return nil
}

// ExtendDelivery moves an outstanding delivery's deadline to until (a task
// that will run again later); it does nothing for a task not tracked.
func (s *Store) ExtendDelivery(ctx context.Context, cid, taskID string, until time.Time) error {
	err := s.rdb.ZAddXX(ctx, s.k.campaign(cid).out, redis.Z{Score: float64(ms(until)), Member: taskID}).Err()
	if err != nil {
		return fmt.Errorf("extend %s: %w", taskID, err)
	}
	return nil
}

// UntrackDelivery records that taskID is over: sent, or given up.
func (s *Store) UntrackDelivery(ctx context.Context, cid, taskID string) error {
	if err := s.rdb.ZRem(ctx, s.k.campaign(cid).out, taskID).Err(); err != nil {
		return fmt.Errorf("untrack %s: %w", taskID, err)
	}
	return nil
}

// OutstandingDeliveries lists a campaign's tracked deliveries.
func (s *Store) OutstandingDeliveries(ctx context.Context, cid string) ([]Outstanding, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.k.campaign(cid).out, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("outstanding deliveries of %s: %w", cid, err)
	}
	out := make([]Outstanding, 0, len(zs))
	for _, z := range zs {
		out = append(out, Outstanding{TaskID: fmt.Sprint(z.Member), Until: time.UnixMilli(int64(z.Score))})
	}
	return out, nil
}

// dropStaleScript removes an entry only if its deadline is still the one the
// caller saw (a worker may have just extended it).
// KEYS: 1 out. ARGV: 1 task id, 2 deadline (ms) seen. Returns 1 if removed.
var dropStaleScript = redis.NewScript(`
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`)

// DropStaleDelivery forgets an entry past its deadline whose task is gone
// (lost with a crashed Redis, or deleted by an operator).
func (s *Store) DropStaleDelivery(ctx context.Context, cid string, o Outstanding) error {
	err := dropStaleScript.Run(ctx, s.rdb, []string{s.k.campaign(cid).out}, o.TaskID, strconv.FormatInt(o.Until.UnixMilli(), 10)).Err()
	if err != nil {
		return fmt.Errorf("drop %s: %w", o.TaskID, err)
	}
	return nil
}
