package api

import (
	"net/http"

	"github.com/oshirase/oshirase/app"
)

// testSend answers POST /v1/campaigns/{id}/test (app.TestSend): 202 with
// where the test notice is tracked.
func (s *Server) testSend(w http.ResponseWriter, r *http.Request) {
	var req app.TestSendRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	ans, err := s.app.TestSend(r.Context(), r.PathValue("id"), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", ans.URL)
	writeJSON(w, http.StatusAccepted, ans)
}
