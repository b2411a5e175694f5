package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// campaignRequest is the body of POST /v1/campaigns.
type campaignRequest struct {
	Name          string         `json:"name"`
	Template      string         `json:"template"`
	DefaultLocale string         `json:"default_locale"`
	From          string         `json:"from"`
	ReplyTo       string         `json:"reply_to"`
	Charset       string         `json:"charset"`
	Rate          float64        `json:"rate"`
	TimeZone      string         `json:"time_zone"`
	Paragraphs    []string       `json:"extra_paragraphs"`
	Data          map[string]any `json:"data"`
}

// fieldError is one problem with a request field.
type fieldError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

func (req *campaignRequest) validate(ts *templates.Set) []fieldError {
	var errs []fieldError
	bad := func(f, msg string, a ...any) { errs = append(errs, fieldError{f, fmt.Sprintf(msg, a...)}) }
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		bad("name", "required")
	} else if len(req.Name) > 200 || strings.ContainsAny(req.Name, "\r\n") {
		bad("name", "at most 200 characters on one line")
	} else if ingest.LooksLikeCardNumber(req.Name) {
		bad("name", "looks like a full card number; write at most the last 4 digits")
	}
	if req.Template == "" {
		req.Template = "card-reissue"
	}
	if !ts.Has(req.Template) {
		bad("template", "unknown template %q (see GET /v1/templates)", req.Template)
	}
	if req.DefaultLocale == "" {
		req.DefaultLocale = notice.LocaleJA
	}
	if !notice.ValidLocale(req.DefaultLocale) {
		bad("default_locale", "must be ja or en")
	}
	if err := checkAddress(req.From); err != nil {
		bad("from", "%v", err)
	} else if ingest.LooksLikeCardNumber(req.From) {
		bad("from", "looks like a full card number")
	}
	if req.ReplyTo != "" {
		if err := checkAddress(req.ReplyTo); err != nil {
			bad("reply_to", "%v", err)
		} else if ingest.LooksLikeCardNumber(req.ReplyTo) {
			bad("reply_to", "looks like a full card number")
		}
	}
	switch strings.ToLower(req.Charset) {
	case "", notice.CharsetUTF8, "utf8":
		req.Charset = notice.CharsetUTF8
	case notice.CharsetISO2022JP:
		req.Charset = notice.CharsetISO2022JP
	default:
		bad("charset", "must be utf-8 or iso-2022-jp")
	}
	if req.Charset == notice.CharsetISO2022JP {
		// The sender's display name goes in every message's header: a
		// character ISO-2022-JP cannot carry would fail every send.
		for _, f := range []struct{ name, v string }{{"from", req.From}, {"reply_to", req.ReplyTo}} {
			if a, err := mail.ParseAddress(f.v); err == nil {
				if c, i := templates.Uncarried(a.Name, req.Charset); i > 0 {
					bad(f.name, "display name: %s", templates.CharsetMessage(c, i))
				}
			}
		}
	}
	if req.TimeZone == "" {
		req.TimeZone = notice.DefaultTimeZone
	}
	if _, err := time.LoadLocation(req.TimeZone); err != nil || req.TimeZone == "Local" {
		bad("time_zone", "not an IANA time zone like Asia/Tokyo: %q", req.TimeZone)
	}
	if err := notice.CheckRate(req.Rate); err != nil {
		bad("rate", "%v", err)
	}
	for i, p := range req.Paragraphs {
		if ingest.LooksLikeCardNumber(p) {
			bad(fmt.Sprintf("extra_paragraphs[%d]", i), "looks like a full card number; a notice may show the last 4 digits at most")
		}
	}
	if req.Data == nil {
		bad("data", "required")
	} else {
		checkCardNumbers("data", req.Data, bad)
		if ts.Has(req.Template) && len(errs) == 0 {
			c := req.campaign()
			if err := ts.ValidateCampaign(&c); err != nil {
				bad("data", "%v", err)
			}
		}
	}
	return errs
}

// checkCardNumbers walks incident data: a full card number has no place in
// a notice, whatever field it hides in.
func checkCardNumbers(path string, v any, bad func(string, string, ...any)) {
	switch x := v.(type) {
	case string:
		if ingest.LooksLikeCardNumber(x) {
			bad(path, "looks like a full card number; a notice may show the last 4 digits at most")
		}
	case []any:
		for i, e := range x {
			checkCardNumbers(fmt.Sprintf("%s[%d]", path, i), e, bad)
		}
	case map[string]any:
		for k, e := range x {
			checkCardNumbers(path+"."+k, e, bad)
		}
	}
}

func (req *campaignRequest) campaign() notice.Campaign {
	return notice.Campaign{
		Name: req.Name, Template: req.Template, DefaultLocale: req.DefaultLocale, From: req.From,
		ReplyTo: req.ReplyTo, Charset: req.Charset, Rate: req.Rate, TimeZone: req.TimeZone, Paragraphs: req.Paragraphs, Data: req.Data,
	}
}

func checkAddress(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("must be one line")
	}
	if _, err := mail.ParseAddress(s); err != nil {
		return fmt.Errorf("not an address: %v", err)
	}
	return nil
}

func (s *Server) createCampaign(w http.ResponseWriter, r *http.Request) {
	var req campaignRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if errs := req.validate(s.templates); len(errs) > 0 {
		writeError(w, http.StatusUnprocessableEntity, "invalid_campaign", "the campaign has invalid fields", errs)
		return
	}
	c := req.campaign()
	if err := s.store.CreateCampaign(r.Context(), &c); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.audit(r, store.AuditEntry{Action: "campaign.create", CampaignID: c.ID})
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) getCampaign(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.Campaign(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, campaignView{Campaign: c, Progress: progressOf(c, time.Now())})
}

// campaignView is a campaign as GET /v1/campaigns/{id} shows it.
type campaignView struct {
	*notice.Campaign
	Progress *progress `json:"progress,omitempty"`
}

// progress is how a sending campaign drains, for operators watching it:
// recipients done (sent, failed, suppressed or cancelled), the average rate
// since it started, and when it will be done at that rate.
type progress struct {
	Done          int64    `json:"done"`
	RatePerSecond float64  `json:"rate_per_second"`
	ETASeconds    *float64 `json:"eta_seconds,omitempty"`
}

func progressOf(c *notice.Campaign, now time.Time) *progress {
	if c.Status != notice.CampaignSending || c.StartedAt == nil {
		return nil
	}
	n := c.Counts
	p := &progress{Done: n.Sent + n.Failed + n.Suppressed + n.Cancelled}
	if d := now.Sub(*c.StartedAt).Seconds(); d > 0 {
		p.RatePerSecond = math.Round(float64(p.Done)/d*10) / 10
	}
	if p.RatePerSecond > 0 {
		eta := math.Ceil(float64(n.Total-p.Done) / p.RatePerSecond)
		p.ETASeconds = &eta
	}
	return p
}

func (s *Server) listCampaigns(w http.ResponseWriter, r *http.Request) {
	offset, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	limit, _ := strconv.ParseInt(r.URL.Query().Get("limit"), 10, 64)
	if limit <= 0 || limit > 200 {
		limit = 50
	}
	cs, err := s.store.Campaigns(r.Context(), max(offset, 0), limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"campaigns": cs})
}

// maxScheduleAhead bounds how far ahead a start may be scheduled: further
// is more likely a typo in the year than a plan.
const maxScheduleAhead = 90 * 24 * time.Hour

// startCampaign starts a campaign now, or with {"at": RFC 3339 time} at
// that time: a breach notice should go out when the hotline is open and
// the press release is out, not at 3 a.m. Starting now moves a draft to
// sending and enqueues its fan-out; calling it again re-enqueues the same
// fan-out task id, which asynq refuses or which resumes from its cursor:
// nothing is sent twice either way.
func (s *Server) startCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req struct {
		At *time.Time `json:"at"`
	}
	if !decodeOptionalJSON(w, r, &req) {
		return
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if c.Charset == notice.CharsetISO2022JP {
		if problems := s.charsetProblems(c); problems != nil {
			writeError(w, http.StatusUnprocessableEntity, "charset", "the notice has characters ISO-2022-JP cannot carry", problems)
			return
		}
	}
	if now := time.Now(); req.At != nil && req.At.Before(now.Add(-time.Minute)) {
		// A mistyped year must not send a breach notice on the spot.
		writeError(w, http.StatusUnprocessableEntity, "invalid", "at is in the past; leave it out to start now",
			[]fieldError{{"at", "in the past (" + req.At.Format(time.RFC3339) + ")"}})
		return
	}
	if now := time.Now(); req.At != nil && req.At.After(now.Add(time.Second)) {
		if req.At.After(now.Add(maxScheduleAhead)) {
			writeError(w, http.StatusUnprocessableEntity, "invalid", "at is more than 90 days ahead", []fieldError{{"at", "more than 90 days ahead"}})
			return
		}
		s.schedule(w, r, c, req.At.Truncate(time.Millisecond))
		return
	}
	t, err := s.store.Start(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if t.Changed {
		s.dropStartTask(r.Context(), c)
	}
	if t.Status == notice.CampaignSending {
		if err := tasks.Fanout(r.Context(), s.queue, id, t.Gen); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	if t.Changed {
		s.audit(r, store.AuditEntry{Action: "campaign.start", CampaignID: id})
	}
	s.campaignAnswer(w, r, id, http.StatusAccepted)
}

// charsetProblems renders the campaign for both locales with a sample
// recipient and reports what ISO-2022-JP cannot carry.
func (s *Server) charsetProblems(c *notice.Campaign) any {
	var out []string
	for _, loc := range []string{notice.LocaleJA, notice.LocaleEN} {
		rd, err := s.templates.Render(c.Template, templates.Input{Locale: loc, Data: c.Data, Recipient: templates.SampleRecipient(loc), Paragraphs: c.Paragraphs})
		if err != nil {
			out = append(out, loc+": "+err.Error())
			continue
		}
		if err := templates.CheckCharset(rd, c.Charset); err != nil {
			out = append(out, loc+": "+err.Error())
		}
	}
	if out == nil {
		return nil
	}
	return out
}

func (s *Server) pauseCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "campaign.pause", s.store.Pause)
}

func (s *Server) resumeCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "campaign.resume", s.store.Resume)
}

func (s *Server) cancelCampaign(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "campaign.cancel", s.store.Cancel)
}

func (s *Server) move(w http.ResponseWriter, r *http.Request, action string, fn func(context.Context, string) (store.Transition, error)) {
	id := r.PathValue("id")
	t, err := fn(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if t.Changed {
		var reason string
		if r.ContentLength > 0 {
			var body struct {
				Reason string `json:"reason"`
			}
			json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body)
			reason = body.Reason
		}
		s.audit(r, store.AuditEntry{Action: action, CampaignID: id, Reason: reason})
		if t.Status == notice.CampaignSending { // resumed: a new generation fans out what is left
			if err := tasks.Fanout(r.Context(), s.queue, id, t.Gen); err != nil {
				s.storeError(w, r, err)
				return
			}
		}
	}
	s.campaignAnswer(w, r, id, http.StatusOK)
}

// schedule has a draft start by itself at at. The start task goes first:
// should recording the schedule then fail (the campaign is no draft), the
// task finds no schedule of its time and does nothing.
func (s *Server) schedule(w http.ResponseWriter, r *http.Request, c *notice.Campaign, at time.Time) {
	id := c.ID
	if err := tasks.StartAt(r.Context(), s.queue, id, at); err != nil {
		s.storeError(w, r, err)
		return
	}
	if err := s.store.Schedule(r.Context(), id, &at); err != nil {
		s.storeError(w, r, err)
		return
	}
	if c.ScheduledAt != nil && !c.ScheduledAt.Equal(at) {
		s.dropStartTask(r.Context(), c)
	}
	details, _ := json.Marshal(map[string]string{"at": at.UTC().Format(time.RFC3339)})
	s.audit(r, store.AuditEntry{Action: "campaign.schedule", CampaignID: id, Details: details})
	s.campaignAnswer(w, r, id, http.StatusAccepted)
}

// unscheduleCampaign clears a draft's scheduled start.
func (s *Server) unscheduleCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if err := s.store.Schedule(r.Context(), id, nil); err != nil {
		s.storeError(w, r, err)
		return
	}
	if c.ScheduledAt != nil { // unscheduling what was not scheduled changes nothing
		s.dropStartTask(r.Context(), c)
		s.audit(r, store.AuditEntry{Action: "campaign.unschedule", CampaignID: id})
	}
	s.campaignAnswer(w, r, id, http.StatusOK)
}

// dropStartTask deletes the asynq task of c's previous schedule, so that
// operators do not see a start in the queue that will not happen. The task
// would do nothing anyway (it checks the schedule), so a failure is only
// logged.
func (s *Server) dropStartTask(ctx context.Context, c *notice.Campaign) {
	if c.ScheduledAt == nil {
		return
	}
	insp := asynq.NewInspectorFromRedisClient(s.store.Redis())
	err := insp.DeleteTask(notice.QueueUrgent, tasks.StartID(c.ID, *c.ScheduledAt))
	if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		s.log.Warn("could not delete a replaced start task", "campaign", c.ID, "err", err)
	}
}

func (s *Server) campaignAnswer(w http.ResponseWriter, r *http.Request, id string, status int) {
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, status, c)
}

// purgeCampaign removes the personal data of a done or cancelled campaign's
// recipients (see store.Purge) once it is no longer needed — after the
// delivery report has been kept, say. The campaign, its counts and the
// audit log stay. A reason is required: it is the record of why.
func (s *Server) purgeCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req struct {
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "a reason is required", []fieldError{{"reason", "required"}})
		return
	}
	if fe := cardInText("reason", req.Reason); fe != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "the reason looks like it holds a full card number", fe)
		return
	}
	if c, err := s.store.Campaign(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	} else if c.PurgedAt != nil {
		// Once is the record: a second purge would only move its time.
		writeError(w, http.StatusConflict, "already_purged", "campaign "+id+" was purged at "+c.PurgedAt.UTC().Format(time.RFC3339), nil)
		return
	}
	n, err := s.store.Purge(r.Context(), id)
	if n > 0 || err == nil {
		details, _ := json.Marshal(map[string]any{"recipients": n, "complete": err == nil})
		s.audit(r, store.AuditEntry{Action: "campaign.purge", CampaignID: id, Reason: req.Reason, Details: details})
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n, "campaign": c})
}
