package store

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// luaPrelude is shared by the scripts that move recipients between states.
// Every script headed by it is called with the same KEYS (ckeys.scriptKeys):
// 1 state, 2 counts, 3 st, 4 claim, 5 dlv, 6 rcpt, 7 emails, 8 chunks, 9 rs,
// 10 att, 11 doubt, 12 relay (the current run of one relay refusal, store/relay.go).
// Its functions raise UNKNOWNSTATUS and BADTRANSITION (scriptStatusError).
var luaPrelude = luaStatus + `
local function getst(rid)
  local cur = redis.call('GETRANGE', KEYS[3], rid, rid)
  if cur == '' then return ST.pending end
  local c = string.byte(cur)
  if c >= NSTATUS then error({err = 'UNKNOWNSTATUS ' .. c .. ' of recipient ' .. rid}) end
  return c
end
-- setst is the only write of a recipient's status: it keeps the counts in
-- step and refuses a move the state machine does not allow.
local function setst(rid, new)
  local c = getst(rid)
  if c == new then return c end
  if new < 0 or new >= NSTATUS then error({err = 'UNKNOWNSTATUS ' .. new .. ' for recipient ' .. rid}) end
  if not canmove(c, new) then error({err = 'BADTRANSITION ' .. NAMES[c] .. ' -> ' .. NAMES[new] .. ' of recipient ' .. rid}) end
  redis.call('SETRANGE', KEYS[3], rid, string.char(new))
  redis.call('HINCRBY', KEYS[2], NAMES[c], -1)
  redis.call('HINCRBY', KEYS[2], NAMES[new], 1)
  return c
end
local function open()
  local v = redis.call('HMGET', KEYS[2], NAMES[ST.pending], NAMES[ST.sending], NAMES[ST.retrying])
  return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0)
end
-- maybeDone marks a sending campaign done once nothing is left open.
local function maybeDone(now)
  if open() <= 0 and redis.call('HGET', KEYS[1], 'status') == 'sending' then
    redis.call('HSET', KEYS[1], 'status', 'done', 'finished_at', now)
    return 1
  end
  return 0
end
`

// addScript appends recipients.
// KEYS: 1-12 as luaPrelude (uses 1 state, 2 counts, 3 st, 6 rcpt, 7 emails).
// ARGV: 1 now, 2 the upload's line these recipients take it through
// (0 = not an upload), then (email, profile) pairs. With a line, the upload's stored-through line and accepted count
// move on in the same step as the rows are stored: a campaign never says
// more, or less, is stored than is.
// Returns one id per pair, 0 for an address already in the campaign; errors
// NOCAMPAIGN, NOTDRAFT <status> when the campaign no longer accepts recipients.
var addScript = redis.NewScript(luaPrelude + `
local status = redis.call('HGET', KEYS[1], 'status')
if status == false then return redis.error_reply('NOCAMPAIGN') end
if status ~= 'draft' then return redis.error_reply('NOTDRAFT ' .. status) end
local out = {}
local added = 0
for i = 3, #ARGV, 2 do
  local email = ARGV[i]
  if redis.call('HEXISTS', KEYS[7], email) == 1 then
    out[#out+1] = 0
  else
    local id = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    redis.call('HSET', KEYS[7], email, id)
    redis.call('HSET', KEYS[6], id, ARGV[i+1])
    out[#out+1] = id
    added = added + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[2], 'total', added)
  redis.call('HINCRBY', KEYS[2], NAMES[ST.pending], added)
  -- pre-extend the status string so that GETRANGE over the whole id range is cheap
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
  if redis.call('STRLEN', KEYS[3]) <= seq then redis.call('SETRANGE', KEYS[3], seq, string.char(ST.pending)) end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], 'upload_line', ARGV[2], 'upload_updated_at', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'upload_accepted', added)
end
return out
`)

// The step script's answers about the claim, and its ARGV count: named
// once here, handed to the script as Lua constants (stepConsts).
const (
	claimGranted = 1     // the claim is ours
	claimBusy    = -1    // someone else holds a live claim
	claimStopped = -1000 // the campaign is not sending, or at another generation
	claimCurrent = 10    // claimCurrent + code: not claimable, the recipient is in status code
	stepArgc     = 15
)

// Positions in the step script's reply.
const (
	stepReplyFinished = iota
	stepReplyClaimed
	stepReplyStatus
	stepReplyGen
	stepReplyDone
	stepReplyReasserted
	stepReplyDoubted
)

var stepConsts = fmt.Sprintf("local CLAIM_GRANTED, CLAIM_BUSY, CLAIM_STOPPED, CLAIM_CURRENT, STEP_ARGC = %d, %d, %d, %d, %d\n",
	claimGranted, claimBusy, claimStopped, claimCurrent, stepArgc)

// stepScript finishes one recipient and claims the next in one round trip,
// so that the hot path costs a single Redis call per message. Store.Do is
// its only caller; stepArgv builds its ARGV and Do reads its reply.
//
// KEYS (ckeys.scriptKeys): 1 state, 2 counts, 3 st, 4 claim, 5 dlv, 6 rcpt,
// 7 emails, 8 chunks, 9 rs, 10 att, 11 doubt, 12 relay.
//
// ARGV (stepArgc of them; the script names each at its head):
//
//	 1 now_ms       now, unix ms (also the value stamped into att and finished_at)
//	 2 token        the claimant: a stale worker cannot free another's claim
//	 3 finish_rid   recipient whose outcome this step records (0 = none)
//	 4 finish_code  its new status code
//	 5 delivery     its delivery record, JSON ('' = keep the stored one)
//	 6 claim_rid    recipient to claim next (0 = none)
//	 7 claim_dl     the claim's deadline, unix ms
//	 8 want_gen     claim only while the campaign is at this generation (0 = any)
//	 9 retrying     1: a retry task may claim a retrying recipient
//	10 lease        chunk lease member ('' = none)
//	11 lease_dl     the lease's new deadline, unix ms
//	12 drop_lease   1: remove the lease instead of extending it
//	13 renew        1: only extend a claim this token already holds, never take one
//	14 sent_at      the finished attempt's sent_at as in the delivery JSON ('' = not sent):
//	                tells our own repeated step from a second "sent"
//	15 reassert     1 (with renew): a renewal that finds its claim gone (a failover
//	                lost it) or handed to the watchdog takes it back, since its
//	                message is in flight
//
// Returns {finished, claimed, status, gen, done, reasserted, doubted}
// (stepReply* are their positions):
//
//	finished    1 when the finish changed the recipient's status
//	claimed     claimGranted (1): the claim is ours;
//	            claimBusy (-1): someone else holds a live claim;
//	            claimStopped (-1000): the campaign is not sending, or at another gen;
//	            claimCurrent (10) + code: not claimable, the recipient is in that status;
//	            0: no claim was asked for
//	status      the campaign's status
//	gen         the campaign's generation
//	done        1 when this step finished the campaign
//	reasserted  1 when a renewal took its lost claim back
//	doubted     1 when this step found a possible duplicate (a claim taken over
//	            from an attempt with no outcome, or a second "sent")
//
// Errors: STEPARGS (wrong ARGV count), BADTRANSITION, UNKNOWNSTATUS.
var stepScript = redis.NewScript(luaPrelude + stepConsts + stepSource)

const stepSource = `
if #ARGV ~= STEP_ARGC then return redis.error_reply('STEPARGS ' .. #ARGV .. ', want ' .. STEP_ARGC) end
local now_ms     = ARGV[1]
local now        = tonumber(now_ms)
local token      = ARGV[2]
local frid       = tonumber(ARGV[3])
local fcode      = tonumber(ARGV[4])
local delivery   = ARGV[5]
local crid       = tonumber(ARGV[6])
local claim_dl   = ARGV[7]
local want_gen   = tonumber(ARGV[8])
local retrying   = ARGV[9] == '1'
local lease      = ARGV[10]
local lease_dl   = ARGV[11]
local drop_lease = ARGV[12] == '1'
local renew      = ARGV[13] == '1'
local sent_at    = ARGV[14]
local reassert   = ARGV[15] == '1'
local finished, claimed, done, reasserted, doubted = 0, 0, 0, 0, 0
local function owner(rid)
  local cl = redis.call('HGET', KEYS[4], rid)
  if not cl then return nil, 0 end
  local i = string.find(cl, ':', 1, true)
  return string.sub(cl, i + 1), tonumber(string.sub(cl, 1, i - 1))
end
-- doubt records that rid may have been sent twice, with the attempts'
-- times (unix ms, or a sent_at as written in the delivery JSON; '?' when
-- lost), and counts the recipient once.
local function doubt(rid, why, t1, t2)
  local cur = redis.call('HGET', KEYS[11], rid)
  local entry = why .. ' ' .. t1 .. ' ' .. t2
  if cur then entry = cur .. ';' .. entry
  else redis.call('HINCRBY', KEYS[2], 'possible_duplicate', 1) end
  redis.call('HSET', KEYS[11], rid, entry)
  doubted = 1
end
if frid > 0 then
  local code = fcode
  local c = getst(frid)
  local who = owner(frid)
  -- A retry of a cancelled campaign will never run: the recipient is cancelled.
  if code == ST.retrying and redis.call('HGET', KEYS[1], 'status') == 'cancelled' then code = ST.cancelled end
  -- A refusal of the run that paused the campaign for the relay, recorded
  -- after the pause (its send was in flight then): the relay refused it,
  -- not the mailbox, so it is held (pending) like the others of the run.
  if code == ST.failed and redis.call('HGET', KEYS[1], 'paused_reason') and redis.call('HEXISTS', KEYS[12], 'r:' .. frid) == 1 then code = ST.pending end
  if code == ST.sent then
    -- "sent" is a fact about the world: it wins even over a cancellation,
    -- and over a claim another worker took after ours expired.
    if (not isfinal(c)) or c == ST.cancelled then
      setst(frid, code)
      finished = 1
    elseif c == ST.sent and sent_at ~= '' then
      -- Already sent by another attempt (ours was taken over, or a
      -- failover lost our first record of it): both went out. Our own
      -- step run again (a lost reply) carries the same sent_at.
      local prev = '?'
      local ok, d = pcall(cjson.decode, redis.call('HGET', KEYS[5], frid) or '{}')
      if ok and type(d) == 'table' and type(d.sent_at) == 'string' then prev = d.sent_at end
      if prev ~= sent_at then doubt(frid, 'sent_twice', prev, sent_at) end
    end
  elseif (not isfinal(c)) and not (c == ST.sending and who and who ~= token) then
    -- Any other outcome is ours to record only while nobody else has
    -- taken the recipient over.
    setst(frid, code)
    finished = 1
  end
  if who == token then
    redis.call('HDEL', KEYS[4], frid)
    redis.call('HDEL', KEYS[10], frid)
  end
  if finished == 1 and delivery ~= '' then redis.call('HSET', KEYS[5], frid, delivery) end
  done = maybeDone(now_ms)
end
local st = redis.call('HMGET', KEYS[1], 'status', 'gen')
local status, gen = st[1] or '', tonumber(st[2]) or 0
local mine = false
if crid > 0 and renew then
  local c = getst(crid)
  local who, dl = owner(crid)
  if c == ST.sending then mine = (who == token) end
  if (not mine) and reassert and (c == ST.pending or c == ST.retrying or (c == ST.sending and (who == nil or who == 'steal' or dl < now))) then
    -- Our message is in flight but the claim is gone: taken back before
    -- the watchdog or another task hands the recipient to a second sender.
    setst(crid, ST.sending)
    if redis.call('HEXISTS', KEYS[10], crid) == 0 then redis.call('HSET', KEYS[10], crid, now_ms) end
    mine, reasserted = true, 1
  end
end
if crid > 0 and mine then
  -- Renewing a claim on a message still in flight: allowed whatever the
  -- campaign's state, or a pause would let the claim expire under a slow
  -- send and the watchdog hand the recipient to a second sender.
  redis.call('HSET', KEYS[4], crid, claim_dl .. ':' .. token)
  claimed = CLAIM_GRANTED
elseif crid > 0 then
  if status ~= 'sending' or (want_gen > 0 and want_gen ~= gen) then
    claimed = CLAIM_STOPPED
  else
    local c = getst(crid)
    local ok = (not renew) and (c == ST.pending or (c == ST.retrying and retrying))
    local who
    if c == ST.sending then
      local dl
      who, dl = owner(crid)
      -- 'steal': the watchdog took it from a dead worker and queued a
      -- task for it; whoever comes first takes it over.
      if who == token or ((not renew) and (dl < now or who == 'steal')) then ok = true else claimed = CLAIM_BUSY end
    end
    if ok then
      if c == ST.sending and who ~= token then
        -- Taken over from an attempt that never recorded its outcome: it
        -- may have reached the relay, and this one will too.
        doubt(crid, 'takeover', redis.call('HGET', KEYS[10], crid) or '?', now_ms)
      end
      if who ~= token then redis.call('HSET', KEYS[10], crid, now_ms) end
      setst(crid, ST.sending)
      redis.call('HSET', KEYS[4], crid, claim_dl .. ':' .. token)
      claimed = CLAIM_GRANTED
    elseif claimed == 0 then
      claimed = CLAIM_CURRENT + c
    end
  end
end
if lease ~= '' and not (renew and claimed ~= CLAIM_GRANTED) then
  if drop_lease then redis.call('ZREM', KEYS[8], lease)
  else redis.call('ZADD', KEYS[8], lease_dl, lease) end
end
return {finished, claimed, status, gen, done, reasserted, doubted}
`

// markScript moves recipients whose current code is in an allowed set to a
// new code, dropping the claim of one that was sending.
// KEYS: 1-12 as luaPrelude.
// ARGV: 1 now (ms), 2 new code, 3 allowed codes (string of digits), 4.. rids.
// Returns how many moved; errors BADTRANSITION, UNKNOWNSTATUS.
var markScript = redis.NewScript(luaPrelude + `
local new = tonumber(ARGV[2])
local n = 0
for i = 4, #ARGV do
  local rid = tonumber(ARGV[i])
  local c = getst(rid)
  if string.find(ARGV[3], tostring(c), 1, true) then
    if c == ST.sending then redis.call('HDEL', KEYS[4], rid) redis.call('HDEL', KEYS[10], rid) end
    setst(rid, new)
    n = n + 1
  end
end
maybeDone(ARGV[1])
return n
`)

// markRangeScript is markScript over the id range [from, to).
// KEYS: 1-12 as luaPrelude.
// ARGV: 1 now (ms), 2 new code, 3 allowed codes, 4 from, 5 to.
// Returns how many moved; errors BADTRANSITION, UNKNOWNSTATUS.
var markRangeScript = redis.NewScript(luaPrelude + `
local new = tonumber(ARGV[2])
local from, to = tonumber(ARGV[4]), tonumber(ARGV[5])
local n = 0
local s = redis.call('GETRANGE', KEYS[3], from, to - 1)
for i = 1, #s do
  local c = string.byte(s, i)
  if string.find(ARGV[3], tostring(c), 1, true) then
    local rid = from + i - 1
    if c == ST.sending then redis.call('HDEL', KEYS[4], rid) redis.call('HDEL', KEYS[10], rid) end
    setst(rid, new)
    n = n + 1
  end
end
maybeDone(ARGV[1])
return n
`)

// releaseScript hands claimed recipients back (a shutdown or a pause in
// the middle of a chunk): only those still claimed by token and sending.
// KEYS: 1-12 as luaPrelude.
// ARGV: 1 token, 2 code to return to, 3.. rids.
// Returns how many were handed back; errors BADTRANSITION, UNKNOWNSTATUS.
var releaseScript = redis.NewScript(luaPrelude + `
local n = 0
for i = 3, #ARGV do
  local rid = tonumber(ARGV[i])
  local cl = redis.call('HGET', KEYS[4], rid)
  if cl and string.sub(cl, string.find(cl, ':', 1, true) + 1) == ARGV[1] and getst(rid) == ST.sending then
    redis.call('HDEL', KEYS[4], rid)
    redis.call('HDEL', KEYS[10], rid)
    setst(rid, tonumber(ARGV[2]))
    n = n + 1
  end
end
return n
`)

// transitionScript changes a campaign's status.
// KEYS: 1-12 as luaPrelude (uses 1 state, 2 counts).
// ARGV: 1 now (ms), 2 allowed from-statuses (space separated), 3 new status,
// 4 bump gen (1/0), 5 field to stamp with now (” = none).
// Returns {changed, status, gen}: changed is 1, 0 when the campaign already
// was in the new status, -1 when its status is not among the allowed; error
// NOCAMPAIGN.
var transitionScript = redis.NewScript(luaPrelude + `
local st = redis.call('HMGET', KEYS[1], 'status', 'gen')
if st[1] == false then return redis.error_reply('NOCAMPAIGN') end
local status, gen = st[1], tonumber(st[2]) or 0
if status == ARGV[3] then return {0, status, gen} end
if not string.find(' ' .. ARGV[2] .. ' ', ' ' .. status .. ' ', 1, true) then
  return {-1, status, gen}
end
redis.call('HSET', KEYS[1], 'status', ARGV[3])
if ARGV[4] == '1' then gen = redis.call('HINCRBY', KEYS[1], 'gen', 1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[1]) end
if ARGV[3] == 'sending' then maybeDone(ARGV[1]) end
return {1, redis.call('HGET', KEYS[1], 'status'), gen}
`)

// stealScript takes over expired chunk leases and recipient claims so the
// watchdog can hand them to a live worker.
// KEYS: 1-12 as luaPrelude (uses 3 st, 4 claim, 8 chunks).
// ARGV: 1 now (ms), 2 new lease deadline (ms), 3 the calling process's token prefix (” = none), 4.. the tokens
// of that process that are still working: a claim under the prefix whose
// token is not among them is orphaned — its task ended without clearing it,
// because a failover lost the outcome written after it — and is taken over
// at once rather than when it expires.
// Returns {chunk members..., '|', rids...}; stolen recipients are handed
// over (status sending under a 'steal' claim any task may take).
var stealScript = redis.NewScript(luaPrelude + `
local now = tonumber(ARGV[1])
local out = {}
local exp = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now)
for _, m in ipairs(exp) do
  redis.call('ZADD', KEYS[8], ARGV[2], m)
  out[#out+1] = m
end
out[#out+1] = '|'
local live = {}
for i = 4, #ARGV do live[ARGV[i]] = true end
local pre = ARGV[3]
local cl = redis.call('HGETALL', KEYS[4])
for i = 1, #cl, 2 do
  local sep = string.find(cl[i+1], ':', 1, true)
  local dl = tonumber(string.sub(cl[i+1], 1, sep - 1))
  local who = string.sub(cl[i+1], sep + 1)
  local orphan = pre ~= '' and string.sub(who, 1, #pre) == pre and not live[who]
  if dl < now or orphan then
    local rid = tonumber(cl[i])
    if getst(rid) == ST.sending then
      -- Not released but handed over: the recipient stays "sending" under
      -- a 'steal' claim that any task may take, and that expires in its
      -- turn. So if the task the caller is about to queue never gets
      -- queued (the caller dies, Redis goes away), the next sweep steals
      -- it again instead of leaving it "retrying" with nothing to retry it.
      redis.call('HSET', KEYS[4], rid, ARGV[2] .. ':steal')
      out[#out+1] = cl[i]
    else
      redis.call('HDEL', KEYS[4], rid)
    end
  end
end
return out
`)
