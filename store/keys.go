package store

import "strconv"

// Every Redis key oshirase uses is named here. Keys of one campaign share the
// hash tag {c:ID} so that they live in one Redis Cluster slot and the Lua
// scripts below, which touch several of them, stay legal in a cluster.
//
// The same map, with the state machine and the package map, is docs/design.md
// (TestDesignDocNamesEveryKey keeps them in step).
//
//	<p>:campaigns            ZSET  campaign id → created (unix ms)
//	<p>:active               SET   campaigns in the sending state (watchdog)
//	<p>:{c:ID}:def           STRING campaign definition (JSON, immutable after create)
//	<p>:{c:ID}:state         HASH  status, gen, seq, started_at, finished_at, fanout:<gen> cursors (next chunk to hand out)
//	<p>:{c:ID}:counts        HASH  total and one counter per recipient status
//	<p>:{c:ID}:rcpt          HASH  recipient id → profile (JSON)
//	<p>:{c:ID}:st            STRING one byte per recipient id: its status (0 = pending)
//	<p>:{c:ID}:dlv           HASH  recipient id → delivery record (JSON), once attempted
//	<p>:{c:ID}:rs            HASH  recipient id → resends (JSON list)
//	<p>:{c:ID}:emails        HASH  lower-cased address → recipient id (no duplicates)
//	<p>:{c:ID}:sx            ZSET  support search index: kind + folded value + "\x00" + recipient id, scores 0 (search.go)
//	<p>:{c:ID}:claim         HASH  recipient id → "deadline_ms:token" while a worker sends to it
//	<p>:{c:ID}:chunks        ZSET  chunk start id → lease deadline (ms) while a chunk is handed out (queued, running, waiting for its rate)
//	<p>:{c:ID}:att           HASH  recipient id → start (unix ms) of the attempt in flight
//	                               (set with a claim, removed with its outcome; a
//	                               steal keeps it: the evidence of an unknown outcome)
//	<p>:{c:ID}:doubt         HASH  recipient id → "reason t1 t2;…": possible duplicates
//	                               and the attempts involved (kept after a purge: no PII)
//	<p>:{c:ID}:bnc           HASH  recipient id → what came back to its return path (JSON list, store/bounce.go)
//	<p>:{c:ID}:raw           LIST  the raw messages that came back (JSON, newest last, capped; purged)
//	<p>:{c:ID}:rej           LIST  upload rejections (JSON), the first 1,000 of each upload
//	<p>:{c:ID}:rejn          HASH  field "\t" error → rejections counted (bounded: at most 200 kinds, then "other")
//	<p>:{c:ID}:rslock:R:N    STRING while resend N of recipient R is being sent (expires)
//	<p>:{c:ID}:relay         HASH  the current run of one policy refusal: sig, sent, n, r:<rid> (store/relay.go)
//	<p>:{c:ID}:reported      HASH  recipient id → the attempt whose permanent failure asynq archived
//	<p>:{c:ID}:watch         HASH  done, progress_at, stalled_at: the watchdog's view (store/progress.go; expires)
//	<p>:{c:ID}:samples       ZSET  "ms:done" → ms: recipients done over the last minutes, for the ETA (expires)
//	<p>:relaypaused          SET   campaigns the system paused because the relay refuses everything
//	<p>:{c:ID}:out           ZSET  task id of a resend or single notice queued or being sent → deadline (ms) (purge waits)
//	<p>:idx:email            HASH  lower-cased address → "cid:rid cid:rid ..." (support look-up)
//	<p>:suppressed           HASH  lower-cased address → suppression record (JSON)
//	<p>:audit                STREAM append-only audit log
//	<p>:unmatched            LIST  returned messages tied to no notice (JSON, newest 1,000, expire 30 days)
//	<p>:session:, <p>:flash:  STRING console sessions and their one-time page (support.go)
//	<p>:webhooks, <p>:webhooks:v  HASH, STRING  webhook endpoints and their change counter (webhooks.go)
//	<p>:wh:<id>:log          STREAM an endpoint's delivery log, the last 1,000 attempts (webhooklog.go)
//	<p>:idem:<sha256>        HASH  an Idempotency-Key's claim and first answer (idempotency.go)
//	<p>:{acct}:…             accounts: records, key and OIDC indexes, enabled admins (accounts.go)
//	<p>:epoch                STRING start-up marker (durability.go); <p>:epoch:{N}, one per Cluster master
type keys struct{ p string }

func (k keys) campaigns() string   { return k.p + ":campaigns" }
func (k keys) active() string      { return k.p + ":active" }
func (k keys) emailIndex() string  { return k.p + ":idx:email" }
func (k keys) suppressed() string  { return k.p + ":suppressed" }
func (k keys) audit() string       { return k.p + ":audit" }
func (k keys) unmatched() string   { return k.p + ":unmatched" }
func (k keys) rateGlobal() string  { return k.p + ":rate:global" }
func (k keys) relayPaused() string { return k.p + ":relaypaused" }
func (k keys) rateCampaign(id string) string {
	return k.p + ":rate:c:" + id
}

// campaign returns the keys of one campaign, in the order the Lua scripts
// expect them.
func (k keys) campaign(id string) ckeys {
	b := k.p + ":{c:" + id + "}:"
	return ckeys{
		def: b + "def", state: b + "state", counts: b + "counts", rcpt: b + "rcpt",
		st: b + "st", dlv: b + "dlv", rs: b + "rs", emails: b + "emails", claim: b + "claim",
		chunks: b + "chunks", rej: b + "rej", rejCounts: b + "rejn", out: b + "out", relay: b + "relay", reported: b + "reported",
		att: b + "att", doubt: b + "doubt", bnc: b + "bnc", raw: b + "raw", sx: b + "sx",
		watch: b + "watch", samples: b + "samples",
	}
}

type ckeys struct {
	def, state, counts, rcpt, st, dlv, rs, emails, claim, chunks, rej, rejCounts, out string
	relay, reported, att, doubt, bnc, raw, sx                                         string
	watch, samples                                                                    string
}

// scriptKeys lists the keys scripts get as KEYS[1..12].
func (c ckeys) scriptKeys() []string {
	return []string{c.state, c.counts, c.st, c.claim, c.dlv, c.rcpt, c.emails, c.chunks, c.rs, c.att, c.doubt, c.relay}
}

func (c ckeys) everything() []string {
	return []string{c.def, c.state, c.counts, c.rcpt, c.st, c.dlv, c.rs, c.emails, c.claim, c.chunks, c.rej, c.rejCounts, c.out, c.relay, c.reported, c.att, c.doubt, c.bnc, c.raw, c.sx, c.watch, c.samples}
}

// resendLock is the short-lived lock of one resend while it is being sent.
func (c ckeys) resendLock(rid int64, n int) string {
	return c.def[:len(c.def)-len("def")] + "rslock:" + itoa(rid) + ":" + strconv.Itoa(n)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// RateKey is the rate limiter's key: global for cid "", else the campaign's.
func (s *Store) RateKey(cid string) string {
	if cid == "" {
		return s.k.rateGlobal()
	}
	return s.k.rateCampaign(cid)
}
