package api

import (
	"net/http"

	"github.com/oshirase/oshirase/app"
)

// retryCampaign sends failed recipients again (app.Retry).
func (s *Server) retryCampaign(w http.ResponseWriter, r *http.Request) {
	var q app.RetryRequest
	if !decodeOptionalJSON(w, r, &q) {
		return
	}
	res, err := s.app.Retry(r.Context(), r.PathValue("id"), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}
