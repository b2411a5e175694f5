package api

import (
	"net/http"
	"strings"

	"github.com/oshirase/oshirase/app"
)

// notify answers POST /v1/notifications.
func (s *Server) notify(w http.ResponseWriter, r *http.Request) {
	var req app.NotificationRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	req.Template = strings.TrimSpace(req.Template)
	ans, err := s.app.Notify(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", ans.URL)
	writeJSON(w, http.StatusAccepted, ans)
}
