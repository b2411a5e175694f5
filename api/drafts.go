package api

import (
	"encoding/json"
	"io"
	"net/http"
)

// patchCampaign answers PATCH /v1/campaigns/{id}: a draft's fields change
// as a JSON merge patch at the top level (app.UpdateDraft).
func (s *Server) patchCampaign(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		bodyError(w, err)
		return
	}
	var patch map[string]json.RawMessage
	if err := json.Unmarshal(b, &patch); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", "request body: want a JSON object of the fields to change: "+err.Error(), nil)
		return
	}
	c, err := s.app.UpdateDraft(r.Context(), r.PathValue("id"), patch)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// deleteCampaign answers DELETE /v1/campaigns/{id}: a draft goes with its
// recipients (app.DeleteDraft); 409 not_draft for one that has started.
func (s *Server) deleteCampaign(w http.ResponseWriter, r *http.Request) {
	if err := s.app.DeleteDraft(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
