package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// SetEvents connects the API to the status webhooks' emitter (nil: off).
func (s *Server) SetEvents(e *webhooks.Emitter) {
	s.events = e
	s.app.SetEvents(e)
}

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

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req WebhookRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	var bad []fieldError
	if msg := webhooks.CheckURL(req.URL, s.cfg.WebhookAllowPrivate); msg != "" {
		bad = append(bad, fieldError{Field: "url", Error: msg})
	}
	if len(req.Events) == 0 {
		bad = append(bad, fieldError{Field: "events", Error: "is required: a list of event types, or [\"*\"] for all"})
	}
	for i, e := range req.Events {
		if !webhooks.ValidType(e) {
			bad = append(bad, fieldError{Field: fmt.Sprintf("events[%d]", i), Error: fmt.Sprintf("%q is not an event type; one of %v or \"*\"", e, webhooks.Types)})
		}
	}
	if req.CampaignID != "" {
		if _, err := s.store.Campaign(r.Context(), req.CampaignID); errors.Is(err, store.ErrNotFound) {
			bad = append(bad, fieldError{Field: "campaign_id", Error: "no such campaign"})
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if len(bad) > 0 {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "the webhook is not valid", bad)
		return
	}
	secret := webhooks.NewSecret()
	evs := slices.Compact(slices.Sorted(slices.Values(req.Events)))
	wh, err := s.store.CreateWebhook(r.Context(), store.Webhook{URL: req.URL, Events: evs, CampaignID: req.CampaignID,
		IncludeAddress: req.IncludeAddress, CreatedAt: time.Now().UTC(), Secrets: []store.WebhookSecret{{Secret: secret}}})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.refreshHooks(r.Context())
	details, _ := json.Marshal(map[string]any{"webhook": wh.ID, "events": evs, "include_address": req.IncludeAddress})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "webhook.create", CampaignID: req.CampaignID, Details: details})
	v := webhookView(wh)
	v.Secret = secret
	w.Header().Set("Location", "/v1/webhooks/"+wh.ID)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	hs, err := s.store.Webhooks(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]WebhookView, len(hs))
	for i := range hs {
		out[i] = webhookView(&hs[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	wh, err := s.store.GetWebhook(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, webhookView(wh))
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.store.DeleteWebhook(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.refreshHooks(r.Context())
	details, _ := json.Marshal(map[string]string{"webhook": id})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "webhook.delete", Details: details})
	w.WriteHeader(http.StatusNoContent)
}

// rotateWebhook gives an endpoint a new secret; the current one keeps
// signing beside it for WEBHOOK_ROTATE_OVERLAP, so receivers can switch
// without losing a message. Older secrets stop at once.
func (s *Server) rotateWebhook(w http.ResponseWriter, r *http.Request) {
	secret := webhooks.NewSecret()
	overlap := s.cfg.WebhookRotateOverlap
	if overlap <= 0 {
		overlap = 24 * time.Hour
	}
	wh, err := s.store.UpdateWebhook(r.Context(), r.PathValue("id"), func(wh *store.Webhook) error {
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
		s.fail(w, r, err)
		return
	}
	details, _ := json.Marshal(map[string]string{"webhook": wh.ID})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "webhook.rotate", Details: details})
	v := webhookView(wh)
	v.Secret = secret
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) refreshHooks(ctx context.Context) {
	if err := s.events.Refresh(ctx); err != nil {
		s.log.Warn("webhooks: reading endpoints", "err", err)
	}
}

// deliveryCursor is the form of a delivery log's cursor (a Redis stream id).
var deliveryCursor = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// webhookDeliveries lists an endpoint's delivery attempts, newest first:
// when, how many events, the receiver's status code, latency and error.
func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	limit, ok := pageLimit(w, q, 100, store.DeliveryLogSize)
	if !ok {
		return
	}
	cursor := q.Get("cursor")
	if cursor != "" && !deliveryCursor.MatchString(cursor) {
		badCursor(w, cursor)
		return
	}
	if _, err := s.store.GetWebhook(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	log, next, err := s.store.DeliveryLog(r.Context(), id, cursor, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": log, "next_cursor": nextCursor(next)})
}

// redeliverWebhook sends a logged delivery again (same events, same
// webhook-id) as a new task with retries of its own.
func (s *Server) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	id, did := r.PathValue("id"), r.PathValue("delivery_id")
	wh, err := s.store.GetWebhook(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if wh.DisabledAt != nil {
		writeError(w, http.StatusConflict, "webhook_disabled", fmt.Sprintf("webhook %s is disabled (%s); register the endpoint again", id, wh.DisabledReason), nil)
		return
	}
	insp := asynq.NewInspectorFromRedisClient(s.store.Redis())
	if err := webhooks.Redeliver(r.Context(), insp, s.queue, id, did); errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("delivery %s of webhook %s is not kept (a delivery is kept a day after it succeeded)", did, id), nil)
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	details, _ := json.Marshal(map[string]string{"webhook": id, "delivery_id": did})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "webhook.redeliver", Details: details})
	writeJSON(w, http.StatusAccepted, map[string]string{"webhook_id": id, "delivery_id": did, "status": "queued"})
}
