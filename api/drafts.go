package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// campaignFields are the fields of a campaign a client sets: those of POST
// /v1/campaigns, and so those PATCH may change.
var campaignFields = []string{"name", "template", "default_locale", "from", "reply_to", "charset", "rate", "time_zone", "extra_paragraphs", "data"}

// requestOf is c as the create request that would make it.
func requestOf(c *notice.Campaign) map[string]any {
	var from any = c.From
	if c.FromLocales != nil {
		from = c.FromLocales
	}
	return map[string]any{
		"name": c.Name, "template": c.Template, "default_locale": c.DefaultLocale, "from": from, "reply_to": c.ReplyTo,
		"charset": c.Charset, "rate": c.Rate, "time_zone": c.TimeZone, "extra_paragraphs": c.Paragraphs, "data": c.Data,
	}
}

// patchCampaign answers PATCH /v1/campaigns/{id}: a draft's fields change
// as a JSON merge patch (RFC 7396) at the top level: each field given
// replaces that field whole (data too), null puts it back to its default,
// and the result is checked like a new campaign. A campaign that has
// started is what its notices were made of: 409.
func (s *Server) patchCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
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
	var unknown []fieldError
	for k := range patch {
		if !slices.Contains(campaignFields, k) {
			unknown = append(unknown, fieldError{k, "unknown field (a campaign has " + strings.Join(campaignFields, ", ") + ")"})
		}
	}
	if len(unknown) > 0 {
		slices.SortFunc(unknown, func(a, b fieldError) int { return strings.Compare(a.Field, b.Field) })
		writeError(w, http.StatusBadRequest, "bad_json", "request body: unknown fields", unknown)
		return
	}
	if len(patch) == 0 {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "nothing to change: give at least one of "+strings.Join(campaignFields, ", "), nil)
		return
	}
	var changed []string
	c, err := s.store.UpdateDraft(r.Context(), id, func(c *notice.Campaign) error {
		merged := requestOf(c)
		for k, v := range patch {
			if string(bytes.TrimSpace(v)) == "null" {
				delete(merged, k) // back to its default, as if never given
			} else {
				merged[k] = v
			}
		}
		mb, _ := json.Marshal(merged)
		var req campaignRequest
		if err := json.Unmarshal(mb, &req); err != nil {
			return &InvalidError{Code: "invalid_campaign", Msg: "the campaign has invalid fields", Fields: []fieldError{{jsonField(err), err.Error()}}}
		}
		errs := req.validate(s.templates, s.cfg.DKIMDomains)
		nc := req.campaign()
		if nc.Charset == notice.CharsetISO2022JP && c.Charset != notice.CharsetISO2022JP && c.Counts.Total > 0 {
			// Uploaded recipients were checked for UTF-8 only: a name
			// ISO-2022-JP cannot carry would fail its send.
			errs = append(errs, fieldError{"charset", "cannot become iso-2022-jp once recipients are uploaded (they were checked for utf-8); make a new campaign"})
		}
		if len(errs) > 0 {
			s.noteCards(r.Context(), errs)
			return &InvalidError{Code: "invalid_campaign", Msg: "the campaign has invalid fields", Fields: errs}
		}
		for k := range patch {
			changed = append(changed, k)
		}
		slices.Sort(changed)
		nc.ID, nc.Kind, nc.CreatedAt = c.ID, c.Kind, c.CreatedAt
		nc.Status, nc.Counts, nc.LastUpload, nc.ScheduledAt = c.Status, c.Counts, c.LastUpload, c.ScheduledAt
		*c = nc
		return nil
	})
	if err != nil {
		s.draftError(w, r, err)
		return
	}
	details, _ := json.Marshal(map[string]any{"fields": changed})
	s.audit(r, store.AuditEntry{Action: "campaign.update", CampaignID: id, Details: details})
	writeJSON(w, http.StatusOK, c)
}

// jsonField names the field a JSON type error is about.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return te.Field
	}
	return "body"
}

// deleteCampaign answers DELETE /v1/campaigns/{id}: a draft goes with its
// recipients (a mistake, a test). A campaign that has started is part of
// the record of who was told what: cancel it, and purge its recipients'
// personal data when they are no longer needed (409 says so).
func (s *Server) deleteCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if err := s.store.DeleteDraft(r.Context(), id); err != nil {
		s.draftError(w, r, err)
		return
	}
	s.dropStartTask(r.Context(), c)
	details, _ := json.Marshal(map[string]any{"name": c.Name, "recipients": c.Counts.Total})
	s.audit(r, store.AuditEntry{Action: "campaign.delete", CampaignID: id, Details: details})
	w.WriteHeader(http.StatusNoContent)
}

// draftError answers a change refused because the campaign is no draft
// (409 not_draft, saying what it is) or invalid (422).
func (s *Server) draftError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotDraft) {
		writeError(w, http.StatusConflict, "not_draft", strings.TrimSuffix(err.Error(), ": "+store.ErrNotDraft.Error()), nil)
		return
	}
	s.supportError(w, r, err)
}
