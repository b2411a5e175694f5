package worker

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/tasks"
)

// trackMargin is added to a retrying task's delay for its outstanding
// deadline: the time it may wait for a free worker once due.
const trackMargin = 5 * time.Minute

// tracked wraps the deliver handler for the resends and single notices the
// API tracks per campaign (store.TrackDelivery), which a purge waits for:
// once the task is over — sent, failed for good, or nothing to do — its
// entry goes; when it will run again, its deadline moves on past the retry.
// Tasks of the bulk queue (retries of a campaign's recipients) are not
// tracked: the campaign is still sending while they run.
func (w *Worker) tracked(h asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		err := h(ctx, t)
		if q, _ := asynq.GetQueueName(ctx); q != tasks.QueueUrgent {
			return err
		}
		id, _ := asynq.GetTaskID(ctx)
		var p tasks.DeliverPayload
		if tasks.Decode(t, &p) != nil || id == "" {
			return err
		}
		bg := context.WithoutCancel(ctx)
		if err == nil || errors.Is(err, asynq.SkipRetry) {
			if uerr := w.store.UntrackDelivery(bg, p.CampaignID, id); uerr != nil {
				// The entry expires; a purge then checks the task is gone.
				w.log.Warn("untrack delivery", "campaign", p.CampaignID, "err", uerr)
			}
			return err
		}
		n, _ := asynq.GetRetryCount(ctx)
		until := w.cfg.ClockNow().Add(RetryDelay(n+1, err, t) + trackMargin)
		if xerr := w.store.ExtendDelivery(bg, p.CampaignID, id, until); xerr != nil {
			w.log.Warn("extend tracked delivery", "campaign", p.CampaignID, "err", xerr)
		}
		return err
	}
}
