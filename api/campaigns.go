package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// createCampaign answers POST /v1/campaigns: 201 with the draft.
func (s *Server) createCampaign(w http.ResponseWriter, r *http.Request) {
	var req app.CampaignRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	c, err := s.app.CreateCampaign(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/campaigns/"+c.ID)
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) getCampaign(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.Campaign(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.sentNeverBack(c)
	var samples []store.Sample
	if c.Status == notice.CampaignSending {
		wv, err := s.store.Watch(r.Context(), c.ID)
		if err != nil {
			// The ETA falls back to the average since the start.
			s.log.Warn("campaign progress samples", "campaign", c.ID, "err", err)
		}
		samples = wv.Samples
	}
	now := time.Now()
	writeJSON(w, http.StatusOK, campaignView{Campaign: c, Progress: app.ProgressOf(c, now, samples), Reach: reachOf(c, now, s.cfg.BounceWindow)})
}

// sentNeverBack keeps the sent count this process shows from going down.
// A Redis failover can lose a "sent" the old primary acknowledged (and
// this process read) before its replica had it: the worker writes it again
// on the new primary within seconds (REDIS_WAIT_REPLICAS), or sends the
// recipient again, and either way it ends sent. Meanwhile the count shown
// stays at its highest, the difference taken from the open counts, so
// the counts still add up to the total.
func (s *Server) sentNeverBack(c *notice.Campaign) {
	n := &c.Counts
	for {
		v, loaded := s.sentSeen.LoadOrStore(c.ID, n.Sent)
		seen := v.(int64)
		if !loaded || n.Sent == seen {
			return
		}
		if n.Sent > seen {
			if s.sentSeen.CompareAndSwap(c.ID, seen, n.Sent) {
				return
			}
			continue
		}
		short := seen - n.Sent
		for _, open := range []*int64{&n.Sending, &n.Retrying, &n.Pending} {
			take := min(*open, short)
			*open -= take
			short -= take
		}
		n.Sent = seen - short
		return
	}
}

// campaignView is a campaign as GET /v1/campaigns/{id} shows it.
type campaignView struct {
	*notice.Campaign
	Progress *app.Progress `json:"progress,omitempty"`
	// Reach says who was told: reached, not_reached, unknown (see reachOf).
	Reach *reach `json:"reach,omitempty"`
}

// listCampaigns answers GET /v1/campaigns?status=&limit=&cursor=, newest
// first.
func (s *Server) listCampaigns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var want notice.CampaignStatus
	if v := q.Get("status"); v != "" {
		want = notice.CampaignStatus(v)
		if !slices.Contains(campaignStatuses, want) {
			msg := fmt.Sprintf("unknown campaign status %s (want one of draft, sending, paused, done, cancelled)", app.Quote(v))
			writeError(w, http.StatusBadRequest, "bad_status", msg, []fieldError{{Field: "status", Error: msg}})
			return
		}
	}
	limit, ok := pageLimit(w, q, 50, 200)
	if !ok {
		return
	}
	cursor := q.Get("cursor")
	if _, _, err := store.ParseCampaignCursor(cursor); cursor != "" && err != nil {
		badCursor(w, cursor)
		return
	}
	page, err := s.store.Campaigns(r.Context(), cursor, limit, want)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, c := range page.Campaigns {
		s.sentNeverBack(c)
	}
	writeJSON(w, http.StatusOK, map[string]any{"campaigns": page.Campaigns, "next_cursor": nextCursor(page.Next)})
}

var campaignStatuses = []notice.CampaignStatus{notice.CampaignDraft, notice.CampaignSending, notice.CampaignPaused, notice.CampaignDone, notice.CampaignCancelled}

// startCampaign answers POST /v1/campaigns/{id}/start: now, or with
// {"at": RFC 3339 time} at that time (app.Start).
func (s *Server) startCampaign(w http.ResponseWriter, r *http.Request) {
	var req struct {
		// Raw, to tell {"at":null} from no "at": null used to mean "now",
		// and a client that meant a time but sent null must not send at once.
		At json.RawMessage `json:"at"`
	}
	if !decodeOptionalJSON(w, r, &req) {
		return
	}
	var at *time.Time
	if len(req.At) > 0 {
		if string(req.At) == "null" {
			writeError(w, http.StatusUnprocessableEntity, "invalid", "at is null; leave it out to start now, or give a time",
				[]fieldError{{Field: "at", Error: "null: leave it out to start now, or give an RFC 3339 time"}})
			return
		}
		at = new(time.Time)
		if err := json.Unmarshal(req.At, at); err != nil {
			writeError(w, http.StatusBadRequest, "bad_json", "request body: at: "+err.Error(),
				[]fieldError{{Field: "at", Error: "not an RFC 3339 time (like 2026-12-01T09:00:00+09:00): " + err.Error()}})
			return
		}
	}
	c, err := s.app.Start(r.Context(), r.PathValue("id"), at)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, c)
}

func (s *Server) pauseCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, s.app.Pause)
}

func (s *Server) resumeCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, s.app.Resume)
}

func (s *Server) cancelCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, s.app.Cancel)
}

// move answers pause, resume and cancel, whose optional body is
// {"reason": "…"} for the audit log.
func (s *Server) move(w http.ResponseWriter, r *http.Request, fn func(ctx context.Context, id, reason string) (*notice.Campaign, error)) {
	var reason string
	if r.ContentLength > 0 {
		var body struct {
			Reason string `json:"reason"`
		}
		json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body)
		reason = body.Reason
	}
	c, err := fn(r.Context(), r.PathValue("id"), reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// unscheduleCampaign answers DELETE /v1/campaigns/{id}/schedule.
func (s *Server) unscheduleCampaign(w http.ResponseWriter, r *http.Request) {
	c, err := s.app.Unschedule(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// purgeCampaign answers POST /v1/campaigns/{id}/purge {"reason"}
// (app.Purge).
func (s *Server) purgeCampaign(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	n, c, err := s.app.Purge(r.Context(), r.PathValue("id"), req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n, "campaign": c})
}
