package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The watchdog's view of a sending campaign, kept for the API process
// (metrics and the ETA): when its count of recipients done last moved,
// whether it found it stalled, and samples of that count over the last
// minutes. Every watchdog writes it at each sweep; the writes are
// idempotent, so several workers writing it agree.

// SampleKeep is how far back done-count samples are kept.
const SampleKeep = 15 * time.Minute

// sampleEvery is the least time between two samples.
const sampleEvery = 5 * time.Second

// watchScript records a sweep's look at a campaign.
// KEYS: 1 watch (HASH), 2 samples (ZSET).
// ARGV: 1 now (ms), 2 done, 3 stalled (1 = the watchdog found it stalled
// this sweep), 4 keep (ms), 5 sample every (ms).
// A change of done moves progress_at to now and ends a stall; a stall is
// kept from when it was first found until then. A sample is added when the
// last is sampleEvery old (or done went down: a new run); older than keep
// are dropped. Both keys expire 2 × keep after the last sweep.
// Returns 1 when done moved.
var watchScript = redis.NewScript(`
local now, done, stalled, keep, every = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local prev = tonumber(redis.call('HGET', KEYS[1], 'done'))
local moved = 0
if prev == nil or prev ~= done then
  redis.call('HSET', KEYS[1], 'done', done, 'progress_at', now)
  redis.call('HDEL', KEYS[1], 'stalled_at')
  moved = 1
elseif stalled == '1' and redis.call('HEXISTS', KEYS[1], 'stalled_at') == 0 then
  redis.call('HSET', KEYS[1], 'stalled_at', now)
end
local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local lastDone = -1
if #last > 0 then lastDone = tonumber(string.match(last[1], ':(%d+)$')) end
if #last == 0 or now - tonumber(last[2]) >= every or done < lastDone then
  if done < lastDone then redis.call('DEL', KEYS[2]) end
  redis.call('ZADD', KEYS[2], now, now .. ':' .. done)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - keep))
redis.call('PEXPIRE', KEYS[1], 2 * keep)
redis.call('PEXPIRE', KEYS[2], 2 * keep)
return moved
`)

// Sample is a campaign's count of recipients done at a time.
type Sample struct {
	At   time.Time
	Done int64
}

// Watch is the watchdog's view of a campaign.
type Watch struct {
	ProgressAt *time.Time // when its done count last changed (nil: never seen)
	StalledAt  *time.Time // when the watchdog found it stalled, with no progress since (nil: not stalled)
	Samples    []Sample   // done counts of the last SampleKeep, oldest first
}

// RecordSweep records a watchdog sweep's look at campaign id at now: its
// count of recipients done, and whether it was found stalled.
func (s *Store) RecordSweep(ctx context.Context, id string, now time.Time, done int64, stalled bool) error {
	ck := s.k.campaign(id)
	st := "0"
	if stalled {
		st = "1"
	}
	err := watchScript.Run(ctx, s.rdb, []string{ck.watch, ck.samples}, ms(now), done, st, SampleKeep.Milliseconds(), sampleEvery.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("record sweep of %s: %w", id, err)
	}
	return nil
}

// Watch reads the watchdog's view of campaign id.
func (s *Store) Watch(ctx context.Context, id string) (Watch, error) {
	ck := s.k.campaign(id)
	var h *redis.SliceCmd
	var z *redis.ZSliceCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		h = p.HMGet(ctx, ck.watch, "progress_at", "stalled_at")
		z = p.ZRangeWithScores(ctx, ck.samples, 0, -1)
		return nil
	}); err != nil {
		return Watch{}, fmt.Errorf("watch of %s: %w", id, err)
	}
	var w Watch
	if v, ok := h.Val()[0].(string); ok {
		w.ProgressAt = fromMS(v)
	}
	if v, ok := h.Val()[1].(string); ok {
		w.StalledAt = fromMS(v)
	}
	for _, m := range z.Val() {
		at, done, ok := strings.Cut(fmt.Sprint(m.Member), ":")
		if !ok {
			continue
		}
		t, err1 := strconv.ParseInt(at, 10, 64)
		d, err2 := strconv.ParseInt(done, 10, 64)
		if err1 == nil && err2 == nil {
			w.Samples = append(w.Samples, Sample{At: time.UnixMilli(t), Done: d})
		}
	}
	return w, nil
}
