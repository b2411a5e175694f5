package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// Watch recovers work a crashed worker left behind, every sweepEvery until
// ctx ends. asynq recovers a dead worker's tasks too, but only one to two
// minutes later; our own leases let a campaign carry on within ClaimTTL.
// Several workers may run it: Steal hands each expired item to one of them.
func (w *Worker) Watch(ctx context.Context) {
	every := w.sweepEvery()
	t := time.NewTicker(every)
	defer t.Stop()
	forget := time.NewTicker(time.Minute)
	defer forget.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("watchdog sweep", "err", err)
			}
		case <-forget.C:
			if err := w.ForgetPurged(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("watchdog: forget purged campaigns' metrics", "err", err)
			}
		}
	}
}

// ForgetPurged drops the metric series of campaigns purged or deleted since
// this process counted their messages: a worker that runs for months must
// not keep a series per campaign it ever sent.
func (w *Worker) ForgetPurged(ctx context.Context) error {
	for _, id := range metrics.CountedCampaigns() {
		if id == notice.KindNotification || id == notice.KindTest {
			continue // the shared label of single notices and test sends
		}
		c, err := w.store.Campaign(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			metrics.ForgetCampaign(id)
		case err != nil:
			return err
		case c.PurgedAt != nil:
			metrics.ForgetCampaign(id)
		}
	}
	return nil
}

// Sweep runs one watchdog round over the active campaigns. One campaign
// that cannot be swept (a Redis error, a broken record) does not stop the
// round: the others are swept, and the errors come back together, each
// naming its campaign.
func (w *Worker) Sweep(ctx context.Context) error {
	ids, err := w.store.Active(ctx)
	if err != nil {
		return fmt.Errorf("active campaigns: %w", err)
	}
	slices.Sort(ids) // a steady order, for the logs
	w.forgetInactive(ids)
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := w.sweepOne(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("campaign %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// sweepOne is one campaign's part of a watchdog round.
func (w *Worker) sweepOne(ctx context.Context, id string) error {
	st, err := w.store.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status == notice.CampaignCancelled {
		return w.sweepCancelled(ctx, id)
	}
	if st.Status != notice.CampaignSending {
		if st.Status != notice.CampaignPaused {
			// Done (or a draft): not the watchdog's any more.
			w.forget(id)
			return w.store.Inactive(ctx, id)
		}
		return nil
	}
	// A window that lost chunks (a fan-out never enqueued because the
	// API died after Start, a worker that died between handing a chunk
	// out and enqueueing it): top it up. Harmless when it is full.
	if cur, err := w.store.FanoutCursor(ctx, id, st.Gen); err == nil && cur <= st.Seq {
		c, err := w.campaign(ctx, id)
		if err != nil {
			return err
		}
		if n, err := w.topUp(ctx, c); err != nil {
			return err
		} else if n > 0 {
			w.log.Info("watchdog: chunks handed out to fill the campaign's window", "campaign", id, "chunks", n)
		}
	}
	// Besides expired claims, this process's own claims whose task has
	// ended: their outcome was written and lost (a failover), and
	// nobody will finish them before CLAIM_TTL runs out.
	w.orphans.Lock() // no token is born between the look at live and the steal
	stolen, err := w.store.StealOrphans(ctx, id, w.cfg.ClaimTTL, w.proc, w.liveTokens()...)
	w.orphans.Unlock()
	if err != nil {
		return err
	}
	stamp := fmt.Sprintf("w%d", time.Now().UnixMilli())
	size := int64(w.cfg.ChunkSize)
	for _, from := range stolen.Chunks {
		// A lease's first id may be the rest of a chunk handed back:
		// end it where that chunk ends, not a whole chunk further.
		end := from + size - (from-1)%size
		p := tasks.ChunkPayload{CampaignID: id, Gen: st.Gen, From: from, To: min(end, st.Seq+1)}
		if err := tasks.Chunk(ctx, w.queue, p, stamp); err != nil {
			return err
		}
	}
	for _, rid := range stolen.Recipients {
		tid := fmt.Sprintf("rc:%s:%d:%s", id, rid, stamp)
		if err := tasks.Deliver(ctx, w.queue, tasks.DeliverPayload{CampaignID: id, RecipientID: rid}, tasks.QueueRecipients, tid, 0); err != nil {
			return err
		}
	}
	if len(stolen.Chunks)+len(stolen.Recipients) > 0 {
		w.log.Info("watchdog recovered work", "campaign", id, "chunks", len(stolen.Chunks), "recipients", len(stolen.Recipients))
	}
	c, stalled, err := w.unstall(ctx, id, st)
	if err != nil {
		return err
	}
	// For the API's metrics and ETA: when the campaign last moved,
	// whether it is stalled, and how fast it went lately.
	return w.store.RecordSweep(ctx, id, w.cfg.ClockNow(), c.Counts.Done(), stalled)
}

// sweepEvery is how often the watchdog sweeps: every few seconds, so that
// work nothing is doing is found in seconds (a sweep costs a few small
// Redis calls per active campaign), and at least twice per ClaimTTL.
func (w *Worker) sweepEvery() time.Duration {
	return max(min(w.cfg.ClaimTTL/2, 2*time.Second), 100*time.Millisecond)
}

// leaseFresh is how recently a chunk lease must have been renewed to count
// as worked on (see unstall); renewals come every renewEvery at most.
func (w *Worker) leaseFresh() time.Duration {
	return max(3*w.renewEvery(), min(w.cfg.ClaimTTL/2, 10*time.Second))
}

// renewEvery is how often a claim or lease is renewed while its message is
// in flight or its chunk waits for the rate limit: often enough that a
// claim lost in a failover is re-asserted within seconds, and that a lease
// not renewed for leaseFresh is a leftover (renewals cost one call per
// slow message or waiting chunk).
func (w *Worker) renewEvery() time.Duration {
	return min(w.cfg.ClaimTTL/3, 3*time.Second)
}

// stall is when a campaign was first seen stalled, and its open count then.
type stall struct {
	since time.Time
	open  int64
}

// unstall re-enqueues the pending parts of a campaign that nothing works on.
// A chunk task can be lost without ever taking its lease: Redis executed
// asynq's dequeue but went down (a restart, a failover) before the reply
// reached the worker, or a failover lost the task, its lease and its
// recipients' claims (asynq recovers such a task only when its own lease
// runs out, a minute or two later, if at all). A campaign is stalled when it
// has pending recipients, no chunk lease taken or renewed lately (a queued
// chunk holds one too), and has made no progress for stallAfter (a few seconds: two sweeps
// at least). Recipients being sent (claims) do not make it busy: a claim
// is one recipient's, and may itself be a failover's leftover. Its pending
// chunks are enqueued again (claims keep that idempotent). It returns the
// campaign as read, and whether it was found stalled.
func (w *Worker) unstall(ctx context.Context, id string, st store.CampaignState) (*notice.Campaign, bool, error) {
	c, err := w.store.Campaign(ctx, id)
	if err != nil {
		return nil, false, err
	}
	stalled := c.Counts.Pending > 0
	if stalled {
		// A lease counts only if renewed lately: a running chunk renews
		// its lease with each message and every few seconds while it
		// waits (hold, take), but a failover can leave behind the lease
		// of a task that finished on the old primary, alive for CLAIM_TTL.
		live, err := w.store.LeasesRenewedSince(ctx, id, w.cfg.ClockNow().Add(-w.leaseFresh()), w.cfg.ClaimTTL)
		if err != nil {
			return nil, false, err
		}
		stalled = live == 0
	}
	// Chunks waiting in a queue hold leases of their own (handed out with
	// one, or given one below), so other campaigns' chunks in the shared
	// queue say nothing about this one: no queue-wide look here.
	now := time.Now()
	// Leases are the quick signal, not the last word: a failover can roll
	// the lease set back to before chunks finished, leaving leases of
	// tasks that no longer exist, alive for minutes. A campaign with
	// pending recipients, nothing being sent and no progress for a long
	// while (15 s, or three of its turns when its rate is slower) is
	// stalled whatever its leases say.
	long := w.noProgress(id, c, now)
	if long {
		stalled = true
	}
	w.mu.Lock()
	prev, seen := w.stalls[id]
	if stalled && (!seen || prev.open != c.Counts.Open()) {
		w.stalls[id] = stall{since: now, open: c.Counts.Open()}
	} else if !stalled {
		delete(w.stalls, id)
	}
	w.mu.Unlock()
	// Two sweeps at least, a few seconds apart: a chunk task between its
	// dequeue and its lease, or being re-enqueued, is not a stall.
	stallAfter := max(2*w.sweepEvery(), min(w.cfg.ClaimTTL/2, 5*time.Second))
	if !long && (!stalled || !seen || prev.open != c.Counts.Open() || now.Sub(prev.since) < stallAfter) {
		return c, false, nil
	}
	w.mu.Lock()
	delete(w.stalls, id) // the chunks queued below are work: start over
	w.mu.Unlock()
	all, err := w.store.PendingChunks(ctx, id, int64(w.cfg.ChunkSize))
	if err != nil {
		return nil, false, err
	}
	// Only the ranges already handed out (below the fan-out cursor): the
	// rest is the window's to hand out (topUp), a few at a time, so that a
	// big campaign's recovery does not put its whole remainder ahead of
	// every other campaign. Each goes out with a queued lease, as a hand-out
	// would: the next sweep sees it as worked on, not as stalled again.
	cursor, err := w.store.FanoutCursor(ctx, id, st.Gen)
	if err != nil {
		return nil, false, err
	}
	stamp := fmt.Sprintf("s%d", time.Now().UnixMilli())
	size := int64(w.cfg.ChunkSize)
	var chunks []int64
	for _, from := range all {
		if from >= cursor && !long {
			break
		}
		if err := w.store.SetChunkLease(ctx, id, from, w.cfg.ClockNow().Add(w.queuedTTL())); err != nil {
			return nil, false, err
		}
		p := tasks.ChunkPayload{CampaignID: id, Gen: st.Gen, From: from, To: min(from+size, st.Seq+1)}
		if err := tasks.Chunk(ctx, w.queue, p, stamp); err != nil {
			return nil, false, err
		}
		chunks = append(chunks, from)
	}
	w.log.Warn("watchdog: campaign stalled; pending chunks enqueued again", "campaign", id, "chunks", len(chunks), "pending", c.Counts.Pending,
		"stalled_for", stalledFor(seen, prev.since, now), "no_progress", long)
	return c, true, nil
}

// sweepCancelled settles a cancelled campaign's claims whose worker died:
// they can never finish, and a recipient left "sending" would keep the counts
// from adding up. Whether such a message went out before the worker died is
// unknowable; it is most likely not, so it counts as cancelled. Live claims
// finish on their own; the campaign leaves the active set once none remain.
func (w *Worker) sweepCancelled(ctx context.Context, id string) error {
	stolen, err := w.store.Steal(ctx, id, w.cfg.ClaimTTL)
	if err != nil {
		return err
	}
	if _, err := w.store.Mark(ctx, id, stolen.Recipients, []notice.Status{notice.StatusSending, notice.StatusRetrying}, notice.StatusCancelled); err != nil {
		return err
	}
	c, err := w.store.Campaign(ctx, id)
	if err != nil {
		return err
	}
	if c.Counts.Pending+c.Counts.Retrying > 0 {
		// The cancel's marking was cut short, or a retry was released
		// after it passed: finish it.
		if err := w.store.CancelUnsent(ctx, id); err != nil {
			return err
		}
		if c, err = w.store.Campaign(ctx, id); err != nil {
			return err
		}
	}
	if c.Counts.Open() == 0 {
		w.forget(id)
		return w.store.Inactive(ctx, id)
	}
	return nil
}

// progress is when a campaign's open count last changed, as the watchdog saw.
type progress struct {
	since time.Time
	open  int64
}

// noProgress says whether campaign c, with pending recipients and none
// being sent, has made no progress for a long while: 15 s, or three of its
// rate's turns if that is longer. It then starts the clock again, so
// that its caller acts once per such while, not at every sweep.
func (w *Worker) noProgress(id string, c *notice.Campaign, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.progress == nil {
		w.progress = map[string]progress{}
	}
	p, ok := w.progress[id]
	if !ok || p.open != c.Counts.Open() || c.Counts.Pending == 0 || c.Counts.Sending > 0 {
		w.progress[id] = progress{since: now, open: c.Counts.Open()}
		return false
	}
	limit := 15 * time.Second
	if r := w.rateOf(c); r > 0 {
		limit = max(limit, time.Duration(3/r*float64(time.Second)))
	}
	if now.Sub(p.since) < limit {
		return false
	}
	w.progress[id] = progress{since: now, open: c.Counts.Open()}
	return true
}

// stalledFor says how long a stall has been seen, for the log ("" when this
// sweep found it by its lack of progress alone).
func stalledFor(seen bool, since, now time.Time) string {
	if !seen || since.IsZero() {
		return ""
	}
	return now.Sub(since).Round(time.Millisecond).String()
}
