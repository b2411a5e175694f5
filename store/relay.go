package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/notice"
)

// A relay that refuses every message (relaying denied, authentication
// required, the sender refused) must not burn a campaign: the worker pauses
// it with a reason instead of marking recipients failed. What it needs to
// know lives here: the run of one policy answer for different recipients
// (a per-campaign hash), the pause reason (in the campaign's state), and the
// set of campaigns paused for the relay that /readyz and /metrics read.

// relayStreakScript counts the different recipients that got the same
// policy answer since the campaign last sent a message.
//
// KEYS: 1 state, 2 counts, 3 relay (the run). ARGV: 1 the answer's
// signature, 2 recipient id.
// Returns {held, n}: held is 1 when the campaign is already paused for the
// relay (n is then 0); n is how many different recipients are in the run.
// A message sent (counts' "sent" moved) or another answer starts a new run.
var relayStreakScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'status', 'paused_reason')
if st[1] == 'paused' and st[2] then return {1, 0} end
local sent = redis.call('HGET', KEYS[2], 'sent') or '0'
local cur = redis.call('HMGET', KEYS[3], 'sig', 'sent')
if cur[1] ~= ARGV[1] or cur[2] ~= sent then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'sig', ARGV[1], 'sent', sent, 'n', 0)
end
if redis.call('HSETNX', KEYS[3], 'r:' .. ARGV[2], 1) == 1 then
  redis.call('HINCRBY', KEYS[3], 'n', 1)
end
return {0, tonumber(redis.call('HGET', KEYS[3], 'n'))}
`)

// RelayStreak records that recipient rid got the policy answer sig and
// reports whether the campaign is already paused for the relay (held) and
// how many different recipients got sig in a row, with no message sent
// between.
func (s *Store) RelayStreak(ctx context.Context, cid, sig string, rid int64) (held bool, n int64, err error) {
	ck := s.k.campaign(cid)
	v, err := relayStreakScript.Run(ctx, s.rdb, []string{ck.state, ck.counts, ck.relay}, sig, rid).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("relay streak of %s: %w", cid, err)
	}
	return v[0] == 1, v[1], nil
}

// relayPauseScript pauses a campaign because the relay refuses everything.
//
// KEYS: 1-12 as luaPrelude (12: relay, the run). ARGV: 1 now (ms), 2 reason.
// Returns {changed, reverted rids...}: changed is 1 when this call paused
// it (0: already paused for the relay, or not sending, done or paused).
// The recipients of the run whose refusal was recorded as "failed" before
// the pause go back to pending: the relay refused them, not their mailbox.
var relayPauseScript = redis.NewScript(luaPrelude + `
local st = redis.call('HMGET', KEYS[1], 'status', 'paused_reason')
local status = st[1]
if (status == 'paused' and st[2]) or (status ~= 'sending' and status ~= 'done' and status ~= 'paused') then
  return {0}
end
redis.call('HSET', KEYS[1], 'status', 'paused', 'paused_reason', ARGV[2], 'paused_at', ARGV[1])
if status == 'done' then redis.call('HDEL', KEYS[1], 'finished_at') end
local out = {1}
local run = redis.call('HKEYS', KEYS[12])
for _, f in ipairs(run) do
  if string.sub(f, 1, 2) == 'r:' then
    local rid = tonumber(string.sub(f, 3))
    if getst(rid) == ST.failed then
      setst(rid, ST.pending)
      out[#out+1] = rid
    end
  end
end
return out
`)

// PauseForRelay pauses campaign cid (sending, or done by the refusals
// themselves) with reason, and puts back to pending the recipients whose
// same refusal was recorded as a failure before. changed is false when the
// campaign was already paused for the relay, or is a draft or cancelled.
func (s *Store) PauseForRelay(ctx context.Context, cid, reason string) (changed bool, reverted []int64, err error) {
	// The set first: a campaign in it that is not paused for the relay is
	// skipped by RelayPaused, one paused but missing from it would hide.
	if err := s.rdb.SAdd(ctx, s.k.relayPaused(), cid).Err(); err != nil {
		return false, nil, fmt.Errorf("pause %s for the relay: %w", cid, err)
	}
	ck := s.k.campaign(cid)
	v, err := relayPauseScript.Run(ctx, s.rdb, ck.scriptKeys(), ms(s.Now()), reason).Int64Slice()
	if err != nil {
		return false, nil, fmt.Errorf("pause %s for the relay: %w", cid, err)
	}
	return v[0] == 1, v[1:], nil
}

// relayClearScript ends a pause for the relay, before a resume or a cancel.
//
// KEYS: 1-12 as luaPrelude (12: relay, the run). ARGV: 1 now (ms).
// Returns how many recipients went back from failed to pending: those of
// the run that were recorded failed after the pause (a chunk that got the
// refusal just before the pause, and recorded it just after).
var relayClearScript = redis.NewScript(luaPrelude + `
local st = redis.call('HMGET', KEYS[1], 'status', 'paused_reason')
local n = 0
if st[1] == 'paused' and st[2] then
  for _, f in ipairs(redis.call('HKEYS', KEYS[12])) do
    if string.sub(f, 1, 2) == 'r:' then
      local rid = tonumber(string.sub(f, 3))
      if getst(rid) == ST.failed then
        setst(rid, ST.pending)
        n = n + 1
      end
    end
  end
end
redis.call('DEL', KEYS[12])
redis.call('HDEL', KEYS[1], 'paused_reason', 'paused_at')
return n
`)

// clearRelayPause forgets why the system paused cid, if it did.
func (s *Store) clearRelayPause(ctx context.Context, cid string) error {
	ck := s.k.campaign(cid)
	if err := relayClearScript.Run(ctx, s.rdb, ck.scriptKeys(), ms(s.Now())).Err(); err != nil {
		return fmt.Errorf("clear the relay pause of %s: %w", cid, err)
	}
	return s.rdb.SRem(ctx, s.k.relayPaused(), cid).Err()
}

// RelayPaused lists the campaigns paused because the relay refuses
// everything. Entries of campaigns resumed, cancelled or deleted since are
// dropped on the way.
func (s *Store) RelayPaused(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.k.relayPaused()).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.k.campaign(id).state, "status", "paused_reason")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("campaigns paused for the relay: %w", err)
	}
	var out, stale []string
	for i, c := range cmds {
		v := c.Val()
		if v[0] == string(notice.CampaignPaused) && v[1] != nil {
			out = append(out, ids[i])
		} else {
			stale = append(stale, ids[i])
		}
	}
	if len(stale) > 0 {
		s.rdb.SRem(ctx, s.k.relayPaused(), stale)
	}
	return out, nil
}

// retryFailedScript sends failed recipients again.
//
// KEYS: 1-12 as luaPrelude. ARGV: 1 now (ms), 2.. recipient ids.
// Returns {status, moved rids...}: the recipients that were failed are now
// retrying (their retry tasks are the caller's to enqueue); a done campaign
// they belong to is sending again (finished_at cleared) until they finish.
var retryFailedScript = redis.NewScript(luaPrelude + `
local out = {''}
for i = 2, #ARGV do
  local rid = tonumber(ARGV[i])
  if getst(rid) == ST.failed then
    setst(rid, ST.retrying)
    out[#out+1] = rid
  end
end
local status = redis.call('HGET', KEYS[1], 'status')
if #out > 1 and status == 'done' then
  redis.call('HSET', KEYS[1], 'status', 'sending')
  redis.call('HDEL', KEYS[1], 'finished_at')
  status = 'sending'
end
out[1] = status
return out
`)

// RetryFailed moves the failed recipients among rids to retrying and
// returns those it moved; the caller enqueues a retry task for each. A done
// campaign goes back to sending until they finish. Only a sending, paused
// or done campaign takes it (ErrInvalidMove otherwise).
func (s *Store) RetryFailed(ctx context.Context, cid string, rids []int64) ([]int64, error) {
	st, err := s.State(ctx, cid)
	if err != nil {
		return nil, err
	}
	switch st.Status {
	case notice.CampaignSending, notice.CampaignPaused, notice.CampaignDone:
	default:
		return nil, fmt.Errorf("campaign %s is %s; only a sending, paused or done campaign retries: %w", cid, st.Status, ErrInvalidMove)
	}
	if len(rids) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(rids)+1)
	args = append(args, ms(s.Now()))
	for _, r := range rids {
		args = append(args, r)
	}
	v, err := retryFailedScript.Run(ctx, s.rdb, s.k.campaign(cid).scriptKeys(), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("retry failed recipients of %s: %w", cid, err)
	}
	moved := make([]int64, 0, len(v)-1)
	for _, x := range v[1:] {
		moved = append(moved, x.(int64))
	}
	if v[0] == string(notice.CampaignSending) && len(moved) > 0 {
		// Back in the active set: the watchdog looks after its claims and
		// the metrics show it drain.
		if err := s.rdb.SAdd(ctx, s.k.active(), cid).Err(); err != nil {
			return moved, fmt.Errorf("retry failed recipients of %s: %w", cid, err)
		}
	}
	return moved, nil
}

// MarkReported records that the permanent failure of attempt attempts of
// recipient rid was archived in asynq for operators to see.
func (s *Store) MarkReported(ctx context.Context, cid string, rid int64, attempts int) error {
	if err := s.rdb.HSet(ctx, s.k.campaign(cid).reported, itoa(rid), attempts).Err(); err != nil {
		return fmt.Errorf("mark failure of %s/%d reported: %w", cid, rid, err)
	}
	return nil
}

// Reported returns the attempt of recipient rid whose permanent failure was
// archived in asynq (0: none).
func (s *Store) Reported(ctx context.Context, cid string, rid int64) (int, error) {
	v, err := s.rdb.HGet(ctx, s.k.campaign(cid).reported, itoa(rid)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failure report of %s/%d: %w", cid, rid, err)
	}
	n, _ := strconv.Atoi(v)
	return n, nil
}
