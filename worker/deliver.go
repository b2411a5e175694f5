package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
)

// handleFanout opens a campaign's window of chunk tasks (see window): it
// hands out its first chunks, and each chunk that ends hands out the next.
// Running it again is harmless: it only fills what room the window has.
func (w *Worker) handleFanout(ctx context.Context, t *asynq.Task) error {
	var p tasks.FanoutPayload
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	st, err := w.store.State(ctx, p.CampaignID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status != notice.CampaignSending || st.Gen != p.Gen {
		return nil // paused, cancelled, or superseded by a newer generation
	}
	c, err := w.campaign(ctx, p.CampaignID)
	if err != nil {
		return err
	}
	n, err := w.topUp(ctx, c)
	if err != nil {
		return fmt.Errorf("fan-out of %s: %w", p.CampaignID, err)
	}
	w.log.Info("fan-out: window open", "campaign", p.CampaignID, "gen", p.Gen, "chunks", n, "window", w.window(c))
	return nil
}

// handleChunk delivers the pending recipients of one id range, one Redis
// round trip per message (finish the previous recipient and claim the next in
// one script), over one pooled SMTP connection at a time. The loop itself is
// chunkRun's.
func (w *Worker) handleChunk(ctx context.Context, t *asynq.Task) (err error) {
	var p tasks.ChunkPayload
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	// asynqmon shows a chunk task's error as the task's: it says what
	// became of the chunk's recipients before it, not only the error.
	var tl tally
	defer func() {
		if err != nil {
			err = tl.wrap(p, err)
		}
	}()
	c, err := w.campaign(ctx, p.CampaignID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	now := w.cfg.ClockNow()
	ch, err := w.store.LoadRecipients(ctx, p.CampaignID, p.From, p.To, now.Add(w.cfg.ClaimTTL))
	if err != nil {
		return err
	}
	run := &chunkRun{w: w, p: p, c: c, bg: context.WithoutCancel(ctx), tl: &tl}
	if ch.State.Status != notice.CampaignSending || ch.State.Gen != p.Gen {
		run.dropLease()
		if ch.State.Status == notice.CampaignSending {
			// Superseded by a resume: its place in the window is the new generation's.
			_, err := w.topUp(run.bg, c)
			return err
		}
		return nil
	}
	todo, err := w.unsuppressed(ctx, c, p, ch.Recipients)
	if err != nil {
		return err
	}
	run.token = w.begin()
	defer w.end(run.token)
	return run.deliver(ctx, todo)
}

// unsuppressed returns the pending recipients of a chunk whose address is
// not suppressed, and marks the others suppressed.
func (w *Worker) unsuppressed(ctx context.Context, c *notice.Campaign, p tasks.ChunkPayload, rs []notice.Recipient) ([]*notice.Recipient, error) {
	todo := make([]*notice.Recipient, 0, len(rs))
	addrs := make([]string, 0, len(rs))
	for i := range rs {
		if r := &rs[i]; r.Status == notice.StatusPending {
			todo = append(todo, r)
			addrs = append(addrs, r.Email)
		}
	}
	sup, err := w.store.Suppressed(ctx, addrs)
	if err != nil || len(sup) == 0 {
		return todo, err
	}
	var ids []int64
	kept := todo[:0]
	for _, r := range todo {
		if sup[r.Email] != nil {
			ids = append(ids, r.ID)
		} else {
			kept = append(kept, r)
		}
	}
	if _, err := w.store.Mark(ctx, p.CampaignID, ids, []notice.Status{notice.StatusPending}, notice.StatusSuppressed); err != nil {
		return nil, err
	}
	metrics.CountMessages(c.MetricLabel(), "suppressed", float64(len(ids)))
	for _, id := range ids {
		w.emitRecipient(p.CampaignID, id, notice.StatusSuppressed, nil, 0)
	}
	return kept, nil
}

// chunkRun is one chunk task delivering its recipients. Exactly-once rests
// on the order of its writes, which deliver reads top to bottom:
//
//  1. claim: one step records the previous recipient's outcome (prev) and
//     claims the next; nothing is sent without a claim granted for this
//     generation, and a recipient already sent is never granted;
//  2. send: the claim is renewed while SMTP runs and checked right before
//     DATA; the outcome becomes prev — held in memory only until the next
//     step writes it, never longer than a fraction of CLAIM_TTL;
//  3. every way out writes prev first: the next claim, handBack (a stop or
//     a rate wait, with the rest of the chunk under a lease), or finish
//     (which drops the chunk's lease). An error writing it leaves the claim
//     to expire and the watchdog to retry the recipient.
//
// Writes that follow an SMTP acceptance use bg, which a shutdown does not
// cancel.
type chunkRun struct {
	w     *Worker
	p     tasks.ChunkPayload
	c     *notice.Campaign
	token string
	bg    context.Context
	prev  store.Step // the finish of the previous recipient, folded into the next step
	tl    *tally     // what became of the chunk's recipients, for the task's error
}

func (r *chunkRun) deliver(ctx context.Context, todo []*notice.Recipient) error {
	for i, rc := range todo {
		if r.w.stopped() || ctx.Err() != nil {
			return r.handBack(rc.ID, time.Time{})
		}
		// prev's outcome is held while we wait in place: never long enough
		// for its claim to expire, even with a short CLAIM_TTL.
		if d := r.w.turn(ctx, r.c, inlineWait, min(inlineTotal, r.w.cfg.ClaimTTL/4)); d > 0 {
			// Not this message's turn for more than a moment: give the slot
			// back, and come back when the rate allows.
			return r.handBack(rc.ID, time.Now().Add(d))
		}
		res, claimedAt, err := r.claim(rc.ID)
		if err != nil {
			// Redis stayed away: prev's claim expires and the watchdog
			// retries it, the one case where a sent message may go twice.
			return err
		}
		if res.Stopped {
			return r.stop(res, len(todo)-i)
		}
		if !res.Claimed {
			continue // sent, or being sent, by someone else
		}
		if handed := r.send(rc, claimedAt, todo[i+1:]); handed {
			break // the rest went on in another task while this reply was awaited
		}
	}
	return r.finish()
}

// step is a Step carrying prev's outcome under this run's token and lease.
func (r *chunkRun) step() store.Step {
	s := r.prev
	s.Token, s.Lease, s.LeaseTTL = r.token, r.p.From, r.w.cfg.ClaimTTL
	return s
}

// write runs s (which carries prev) and, once it is written, forgets prev.
func (r *chunkRun) write(s store.Step) (store.StepResult, error) {
	res, err := r.w.record(r.bg, r.p.CampaignID, s)
	if err != nil {
		return res, err
	}
	r.w.finished(r.p.CampaignID, r.prev, res)
	r.prev = store.Step{}
	return res, nil
}

// claim writes prev's outcome and claims recipient rid in one step. It
// returns when the claim was asked for: it lives at least ClaimTTL from
// then.
func (r *chunkRun) claim(rid int64) (store.StepResult, time.Time, error) {
	s := r.step()
	s.ClaimID, s.ClaimTTL, s.Gen = rid, r.w.cfg.ClaimTTL, r.p.Gen
	claimedAt := time.Now()
	res, err := r.write(s)
	return res, claimedAt, err
}

// send delivers to a claimed recipient; its outcome becomes prev. It
// reports whether the rest of the chunk was handed to another task while
// a slow reply was awaited.
func (r *chunkRun) send(rc *notice.Recipient, claimedAt time.Time, rest []*notice.Recipient) (handed bool) {
	cl := r.w.hold(r.p.CampaignID, r.token, rc.ID, r.p.From, claimedAt)
	h := r.w.handOnSlow(r.bg, cl, r.p, rest)
	r.prev = r.w.attempt(r.bg, r.c, rc, true, cl)
	r.tl.add(r.prev)
	cl.release()
	return h.Load()
}

// stop ends a run its campaign stopped (paused or cancelled), leaving the
// rest pending for the next generation.
func (r *chunkRun) stop(res store.StepResult, left int) error {
	r.w.log.Info("chunk stopped", "campaign", r.p.CampaignID, "status", res.Campaign, "left", left)
	r.dropLease()
	if res.Campaign == notice.CampaignSending {
		_, err := r.w.topUp(r.bg, r.c) // resumed meanwhile: the new generation's turn
		return err
	}
	return nil
}

// handBack records the last outcome and hands the rest of the chunk, from
// id on, to a new task that runs at wake (zero: at once): another worker
// after a stop, or any worker once the rate limit allows. Nothing from id
// on is claimed yet. Meanwhile the rest holds the chunk's lease (under
// id): the watchdog neither takes the campaign for stalled nor steals
// the rest, the window still counts it, and should the new task be lost
// the lease runs out and the watchdog hands the rest out again.
func (r *chunkRun) handBack(id int64, wake time.Time) error {
	ttl := r.w.queuedTTL()
	if r.w.wakesLocally(wake) {
		ttl = r.w.cfg.ClaimTTL // on a timer here: recovered soon if we die
	}
	s := r.step()
	s.Lease, s.LeaseTTL = id, max(0, time.Until(wake))+ttl
	if _, err := r.write(s); err != nil {
		return err
	}
	if id != r.p.From {
		r.dropLease()
	}
	rest := r.p
	rest.From = id
	return r.w.later(r.bg, rest, wake)
}

// finish records the last outcome and drops the chunk's lease; the
// chunk's place in the window goes to the campaign's next one, queued
// behind what other campaigns have queued meanwhile.
func (r *chunkRun) finish() error {
	s := r.step()
	s.DropLease = true
	if _, err := r.write(s); err != nil {
		return err
	}
	_, err := r.w.topUp(r.bg, r.c)
	return err
}

func (r *chunkRun) dropLease() { r.w.store.DropChunkLease(r.bg, r.p.CampaignID, r.p.From) }

// errRecord marks a failure to record an outcome in Redis.
var errRecord = errors.New("record outcome")

// record runs a Step, retrying while Redis is away (a restart, a failover):
// a Step may carry the outcome of an SMTP transaction that already
// happened, and dropping it would have the recipient sent again. Steps are
// idempotent for their token, so a retry after a lost reply is harmless.
//
// With REDIS_WAIT_REPLICAS, a step the replicas did not acknowledge is run
// again (written again, WAIT again) until RecordTimeout; then a claim in it
// is handed back unused (the caller sees an error and sends nothing), and
// an outcome, on the primary but not known to be on a replica, is kept:
// logged and counted (oshirase_redis_unreplicated_writes_total).
func (w *Worker) record(ctx context.Context, cid string, s store.Step) (store.StepResult, error) {
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(w.cfg.RecordTimeout)
	for {
		res, err := w.store.Do(ctx, cid, s)
		if err == nil {
			w.doubted(cid, res)
			return res, nil
		}
		unreplicated := errors.Is(err, store.ErrUnreplicated)
		if time.Now().After(deadline) || ctx.Err() != nil {
			if !unreplicated {
				return res, fmt.Errorf("%w: %w", errRecord, err)
			}
			w.doubted(cid, res)
			if s.ClaimID > 0 && !s.Renew && res.Claimed {
				back := notice.StatusPending
				if s.ClaimRetrying {
					back = notice.StatusRetrying
				}
				if rerr := w.store.Release(context.WithoutCancel(ctx), cid, s.Token, back, s.ClaimID); rerr != nil {
					w.log.Warn("hand back an unreplicated claim", "campaign", cid, "recipient", s.ClaimID, "err", rerr)
				}
				res.Claimed = false
				return res, fmt.Errorf("%w: %w", errRecord, err)
			}
			w.log.Warn("outcome recorded on the Redis primary but not acknowledged by REDIS_WAIT_REPLICAS replicas; kept",
				"campaign", cid, "recipient", s.FinishID, "err", err)
			return res, nil
		}
		// Once per interval: during a failover every handler retries every
		// write, and the refusals themselves are logged by store.RefusalHook.
		w.warnEvery("record", 10*time.Second, "record outcome: retrying (logged once per 10 s)", "campaign", cid, "err", err)
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// doubted counts a possible duplicate a step found.
func (w *Worker) doubted(cid string, res store.StepResult) {
	if res.Doubted {
		metrics.PossibleDuplicates.Inc()
		w.log.Warn("possible duplicate: a recipient is sent again after an attempt whose outcome was lost", "campaign", cid)
	}
}

// hold keeps a recipient's claim (and the chunk's lease, when lease > 0)
// alive while an SMTP transaction runs, however slow the server: a claim
// that expired mid-send would let the watchdog hand the recipient to another
// worker. at is when the write that took the claim began. The claim's check
// is the mailer's Guard; release stops the renewals (none runs after it
// returns).
func (w *Worker) hold(cid, token string, rid, lease int64, at time.Time) *claim {
	cl := &claim{w: w, cid: cid, token: token, rid: rid, lease: lease}
	cl.written(at)
	every := w.renewEvery() // a lost claim is re-asserted within seconds
	cl.timer = time.AfterFunc(every, func() {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.stopped || cl.lost {
			return
		}
		if err := cl.renew(); err != nil {
			w.warnEvery("renew", 10*time.Second, "renew claim (logged once per 10 s)", "campaign", cid, "recipient", rid, "err", err)
		}
		cl.timer.Reset(every)
	})
	return cl
}

// claim is a recipient claim held while its message is sent. It knows,
// by this process's clocks, until when the claim is surely still ours: the
// last successful write plus ClaimTTL, less a third for safety (clock
// drift between hosts, the time the write took). Within that, check is
// free; past it (the process was frozen — a VM pause, SIGSTOP — or Redis
// was slow), check asks Redis whether the claim is still ours and renews
// it if so: one round trip, only then.
type claim struct {
	w          *Worker
	cid, token string
	rid, lease int64
	onSlow     func() // the mailer's Slow: the reply to the end of DATA is late

	mu      sync.Mutex
	sure    time.Time // with its monotonic reading
	lost    bool      // someone else has the recipient now
	stopped bool
	timer   *time.Timer
}

// errClaimLost stops a transaction whose claim another worker has taken.
var errClaimLost = errors.New("the claim on the recipient was taken over by another worker")

// written records a successful write of the claim begun at at. Caller
// holds mu (or owns cl alone).
func (cl *claim) written(at time.Time) {
	cl.sure = at.Add(cl.w.cfg.ClaimTTL - cl.w.cfg.ClaimTTL/3)
}

// renew extends the claim if it is still ours, else marks it lost. Caller
// holds mu.
func (cl *claim) renew() error {
	at := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cl.w.cfg.ClaimTTL/3)
	defer cancel()
	// Reassert: a claim that vanished (a failover lost the write) or
	// expired while nobody else took the recipient is taken back; one that
	// another worker holds, or a recipient already sent, is lost to us.
	res, err := cl.w.store.Do(ctx, cl.cid, store.Step{Token: cl.token, ClaimID: cl.rid, ClaimTTL: cl.w.cfg.ClaimTTL, Renew: true, Reassert: true,
		Lease: cl.lease, LeaseTTL: cl.w.cfg.ClaimTTL})
	if err != nil {
		return err
	}
	if !res.Claimed {
		cl.lost = true
		return nil
	}
	if res.Reasserted {
		cl.w.log.Warn("claim found gone while its message is in flight (a failover lost it); taken back", "campaign", cl.cid, "recipient", cl.rid)
	}
	cl.written(at)
	return nil
}

// check is the mailer's Guard, called right before MAIL FROM and right
// before the end of DATA: nil while the claim is ours. Both clocks must
// agree that it is surely alive: the monotonic one (a frozen process's
// jumps on waking) and the wall clock (which a paused VM's catches up on
// while its monotonic clock may not).
func (cl *claim) check() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.lost {
		return errClaimLost
	}
	now := time.Now()
	if now.Before(cl.sure) && now.Round(0).Before(cl.sure.Round(0)) {
		return nil
	}
	if err := cl.renew(); err != nil {
		// Unsure is no: the claim expires and the recipient is retried.
		return fmt.Errorf("cannot confirm the claim on the recipient: %w", err)
	}
	if cl.lost {
		return errClaimLost
	}
	return nil
}

func (cl *claim) release() {
	cl.mu.Lock()
	cl.stopped = true
	cl.timer.Stop()
	cl.mu.Unlock()
}

// handOnSlow arranges that, if the server is slow to answer the end of
// DATA of cl's message (past SMTP_TIMEOUT; it gets SMTP_DATA_TIMEOUT), the
// rest of the chunk — rest, not yet claimed — is handed to a new chunk task
// at once, so the other recipients need not wait for that reply; this
// handler waits for it (cl's renewals keep the claim and the chunk's lease)
// and then records it. The returned flag says the hand-over happened; the
// mailer returns only after the hand-over has.
func (w *Worker) handOnSlow(ctx context.Context, cl *claim, p tasks.ChunkPayload, rest []*notice.Recipient) *atomic.Bool {
	handed := new(atomic.Bool)
	if len(rest) == 0 {
		return handed
	}
	cl.onSlow = func() {
		rp := p
		rp.From = rest[0].ID
		if err := tasks.Chunk(ctx, w.queue, rp, "d"+strconv.FormatInt(w.cfg.ClockNow().UnixNano(), 36)); err != nil {
			w.log.Warn("hand the rest of a chunk on while a reply is slow", "campaign", p.CampaignID, "err", err)
			return
		}
		handed.Store(true)
		w.log.Info("slow reply to the end of DATA: rest of the chunk handed on", "campaign", p.CampaignID,
			"recipient", cl.rid, "left", len(rest))
	}
	return handed
}

// finished logs and counts what a step recorded.
func (w *Worker) finished(cid string, s store.Step, res store.StepResult) {
	if s.FinishID == 0 {
		return
	}
	if res.Finished {
		w.emitRecipient(cid, s.FinishID, s.Finish, s.Delivery, 0)
	}
	if res.Done {
		w.events.Emit(webhooks.Event{Type: webhooks.CampaignDone, Data: webhooks.Data{CampaignID: cid, Status: string(notice.CampaignDone)}})
	}
	if res.Done {
		w.log.Info("campaign done", "campaign", cid, "actor", "system")
	}
}

// recipientEvents names the status webhook event of a final status.
var recipientEvents = map[notice.Status]string{
	notice.StatusSent: webhooks.RecipientSent, notice.StatusFailed: webhooks.RecipientFailed,
	notice.StatusSuppressed: webhooks.RecipientSuppressed,
}

// emitRecipient hands a recipient's new status to the status webhooks: an
// in-process hand-over, no Redis round trip (webhooks.Emitter batches).
func (w *Worker) emitRecipient(cid string, rid int64, st notice.Status, d *notice.Delivery, resend int) {
	typ := recipientEvents[st]
	if resend > 0 {
		typ = webhooks.RecipientResent
	}
	if typ == "" {
		return
	}
	data := webhooks.Data{CampaignID: cid, RecipientID: rid, Status: string(st), Resend: resend}
	if d != nil {
		data.SMTPCode, data.EnhancedCode, data.MessageID = d.LastCode, d.Enhanced, d.MessageID
		data.SentAt, data.FirstTryAt, data.Attempts = d.SentAt, d.FirstTryAt, d.Attempts
	}
	w.events.Emit(webhooks.Event{Type: typ, Data: data})
}

// attempt sends to r once and returns the Step that records the outcome.
// With schedule (the bulk path), a transient failure also enqueues the
// recipient's retry task, before the step records it: a crash between the
// two leaves a claim the watchdog recovers, never a recipient nobody retries.
//
// cl (nil for none) is the claim the message is sent under: if it turns out
// to have been taken over, nothing is sent and the empty Step records
// nothing — the recipient is the other worker's.
func (w *Worker) attempt(ctx context.Context, c *notice.Campaign, r *notice.Recipient, schedule bool, cl *claim) store.Step {
	d := r.Delivery
	out := w.send(ctx, c, r, r.Email, 0, &d, cl)
	if out != nil && errors.Is(out, mailer.ErrAborted) {
		return store.Step{}
	}
	step := store.Step{FinishID: r.ID, Delivery: &d}
	if out != nil && w.relayHold(ctx, c, r.ID, out) {
		// The relay refuses everything, not this recipient: back to
		// pending, the reply kept in its history; the campaign is paused
		// and resume sends it.
		step.Finish = notice.StatusPending
		metrics.CountMessages(c.MetricLabel(), "held", 1)
		return step
	}
	switch {
	case out == nil:
		step.Finish = notice.StatusSent
		metrics.CountMessages(c.MetricLabel(), "sent", 1)
	case out.Temporary && w.cfg.ClockNow().Sub(*d.FirstTryAt) < w.cfg.RetryMaxAge:
		step.Finish = notice.StatusRetrying
		metrics.CountMessages(c.MetricLabel(), "retried", 1)
		if !schedule {
			break
		}
		delay := w.backoff(d.Attempts)
		id := fmt.Sprintf("retry:%s:%d:%d", c.ID, r.ID, d.Attempts)
		p := tasks.DeliverPayload{CampaignID: c.ID, RecipientID: r.ID, Attempt: d.Attempts, LastReply: notice.MaskAddresses(d.LastError)}
		if err := tasks.Deliver(ctx, w.queue, p, tasks.QueueRecipients, id, delay); err != nil {
			// Leave the claim to expire: the watchdog turns it into a retry.
			w.log.Error("schedule retry", "campaign", c.ID, "recipient", r.ID, "err", err)
			return store.Step{}
		}
	default:
		step.Finish = notice.StatusFailed
		metrics.CountMessages(c.MetricLabel(), "failed", 1)
		w.permanent(ctx, c, r.ID, r.Email, out)
		if !schedule {
			break // a retry task: it is archived itself, with the reply
		}
		// A task of its own, archived at once with the SMTP reply as its
		// error, so operators see permanent failures in asynqmon.
		id := fmt.Sprintf("failed:%s:%d", c.ID, r.ID)
		if err := tasks.Deliver(ctx, w.queue, tasks.DeliverPayload{CampaignID: c.ID, RecipientID: r.ID, Attempt: d.Attempts}, tasks.QueueRecipients, id, 0); err != nil {
			w.log.Warn("report permanent failure", "campaign", c.ID, "recipient", r.ID, "err", err)
		}
	}
	return step
}

// permanent handles a permanent failure: a non-existent mailbox (5.1.x) puts
// the address on the suppression list.
func (w *Worker) permanent(ctx context.Context, c *notice.Campaign, rid int64, addr string, e *mailer.Error) {
	if e == nil || !strings.HasPrefix(e.Enhanced, "5.1.") {
		return
	}
	err := w.store.Suppress(ctx, store.Suppression{
		Email: addr, Reason: "bounced: " + e.Text, Code: e.Code, Enhanced: e.Enhanced, CampaignID: c.ID,
	})
	if err != nil {
		w.log.Error("suppress address", "campaign", c.ID, "recipient", rid, "err", err)
	}
}

// send renders and sends one notice to addr and records the attempt in d.
// It returns nil on success or the classified failure.
func (w *Worker) send(ctx context.Context, c *notice.Campaign, r *notice.Recipient, addr string, resend int, d *notice.Delivery, cl *claim) *mailer.Error {
	now := w.cfg.ClockNow().UTC()
	if d.FirstTryAt == nil {
		d.FirstTryAt = &now
	}
	d.Attempts++
	a := notice.Attempt{At: now, Resend: resend}
	if addr != r.Email {
		a.To = addr
	}
	msgID := w.MessageID(c, r.ID, resend)
	acc, err := w.deliver(ctx, c, r, addr, msgID, resend, cl)
	if errors.Is(err, mailer.ErrAborted) {
		w.log.Warn("not sent: the claim on the recipient was lost (this process was frozen or cut off longer than CLAIM_TTL)",
			"campaign", c.ID, "recipient", r.ID, "err", err)
		return &mailer.Error{Text: err.Error(), Stage: "guard", Err: err}
	}
	if err == nil {
		// The server's own words when it took the message (often its queue
		// id): the proof of handing over, kept with the attempt.
		a.OK, a.Code, a.Enhanced, a.Text = true, 250, acc.Enhanced, acc.Text
		d.MessageID, d.SentAt, d.LastError, d.LastCode, d.Enhanced = msgID, &now, "", 250, acc.Enhanced
		d.History = append(d.History, a)
		metrics.ObserveReply(250, acc.Enhanced)
		return nil
	}
	e := mailer.Classify(err)
	a.Code, a.Enhanced, a.Text = e.Code, e.Enhanced, e.Text
	d.LastError, d.LastCode, d.Enhanced = e.Error(), e.Code, e.Enhanced
	d.History = append(d.History, a)
	metrics.ObserveReply(e.Code, e.Enhanced)
	w.log.Warn("send failed", "campaign", c.ID, "recipient", r.ID, "to", notice.MaskEmail(addr),
		"code", e.Code, "enhanced", e.Enhanced, "temporary", e.Temporary, "err", notice.MaskAddresses(e.Error()))
	return e
}

// deliver renders the notice and hands it to SMTP.
func (w *Worker) deliver(ctx context.Context, c *notice.Campaign, r *notice.Recipient, addr, msgID string, resend int, cl *claim) (mailer.Accepted, error) {
	locale := r.EffectiveLocale(c.DefaultLocale)
	var out *templates.Rendered
	var err error
	if c.StartedAt != nil {
		// Dated by the campaign's start, every notice of the campaign in
		// this locale differs only by recipient: render from a Prepared.
		var p *templates.Prepared
		if p, err = w.prepared(c, locale, *c.StartedAt); err == nil {
			out, err = p.Render(*r)
		}
	} else {
		out, err = w.templates.Render(c.Template, templates.Input{
			Locale: locale, Data: c.Data, Recipient: *r, Paragraphs: c.Paragraphs, Date: w.cfg.ClockNow().In(c.Zone()),
		})
	}
	if err != nil {
		// A template that renders for the sample but not for this recipient
		// is our bug, not the recipient's: permanent, with the reason.
		return mailer.Accepted{}, &mailer.Error{Code: 0, Text: "render: " + err.Error(), Temporary: false, Err: err}
	}
	start := time.Now()
	m := &mailer.Message{
		From: c.FromFor(locale), ReplyTo: c.ReplyTo, To: addr, ToName: r.Name,
		Subject: out.Subject, Text: out.Text, HTML: out.HTML, MessageID: msgID, Charset: c.Charset,
	}
	if w.cfg.Bounce != nil {
		// A resend is its own delivery: its bounce names it, not the first.
		rp, tok, err := w.cfg.Bounce.ReturnPath(bounce.Ref{Campaign: c.ID, Recipient: r.ID, Delivery: resend})
		if err != nil {
			return mailer.Accepted{}, &mailer.Error{Text: "return path: " + err.Error(), Stage: mailer.StageBuild, Err: err}
		}
		m.ReturnPath, m.Token = rp, tok
	}
	if cl != nil {
		m.Guard, m.Slow = cl.check, cl.onSlow
	}
	acc, err := w.sender.Deliver(ctx, m)
	metrics.SendSeconds.Observe(time.Since(start).Seconds())
	return acc, err
}

// limitFor expresses a fractional rate per second as a GCRA limit.
// jitterAllowance is how late after its turn a message may reach the SMTP
// server without the rate limit's promise being broken.
const jitterAllowance = 50 * time.Millisecond

func limitFor(rate float64, burst int) redis_rate.Limit {
	if burst <= 0 {
		burst = max(1, int(rate/10))
	}
	// The limit is a promise about what the relay sees: at most rate × T +
	// burst messages in any window T. A message reaches it a little after
	// its turn (rendering, the MAIL/RCPT round trip, a busy CPU), so turns
	// taken apart can arrive together. The messages of that jitter are kept
	// back from the burst.
	burst = max(1, burst-int(math.Ceil(rate*jitterAllowance.Seconds())))
	// redis_rate wants a whole number of messages per period: n per 10^k s
	// with the fewest decimals, so every rate written with up to 9 decimals
	// (notice.MinRate has 3) is exact; beyond, within a part in 10^9.
	period, n := time.Second, rate
	for k := 0; k < 9 && math.Abs(n-math.Round(n)) > 1e-9*n; k++ {
		period, n = period*10, n*10
	}
	return redis_rate.Limit{Rate: max(1, int(math.Round(n))), Burst: burst, Period: period}
}

// tally counts what became of a chunk's recipients, for its task's error.
type tally struct {
	sent, retrying, failed, held int
	replies                      map[string]int // "550 5.1.1" → recipients
}

func (t *tally) add(s store.Step) {
	switch s.Finish {
	case notice.StatusSent:
		t.sent++
		return
	case notice.StatusRetrying:
		t.retrying++
	case notice.StatusFailed:
		t.failed++
	case notice.StatusPending:
		t.held++
	default:
		return
	}
	if s.Delivery == nil {
		return
	}
	reply := "no reply"
	if d := s.Delivery; d.LastCode > 0 {
		reply = strings.TrimSpace(strconv.Itoa(d.LastCode) + " " + d.Enhanced)
	}
	if t.replies == nil {
		t.replies = map[string]int{}
	}
	t.replies[reply]++
}

// wrap says, before err, what the chunk did with its recipients: an
// operator reading the task in asynqmon sees recipients, not only a task.
func (t *tally) wrap(p tasks.ChunkPayload, err error) error {
	sum := fmt.Sprintf("chunk of recipients %d–%d: %d sent, %d failed, %d retrying", p.From, p.To-1, t.sent, t.failed, t.retrying)
	if t.held > 0 {
		sum += fmt.Sprintf(", %d held for the relay", t.held)
	}
	if len(t.replies) > 0 {
		keys := make([]string, 0, len(t.replies))
		for k := range t.replies {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s ×%d", k, t.replies[k])
		}
		sum += " (" + strings.Join(parts, ", ") + ")"
	}
	return fmt.Errorf("%s; then the task stopped: %w", sum, err)
}
