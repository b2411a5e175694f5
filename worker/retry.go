package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// handleDeliver delivers to one recipient: a retry after a transient
// failure, a resend (p.Resend > 0), or the report of a permanent failure.
// Its error is what asynq shows operators: the SMTP reply.
func (w *Worker) handleDeliver(ctx context.Context, t *asynq.Task) error {
	var p tasks.DeliverPayload
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	c, err := w.campaign(ctx, p.CampaignID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Resend > 0 {
		return w.resend(ctx, c, p)
	}
	r, err := w.store.Recipient(ctx, p.CampaignID, p.RecipientID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if r.Status == notice.StatusFailed {
		// The report of a permanent failure (archived at once, with the
		// SMTP reply as the error operators see), or an operator's "Run"
		// of that archived task in asynqmon: send it again.
		again, err := w.runAgain(ctx, c, r)
		if !again {
			return err
		}
		r.Status = notice.StatusRetrying
	}
	if r.Status.Final() {
		return nil // sent, suppressed, cancelled: nothing to do, never twice
	}
	if w.stopped() {
		return &retryError{Delay: 0, Err: errors.New("worker stopping; handed back")}
	}
	// A retry on the bulk queue waits for its rate no more than a chunk
	// does: longer, it gives its slot back and asynq brings it back when
	// the rate allows. A single notice (urgent queue, a server of its own)
	// waits in place a while first.
	each, total := inlineWait, inlineTotal
	if q, _ := asynq.GetQueueName(ctx); q == tasks.QueueUrgent {
		each, total = urgentWait, urgentWait
	}
	if d := w.turn(ctx, c, each, total); d > 0 {
		return &retryError{Delay: d, Err: fmt.Errorf("waiting %s for the rate limit", d.Round(time.Millisecond))}
	}
	token := w.begin()
	defer w.end(token)
	bg := context.WithoutCancel(ctx)
	claimedAt := time.Now()
	res, err := w.record(bg, p.CampaignID, store.Step{
		Token: token, ClaimID: r.ID, ClaimTTL: w.cfg.ClaimTTL, ClaimRetrying: true,
	})
	if err != nil {
		return err
	}
	if !res.Claimed {
		switch {
		case res.Stopped && res.Campaign == notice.CampaignPaused:
			return &retryError{Delay: w.cfg.ClaimTTL / 4, Err: errors.New("campaign paused")}
		case res.Stopped && res.Campaign == notice.CampaignCancelled:
			_, err := w.store.Mark(bg, p.CampaignID, []int64{r.ID}, []notice.Status{notice.StatusPending, notice.StatusRetrying}, notice.StatusCancelled)
			return err
		case res.Busy:
			return &retryError{Delay: w.cfg.ClaimTTL, Err: errors.New("another worker is sending to this recipient")}
		case res.Current == notice.StatusFailed:
			// The report task of a chunk's permanent failure can run before
			// the chunk recorded it: read the reply it recorded since.
			if fresh, err := w.store.Recipient(bg, p.CampaignID, p.RecipientID); err == nil {
				r = fresh
			}
			return w.reportFailed(bg, p.CampaignID, r.ID, r.Attempts, r.LastError)
		}
		return nil // sent, suppressed, cancelled: nothing to do, never twice
	}
	// Read the recipient again under the claim: its history may have grown
	// since the read above (another retry task, a chunk finishing late).
	cl := w.hold(p.CampaignID, token, r.ID, 0, claimedAt)
	defer cl.release()
	if fresh, err := w.store.Recipient(bg, p.CampaignID, p.RecipientID); err == nil {
		r = fresh
	} else {
		// Nothing was sent: hand the claim back for a later try.
		cl.release()
		w.store.Release(bg, p.CampaignID, token, notice.StatusRetrying, r.ID)
		return err
	}
	step := w.attempt(bg, c, r, false, cl)
	cl.release()
	step.Token = token
	out, err := w.record(bg, p.CampaignID, step)
	if err != nil {
		return err
	}
	w.finished(p.CampaignID, step, out)
	switch step.Finish {
	case notice.StatusRetrying:
		// asynq keeps the task in its retry set with the SMTP reply as the
		// error, which is what operators see in asynqmon.
		return &retryError{Delay: w.backoff(step.Delivery.Attempts), Failure: true,
			Err: fmt.Errorf("attempt %d: %s", step.Delivery.Attempts, notice.MaskAddresses(step.Delivery.LastError))}
	case notice.StatusFailed:
		return w.reportFailed(bg, p.CampaignID, r.ID, step.Delivery.Attempts, step.Delivery.LastError)
	}
	return nil
}

// reportFailed is what a task returns for a recipient that failed for good
// at attempt attempts: asynq archives it with the reply. It is recorded, so
// that a later run of the archived task is known for an operator's "Run".
func (w *Worker) reportFailed(ctx context.Context, cid string, rid int64, attempts int, reply string) error {
	if err := w.store.MarkReported(ctx, cid, rid, attempts); err != nil {
		return err // asynq runs it again soon, and it reports then
	}
	// The attempt that failed logged its reply ("send failed"): asynq's
	// "Retry exhausted" for this archive would say it again, wrongly.
	w.explain(ctx)
	return failedError(rid, reply)
}

// runAgain handles a task for a recipient that failed for good. Its first
// run reports the failure (archived with the reply). A run of the task
// after that is an operator's "Run" in asynqmon: the recipient is sent
// again (again is true; it is retrying now), as POST
// /v1/campaigns/{id}/retry would — unless its address is suppressed, or the
// campaign is draft or cancelled, which archives the task once more with
// the reason. A done campaign goes back to sending until it is through.
func (w *Worker) runAgain(ctx context.Context, c *notice.Campaign, r *notice.Recipient) (again bool, err error) {
	n, err := w.store.Reported(ctx, c.ID, r.ID)
	if err != nil {
		return false, err
	}
	if n != r.Attempts {
		return false, w.reportFailed(ctx, c.ID, r.ID, r.Attempts, r.LastError)
	}
	sup, err := w.store.Suppressed(ctx, []string{r.Email})
	if err != nil {
		return false, err
	}
	if sup[r.Email] != nil {
		return false, fmt.Errorf("recipient %d is on the suppression list; not sent again: %w", r.ID, asynq.SkipRetry)
	}
	moved, err := w.store.RetryFailed(ctx, c.ID, []int64{r.ID})
	if errors.Is(err, store.ErrInvalidMove) {
		return false, fmt.Errorf("recipient %d not sent again: %v: %w", r.ID, err, asynq.SkipRetry)
	}
	if err != nil {
		return false, err
	}
	if len(moved) == 0 {
		return false, nil // retried meanwhile by another way, whose task sends it
	}
	tid, _ := asynq.GetTaskID(ctx)
	w.log.Info("failed recipient run again from asynqmon", "campaign", c.ID, "recipient", r.ID, "task", tid)
	details, _ := json.Marshal(map[string]any{"task": tid, "attempts": r.Attempts})
	if err := w.store.Audit(context.WithoutCancel(ctx), store.AuditEntry{
		Actor: "asynqmon", Action: "recipient.retry", CampaignID: c.ID, Recipient: r.ID, Details: details,
	}); err != nil {
		w.log.Error("audit log write failed", "action", "recipient.retry", "err", err)
	}
	return true, nil
}

// failedError is what asynq archives for a permanently failed recipient:
// the SMTP reply, addresses masked, for operators to read in asynqmon.
func failedError(id int64, reply string) error {
	return fmt.Errorf("recipient %d failed permanently: %s: %w", id, notice.MaskAddresses(reply), asynq.SkipRetry)
}

// resend delivers resend number p.Resend of a recipient, to the address
// support gave (the original or a corrected one). The original delivery stays
// as it was; the resend has its own status and Message-ID.
func (w *Worker) resend(ctx context.Context, c *notice.Campaign, p tasks.DeliverPayload) error {
	// One sender at a time: asynq may run a task twice (a lease it thought
	// lost), and a resend has no claim of its own. The lock outlives a
	// crash for a while (5 × CLAIM_TTL) rather than let a second run send
	// what the first may have sent.
	token := fmt.Sprintf("%d", time.Now().UnixNano())
	locked, err := w.store.LockResend(ctx, p.CampaignID, p.RecipientID, p.Resend, token, 5*w.cfg.ClaimTTL)
	if err != nil {
		return err
	}
	if !locked {
		return &retryError{Delay: time.Second, Err: fmt.Errorf("resend %d of recipient %d is being sent by another worker", p.Resend, p.RecipientID)}
	}
	unlock := true
	defer func() {
		if unlock {
			w.store.UnlockResend(context.WithoutCancel(ctx), p.CampaignID, p.RecipientID, p.Resend, token)
		}
	}()
	r, err := w.store.Recipient(ctx, p.CampaignID, p.RecipientID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Resend > len(r.Resends) {
		return fmt.Errorf("resend %d of recipient %d not found: %w", p.Resend, r.ID, asynq.SkipRetry)
	}
	rs := r.Resends[p.Resend-1]
	if rs.Status == notice.StatusSent {
		return nil
	}
	if rs.Locale != "" {
		r.Locale = rs.Locale // support asked for the other language
	}
	var d notice.Delivery
	out := w.send(context.WithoutCancel(ctx), c, r, rs.Email, p.Resend, &d, nil)
	bg := context.WithoutCancel(ctx)
	// A resend retries like any delivery, and gives up like one too:
	// RETRY_MAX_AGE after support asked for it.
	retry := out != nil && out.Temporary && w.cfg.ClockNow().Sub(rs.At) < w.cfg.RetryMaxAge
	err = w.recordResend(bg, p.CampaignID, r.ID, p.Resend, func(x *notice.Resend) {
		if out == nil {
			x.Status, x.MessageID, x.SentAt, x.LastError = notice.StatusSent, d.MessageID, d.SentAt, ""
			x.History = append(x.History, d.History...)
			return
		}
		x.History = append(x.History, d.History...)
		x.LastError = out.Error()
		x.Status = notice.StatusRetrying
		if !retry {
			x.Status = notice.StatusFailed
		}
	})
	if err != nil {
		// The outcome is unknown to Redis: keep the lock, so that a rerun
		// soon after does not send again what the server may have taken.
		unlock = false
		return err
	}
	switch {
	case out == nil:
		metrics.CountMessages(c.MetricLabel(), "resent", 1)
		w.emitRecipient(p.CampaignID, r.ID, notice.StatusSent, &d, p.Resend)
		return nil
	case retry:
		n, _ := asynq.GetRetryCount(ctx)
		return &retryError{Delay: w.backoff(n + 1), Failure: true, Err: fmt.Errorf("resend %d: %s", p.Resend, notice.MaskAddresses(out.Error()))}
	default:
		w.permanent(bg, c, r.ID, rs.Email, out)
		w.explain(ctx) // send logged the reply
		return fmt.Errorf("resend %d failed permanently: %s: %w", p.Resend, notice.MaskAddresses(out.Error()), asynq.SkipRetry)
	}
}

// recordResend writes a resend's outcome like record does a delivery's:
// retried through a short Redis outage, because the message has gone out.
func (w *Worker) recordResend(ctx context.Context, cid string, rid int64, n int, fn func(*notice.Resend)) error {
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(w.cfg.RecordTimeout)
	for {
		err := w.store.UpdateResend(ctx, cid, rid, n, fn)
		if err == nil || errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		w.log.Warn("record resend outcome: retrying", "campaign", cid, "err", err)
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// explain notes that the task of ctx is archived for a reason already
// logged (a permanent SMTP answer), so that asynq's own "Retry exhausted"
// warning for it is dropped (see Explained): one warning per permanent
// answer, the one with the reply.
func (w *Worker) explain(ctx context.Context) {
	id, ok := asynq.GetTaskID(ctx)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.explained == nil || len(w.explained) > 10_000 {
		// Bounded: asynq logs right after the handler returns, so an
		// entry is consumed at once or its line was never written.
		w.explained = map[string]struct{}{}
	}
	w.explained[id] = struct{}{}
}

// Explained reports (once) whether task id was archived for a reason the
// worker logged already; asynq's logger adapter drops its "Retry exhausted"
// warning for such a task.
func (w *Worker) Explained(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.explained[id]
	delete(w.explained, id)
	return ok
}
