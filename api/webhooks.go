package api

import (
	"net/http"
	"regexp"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// SetEvents connects the API to the status webhooks' emitter (nil: off).
func (s *Server) SetEvents(e *webhooks.Emitter) {
	s.app.SetEvents(e)
}

// WebhookRequest is the body of POST /v1/webhooks.
type WebhookRequest = app.WebhookRequest

// WebhookView is an endpoint as the API shows it: never its secrets.
type WebhookView = app.WebhookView

// createWebhook answers POST /v1/webhooks (app.CreateWebhook).
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req WebhookRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	v, err := s.app.CreateWebhook(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/webhooks/"+v.ID)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	out, err := s.app.Webhooks(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	v, err := s.app.Webhook(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// deleteWebhook answers DELETE /v1/webhooks/{id} (app.DeleteWebhook).
func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	if err := s.app.DeleteWebhook(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// rotateWebhook answers POST /v1/webhooks/{id}/rotate
// (app.RotateWebhookSecret).
func (s *Server) rotateWebhook(w http.ResponseWriter, r *http.Request) {
	v, err := s.app.RotateWebhookSecret(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
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

// redeliverWebhook answers POST .../deliveries/{delivery_id}/redeliver
// (app.RedeliverWebhook).
func (s *Server) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	id, did := r.PathValue("id"), r.PathValue("delivery_id")
	if err := s.app.RedeliverWebhook(r.Context(), id, did); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"webhook_id": id, "delivery_id": did, "status": "queued"})
}
