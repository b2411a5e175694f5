package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// WebhookRequest is the body of POST /v1/webhooks.
type WebhookRequest struct {
	URL            string   `json:"url"`
	Events         []string `json:"events"`
	CampaignID     string   `json:"campaign_id"`
	IncludeAddress bool     `json:"include_address"`
}

// WebhookView is an endpoint as the API shows it: never its secrets.
type WebhookView struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	Events         []string   `json:"events"`
	CampaignID     string     `json:"campaign_id,omitempty"`
	IncludeAddress bool       `json:"include_address"`
	CreatedAt      time.Time  `json:"created_at"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	// PreviousSecretUntil: after a rotation, when the old secret stops
	// signing beside the new one.
	PreviousSecretUntil *time.Time `json:"previous_secret_until,omitempty"`
	// Secret is shown once, in the answer to the create or the rotation.
	Secret string `json:"secret,omitempty"`
}

func webhookView(w *store.Webhook) WebhookView {
	v := WebhookView{ID: w.ID, URL: w.URL, Events: w.Events, CampaignID: w.CampaignID, IncludeAddress: w.IncludeAddress,
		CreatedAt: w.CreatedAt, DisabledAt: w.DisabledAt, DisabledReason: w.DisabledReason}
	now := time.Now()
	for _, sec := range w.Secrets {
		if sec.Until != nil && now.Before(*sec.Until) {
			v.PreviousSecretUntil = sec.Until
		}
	}
	return v
}

// CreateWebhook registers an endpoint for status events. Its URL must be
// http or https and, unless Config.WebhookAllowPrivate, not on a loopback
// or private address (webhooks.CheckURL). The answer holds the endpoint's
// secret, shown this once.
func (a *App) CreateWebhook(ctx context.Context, req WebhookRequest) (*WebhookView, error) {
	var bad []FieldError
	if msg := webhooks.CheckURL(req.URL, a.cfg.WebhookAllowPrivate); msg != "" {
		bad = append(bad, FieldError{"url", msg})
	}
	if len(req.Events) == 0 {
		bad = append(bad, FieldError{"events", "is required: a list of event types, or [\"*\"] for all"})
	}
	for i, e := range req.Events {
		if !webhooks.ValidType(e) {
			bad = append(bad, FieldError{fmt.Sprintf("events[%d]", i), fmt.Sprintf("%q is not an event type; one of %v or \"*\"", e, webhooks.Types)})
		}
	}
	if req.CampaignID != "" {
		if _, err := a.store.Campaign(ctx, req.CampaignID); errors.Is(err, store.ErrNotFound) {
			bad = append(bad, FieldError{"campaign_id", "no such campaign"})
		} else if err != nil {
			return nil, err
		}
	}
	if len(bad) > 0 {
		return nil, E(Invalid, "invalid", "the webhook is not valid", bad...)
	}
	secret := webhooks.NewSecret()
	evs := slices.Compact(slices.Sorted(slices.Values(req.Events)))
	wh, err := a.store.CreateWebhook(ctx, store.Webhook{URL: req.URL, Events: evs, CampaignID: req.CampaignID,
		IncludeAddress: req.IncludeAddress, CreatedAt: time.Now().UTC(), Secrets: []store.WebhookSecret{{Secret: secret}}})
	if err != nil {
		return nil, err
	}
	a.refreshHooks(ctx)
	details, _ := json.Marshal(map[string]any{"webhook": wh.ID, "events": evs, "include_address": req.IncludeAddress})
	a.Audit(ctx, store.AuditEntry{Action: "webhook.create", CampaignID: req.CampaignID, Details: details})
	v := webhookView(wh)
	v.Secret = secret
	return &v, nil
}

// Webhooks lists the endpoints.
func (a *App) Webhooks(ctx context.Context) ([]WebhookView, error) {
	hs, err := a.store.Webhooks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]WebhookView, len(hs))
	for i := range hs {
		out[i] = webhookView(&hs[i])
	}
	return out, nil
}

// Webhook is endpoint id.
func (a *App) Webhook(ctx context.Context, id string) (*WebhookView, error) {
	wh, err := a.store.GetWebhook(ctx, id)
	if err != nil {
		return nil, err
	}
	v := webhookView(wh)
	return &v, nil
}

// DeleteWebhook removes endpoint id: it gets no more events.
func (a *App) DeleteWebhook(ctx context.Context, id string) error {
	if err := a.store.DeleteWebhook(ctx, id); err != nil {
		return err
	}
	a.refreshHooks(ctx)
	details, _ := json.Marshal(map[string]string{"webhook": id})
	a.Audit(ctx, store.AuditEntry{Action: "webhook.delete", Details: details})
	return nil
}

// RotateWebhookSecret gives an endpoint a new secret; the current one
// keeps signing beside it for Config.WebhookRotateOverlap, so receivers
// can switch without losing a message. Older secrets stop at once. The
// answer holds the new secret, shown this once.
func (a *App) RotateWebhookSecret(ctx context.Context, id string) (*WebhookView, error) {
	secret := webhooks.NewSecret()
	overlap := a.cfg.WebhookRotateOverlap
	if overlap <= 0 {
		overlap = 24 * time.Hour
	}
	wh, err := a.store.UpdateWebhook(ctx, id, func(wh *store.Webhook) error {
		now := time.Now().UTC()
		until := now.Add(overlap)
		keep := []store.WebhookSecret{{Secret: secret}}
		for _, sec := range wh.Secrets {
			if sec.Until == nil {
				keep = append(keep, store.WebhookSecret{Secret: sec.Secret, Until: &until})
			}
		}
		wh.Secrets = keep
		return nil
	})
	if err != nil {
		return nil, err
	}
	details, _ := json.Marshal(map[string]string{"webhook": wh.ID})
	a.Audit(ctx, store.AuditEntry{Action: "webhook.rotate", Details: details})
	v := webhookView(wh)
	v.Secret = secret
	return &v, nil
}

// RedeliverWebhook sends a logged delivery of endpoint id again (same
// events, same webhook-id) as a new task with retries of its own.
func (a *App) RedeliverWebhook(ctx context.Context, id, deliveryID string) error {
	wh, err := a.store.GetWebhook(ctx, id)
	if err != nil {
		return err
	}
	if wh.DisabledAt != nil {
		return E(Conflict, "webhook_disabled", fmt.Sprintf("webhook %s is disabled (%s); register the endpoint again", id, wh.DisabledReason))
	}
	insp := asynq.NewInspectorFromRedisClient(a.store.Redis())
	if err := webhooks.Redeliver(ctx, insp, a.queue, id, deliveryID); errors.Is(err, store.ErrNotFound) {
		return &Error{Kind: NotFound, Code: "not_found", Err: err,
			Msg: fmt.Sprintf("delivery %s of webhook %s is not kept (a delivery is kept a day after it succeeded)", deliveryID, id)}
	} else if err != nil {
		return err
	}
	details, _ := json.Marshal(map[string]string{"webhook": id, "delivery_id": deliveryID})
	a.Audit(ctx, store.AuditEntry{Action: "webhook.redeliver", Details: details})
	return nil
}

// refreshHooks has this process's emitter read the endpoints again after
// a change (others see it through the change counter).
func (a *App) refreshHooks(ctx context.Context) {
	if err := a.events.Refresh(ctx); err != nil {
		a.log.Warn("webhooks: reading endpoints", "err", err)
	}
}
