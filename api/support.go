package api

import (
	"fmt"
	"net/http"

	"github.com/oshirase/oshirase/app"
)

// resend answers POST /v1/campaigns/{id}/recipients/{rid}/resend.
func (s *Server) resend(w http.ResponseWriter, r *http.Request) {
	cid := r.PathValue("id")
	rid, ok := recipientID(w, r)
	if !ok {
		return
	}
	var req app.ResendRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	rs, err := s.app.Resend(r.Context(), cid, rid, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	url := fmt.Sprintf("/v1/campaigns/%s/recipients/%d", cid, rid)
	w.Header().Set("Location", url)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"campaign_id": cid, "recipient_id": rid, "resend": rs, "url": url,
	})
}
