package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/webhooks"
)

// handleStart starts a campaign at the time it was scheduled for, as
// POST /v1/campaigns/{id}/start would. A campaign rescheduled since (this
// task's time is not the campaign's), unscheduled, started by hand or
// cancelled is left alone: only the latest schedule counts.
func (w *Worker) handleStart(ctx context.Context, t *asynq.Task) error {
	var p tasks.StartPayload
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	scheduled := func() (*notice.Campaign, bool, error) {
		c, err := w.store.Campaign(ctx, p.CampaignID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		return c, c.Status == notice.CampaignDraft && c.ScheduledAt != nil && c.ScheduledAt.UnixMilli() == p.At, nil
	}
	if _, ok, err := scheduled(); err != nil || !ok {
		return err
	}
	at := time.UnixMilli(p.At)
	if d := time.Until(at); d > 2*time.Second {
		// Run long before its time (asynqmon's "run now"): keep the
		// schedule instead of holding a worker slot until then.
		w.log.Info("scheduled start ran early; enqueued again for its time", "campaign", p.CampaignID, "at", at.UTC())
		return tasks.StartAgain(ctx, w.queue, p.CampaignID, at)
	} else if d > 0 {
		// asynq keeps scheduled tasks by the second and may hand this one
		// over up to a second early: wait for the time itself.
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Again: it may have been unscheduled or started by hand meanwhile.
	c, ok, err := scheduled()
	if err != nil || !ok {
		return err
	}
	tr, err := w.store.Start(ctx, p.CampaignID)
	if err != nil {
		return fmt.Errorf("scheduled start of %s: %w", p.CampaignID, err)
	}
	if tr.Status == notice.CampaignSending {
		if err := tasks.Fanout(ctx, w.queue, p.CampaignID, tr.Gen); err != nil {
			return err
		}
	}
	if tr.Changed {
		w.log.Info("campaign started", "campaign", p.CampaignID, "actor", "scheduler", "scheduled", true)
		w.events.Emit(webhooks.Event{Type: webhooks.CampaignStarted, Data: webhooks.Data{CampaignID: p.CampaignID, Status: string(tr.Status)}})
		if err := w.store.Audit(context.WithoutCancel(ctx), store.AuditEntry{
			Actor: "scheduler", Action: "campaign.start", CampaignID: p.CampaignID, Reason: "scheduled for " + c.ScheduledAt.UTC().Format("2006-01-02T15:04:05Z"),
		}); err != nil {
			w.log.Error("audit log write failed", "action", "campaign.start", "err", err)
		}
	}
	return nil
}
