package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/notice"
)

// Limits on what is kept of messages that come back, per campaign: a flood
// of bounces must not fill Redis.
const (
	// RawMaxBytes is how much of one returned message is kept.
	RawMaxBytes = 32 << 10
	// rawKeep is how many raw messages a campaign keeps (the newest).
	rawKeep = 500
	// returnedKeep is how many returned events one recipient keeps.
	returnedKeep = 20
)

// ErrPurged is returned for a bounce of a campaign whose personal data is gone.
var ErrPurged = errors.New("campaign was purged")

// storedReturned is notice.Returned with its de-duplication key.
type storedReturned struct {
	notice.Returned
	Key string `json:"k"`
}

func decodeReturned(s string, out *[]notice.Returned) error {
	var st []storedReturned
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return err
	}
	for _, e := range st {
		*out = append(*out, e.Returned)
	}
	return nil
}

// recordReturnedScript records one returned message of a recipient, once.
// KEYS: 1 state, 2 counts, 3 st, 4 bnc, 5 raw.
// ARGV: 1 recipient id, 2 de-duplication key (delivery:kind), 3 event JSON
// (a storedReturned), 4 new status code (0 = an event only), 5 raw entry
// (” = none), 6 raw messages kept, 7 events kept per recipient.
// Returns {recorded (1, or 0 for a duplicate), status code before, status
// code after}; errors NOCAMPAIGN, PURGED, NORECIPIENT.
var recordReturnedScript = redis.NewScript(luaPrelude + `
local st = redis.call('HMGET', KEYS[1], 'status', 'purged_at', 'purging_at', 'seq')
if st[1] == false then return redis.error_reply('NOCAMPAIGN') end
if st[2] or st[3] then return redis.error_reply('PURGED') end
local rid = tonumber(ARGV[1])
if rid < 1 or rid > (tonumber(st[4]) or 0) then return redis.error_reply('NORECIPIENT') end
local list = {}
local cur = redis.call('HGET', KEYS[4], ARGV[1])
if cur then
  list = cjson.decode(cur)
  for _, e in ipairs(list) do
    if e.k == ARGV[2] then
      local c = getst(rid)
      return {0, c, c}
    end
  end
end
if #list >= tonumber(ARGV[7]) then table.remove(list, 1) end
list[#list+1] = cjson.decode(ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(list))
local before = getst(rid)
local after = before
local new = tonumber(ARGV[4])
-- Only a notice the relay took can bounce or be complained about; a
-- complaint is worse news than a bounce and may follow one (the state
-- machine's moves: sent → bounced, complained; bounced → complained).
if (new == ST.bounced or new == ST.complained) and canmove(before, new) then
  setst(rid, new)
  after = new
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[5])
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[6]), -1)
end
return {1, before, after}
`)

// ReturnedOutcome says what RecordReturned did.
type ReturnedOutcome struct {
	Duplicate bool          // the same kind for the same delivery was recorded before: nothing changed
	Before    notice.Status // the recipient's status before
	After     notice.Status // and after
}

// RecordReturned records what came back for recipient rid's delivery
// (0: the campaign's own, n: resend n) of campaign cid, once per delivery
// and kind however often it arrives. set, when not empty, is the status it
// moves the recipient to (bounced or complained) — only from sent (and
// complained also from bounced). raw, when not nil, is kept (its first
// RawMaxBytes) among the campaign's newest returned messages.
func (s *Store) RecordReturned(ctx context.Context, cid string, rid int64, ev notice.Returned, set notice.Status, raw []byte) (ReturnedOutcome, error) {
	ck := s.k.campaign(cid)
	ev.Diagnostic = notice.MaskAddresses(ev.Diagnostic)
	key := strconv.Itoa(ev.Delivery) + ":" + ev.Kind
	evj, err := json.Marshal(storedReturned{Returned: ev, Key: key})
	if err != nil {
		return ReturnedOutcome{}, err
	}
	code := 0 // an event only: the script moves no one to pending
	if set != "" {
		if code, err = codeOf(set); err != nil {
			return ReturnedOutcome{}, fmt.Errorf("record returned message for %s/%d: %w", cid, rid, err)
		}
	}
	rawEntry := ""
	if raw != nil {
		if len(raw) > RawMaxBytes {
			raw = raw[:RawMaxBytes]
		}
		b, _ := json.Marshal(struct {
			At        time.Time `json:"at"`
			Recipient int64     `json:"recipient"`
			Kind      string    `json:"kind"`
			Raw       string    `json:"raw"`
		}{ev.At, rid, ev.Kind, string(raw)})
		rawEntry = string(b)
	}
	res, err := recordReturnedScript.Run(ctx, s.rdb, []string{ck.state, ck.counts, ck.st, ck.bnc, ck.raw},
		rid, key, string(evj), code, rawEntry, rawKeep, returnedKeep).Int64Slice()
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "ERR ")
		switch {
		case strings.HasPrefix(msg, "NOCAMPAIGN"):
			return ReturnedOutcome{}, fmt.Errorf("campaign %s: %w", cid, ErrNotFound)
		case strings.HasPrefix(msg, "NORECIPIENT"):
			return ReturnedOutcome{}, fmt.Errorf("recipient %d of campaign %s: %w", rid, cid, ErrNotFound)
		case strings.HasPrefix(msg, "PURGED"):
			return ReturnedOutcome{}, fmt.Errorf("campaign %s: %w", cid, ErrPurged)
		}
		return ReturnedOutcome{}, fmt.Errorf("record returned message for %s/%d: %w", cid, rid, scriptStatusError(err))
	}
	out := ReturnedOutcome{Duplicate: res[0] == 0}
	if out.Before, err = statusOf(byte(res[1])); err == nil {
		out.After, err = statusOf(byte(res[2]))
	}
	if err != nil {
		return ReturnedOutcome{}, fmt.Errorf("record returned message for %s/%d: %w", cid, rid, err)
	}
	return out, nil
}

// ReturnedRaw lists the raw returned messages a campaign keeps (JSON
// entries, oldest first).
func (s *Store) ReturnedRaw(ctx context.Context, cid string) ([]string, error) {
	return s.rdb.LRange(ctx, s.k.campaign(cid).raw, 0, -1).Result()
}

// Returned messages tied to no notice (no token, or one whose HMAC fails)
// are kept for a person to look at: the newest unmatchedKeep, for
// unmatchedTTL after the last one (they may name people, and no purge of
// a campaign reaches them).
const (
	unmatchedKeep = 1000
	unmatchedTTL  = 30 * 24 * time.Hour
)

// KeepUnmatched keeps the first RawMaxBytes of a returned message that no
// notice could be found for, with why.
func (s *Store) KeepUnmatched(ctx context.Context, at time.Time, kind, why string, raw []byte) error {
	if len(raw) > RawMaxBytes {
		raw = raw[:RawMaxBytes]
	}
	b, _ := json.Marshal(struct {
		At   time.Time `json:"at"`
		Kind string    `json:"kind"`
		Why  string    `json:"why"`
		Raw  string    `json:"raw"`
	}{at, kind, why, string(raw)})
	k := s.k.unmatched()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, k, b)
		p.LTrim(ctx, k, -unmatchedKeep, -1)
		p.Expire(ctx, k, unmatchedTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("keep unmatched returned message: %w", err)
	}
	return nil
}

// Unmatched lists the kept returned messages tied to no notice (JSON
// entries, oldest first).
func (s *Store) Unmatched(ctx context.Context) ([]string, error) {
	return s.rdb.LRange(ctx, s.k.unmatched(), 0, -1).Result()
}
