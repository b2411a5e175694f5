package api

import (
	"net/http"
	"strconv"

	"github.com/oshirase/oshirase/app"
)

// Template endpoints. Listing templates (names, descriptions, the fields
// each needs) shows no customer data: every role may. Previews render a
// whole notice — for a campaign possibly a real customer's — and are for
// admins, who create and start campaigns.

// Preview is a rendered notice as the preview endpoints return it.
type Preview = app.Preview

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"templates": s.templates.List()})
}

// previewTemplate answers POST /v1/templates/{name}/preview.
func (s *Server) previewTemplate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.templates.Has(name) { // before the body is read
		s.fail(w, r, app.E(app.NotFound, "not_found", "unknown template "+app.Quote(name)+" (see GET /v1/templates)"))
		return
	}
	var req app.PreviewRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	p, err := s.app.PreviewTemplate(r.Context(), name, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// previewCampaign answers GET /v1/campaigns/{id}/preview?recipient_id=&locale=:
// the campaign as its recipients will get it (app.PreviewCampaign).
func (s *Server) previewCampaign(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var rid int64
	if v := q.Get("recipient_id"); v != "" {
		var err error
		if rid, err = strconv.ParseInt(v, 10, 64); err != nil || rid <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "recipient_id must be a positive integer", []fieldError{{Field: "recipient_id", Error: "must be a positive integer"}})
			return
		}
	}
	p, err := s.app.PreviewCampaign(r.Context(), r.PathValue("id"), q.Get("locale"), rid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}
