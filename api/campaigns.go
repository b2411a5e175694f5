package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
)

// campaignRequest is the body of POST /v1/campaigns.
type campaignRequest struct {
	Name          string         `json:"name"`
	Template      string         `json:"template"`
	DefaultLocale string         `json:"default_locale"`
	From          senderField    `json:"from"`
	ReplyTo       string         `json:"reply_to"`
	Charset       string         `json:"charset"`
	Rate          float64        `json:"rate"`
	TimeZone      string         `json:"time_zone"`
	Paragraphs    []string       `json:"extra_paragraphs"`
	Data          map[string]any `json:"data"`
}

// senderField is "from": an address with its display name
// ("株式会社サンプル <notice@example.jp>"), or one per locale
// ({"ja": "株式会社サンプル <notice@example.jp>", "en": "Sample Co., Ltd. <notice@example.jp>"})
// so that English readers see an English name. The address must be the
// same in every locale: it is the envelope sender and DKIM's d= for all.
type senderField struct {
	one      string
	byLocale map[string]string
}

func (f *senderField) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &f.one); err == nil {
		return nil
	}
	if err := json.Unmarshal(b, &f.byLocale); err != nil {
		return errors.New(`"from" must be an address or one per locale: {"ja": "…", "en": "…"}`)
	}
	return nil
}

// fieldError is one problem with a request field.
type fieldError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

// namedValue is a request value with the name errors give it.
type namedValue struct{ name, v string }

// froms lists the sender addresses given, named as errors name them.
func (req *campaignRequest) froms() []namedValue {
	if req.From.byLocale == nil {
		return []namedValue{{"from", req.From.one}}
	}
	var out []namedValue
	for _, loc := range templates.Locales {
		out = append(out, namedValue{"from." + loc, req.From.byLocale[loc]})
	}
	return out
}

// validate checks a campaign request; dkimDomains are the domains the
// service signs for (none: signing is off and alignment is not checked).
func (req *campaignRequest) validate(ts *templates.Set, dkimDomains []string) []fieldError {
	var errs []fieldError
	bad := func(f, msg string, a ...any) { errs = append(errs, fieldError{f, fmt.Sprintf(msg, a...)}) }
	for k := range req.From.byLocale {
		if !notice.ValidLocale(k) {
			bad("from."+k, "unknown locale (a sender per locale is keyed ja and en)")
		}
	}
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
		bad("template", "unknown template %s (see GET /v1/templates)", quoted(req.Template))
	}
	if req.DefaultLocale == "" {
		req.DefaultLocale = notice.LocaleJA
	}
	if !notice.ValidLocale(req.DefaultLocale) {
		bad("default_locale", "must be ja or en")
	}
	froms := req.froms()
	var fromAddr string
	for _, f := range froms {
		if err := checkAddress(f.v); err != nil {
			bad(f.name, "%v", err)
			continue
		} else if ingest.LooksLikeCardNumber(f.v) {
			bad(f.name, "looks like a full card number")
			continue
		}
		a, _ := mail.ParseAddress(f.v)
		if fromAddr == "" {
			fromAddr = a.Address
		} else if !strings.EqualFold(a.Address, fromAddr) {
			bad(f.name, "address %s differs from %s: only the display name may change with the locale", a.Address, fromAddr)
		}
	}
	if fromAddr != "" && len(dkimDomains) > 0 {
		// DMARC passes on DKIM only when d= is the From domain (or a
		// parent of it): a notice signed for another domain fails DMARC
		// at Gmail and Yahoo, and lands in spam or is rejected.
		domain := fromAddr[strings.LastIndexByte(fromAddr, '@')+1:]
		if !slices.ContainsFunc(dkimDomains, func(d string) bool { return mailer.Aligned(domain, d) }) {
			bad("from", "domain %s has no DKIM key (signing domains: %s): a notice signed with d=%s fails DMARC alignment at Gmail and Yahoo; send from an address at a signing domain, or add a key for %s to DKIM_KEYS",
				domain, strings.Join(dkimDomains, ", "), dkimDomains[0], domain)
		}
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
		for _, f := range append(froms, namedValue{"reply_to", req.ReplyTo}) {
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
		bad("time_zone", "not an IANA time zone like Asia/Tokyo: %s", quoted(req.TimeZone))
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
			errs = append(errs, dataErrors(ts.ValidateCampaign(&c))...)
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

// dataErrors turns a template's verdict on campaign data into field
// errors: one per data field ("data.cause": "is required: APPI …"), so
// that a 422 names every missing or bad item.
func dataErrors(err error) []fieldError {
	if err == nil {
		return nil
	}
	var de *templates.DataError
	if errors.As(err, &de) {
		out := make([]fieldError, 0, len(de.Fields))
		for _, f := range de.Fields {
			out = append(out, fieldError{"data." + f.Field, f.Reason})
		}
		return out
	}
	return []fieldError{{"data", err.Error()}}
}

func (req *campaignRequest) campaign() notice.Campaign {
	c := notice.Campaign{
		Name: req.Name, Template: req.Template, DefaultLocale: req.DefaultLocale, From: req.From.one,
		ReplyTo: req.ReplyTo, Charset: req.Charset, Rate: req.Rate, TimeZone: req.TimeZone, Paragraphs: req.Paragraphs, Data: req.Data,
	}
	if req.From.byLocale != nil {
		c.From, c.FromLocales = req.From.byLocale[notice.LocaleJA], req.From.byLocale
	}
	return c
}

// checkAddress checks a sender (from, reply_to): one mailbox, with or
// without a display name, that mail can come from.
func checkAddress(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("must be one line")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		if name, _, ok := strings.Cut(s, "<"); ok && strings.ContainsAny(name, ",.;:@") && !strings.Contains(name, `"`) {
			return fmt.Errorf("not an address: %v (a display name with , . ; : or @ goes in double quotes: \"Sample Co., Ltd.\" <notice@example.jp>)", err)
		}
		return fmt.Errorf("not an address: %v", err)
	}
	domain := a.Address[strings.LastIndexByte(a.Address, '@')+1:]
	switch {
	case ingest.IPDomain(domain):
		// Receiving servers distrust mail from an IP literal (no SPF, no
		// DKIM, no DMARC): a breach notice from one reads like phishing.
		return errors.New("the domain is an IP address; notices must come from a domain name")
	case !isASCII(a.Address):
		return errors.New("the address must be ASCII (an internationalised domain in its xn-- form)")
	case ingest.HasEncodedWord(s):
		// Mail programs would decode it into other text, an address even.
		return errors.New("the display name is a MIME encoded-word (=?…?=); give it as plain text")
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// quoted is v in Go quotes for a message, card numbers masked first: %q
// would spell a thin space as \u2009, past the mask in writeError.
func quoted(v string) string { return strconv.Quote(ingest.MaskCardNumbers(v)) }

func (s *Server) createCampaign(w http.ResponseWriter, r *http.Request) {
	var req campaignRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if errs := req.validate(s.templates, s.cfg.DKIMDomains); len(errs) > 0 {
		s.noteCards(r.Context(), errs)
		writeError(w, http.StatusUnprocessableEntity, "invalid_campaign", "the campaign has invalid fields", errs)
		return
	}
	c := req.campaign()
	if err := s.store.CreateCampaign(r.Context(), &c); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.audit(r, store.AuditEntry{Action: "campaign.create", CampaignID: c.ID})
	w.Header().Set("Location", "/v1/campaigns/"+c.ID)
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) getCampaign(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.Campaign(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
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
	writeJSON(w, http.StatusOK, campaignView{Campaign: c, Progress: progressOf(c, now, samples), Reach: reachOf(c, now, s.cfg.BounceWindow)})
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
	Progress *progress `json:"progress,omitempty"`
	// Reach says who was told: reached, not_reached, unknown (see reachOf).
	Reach *reach `json:"reach,omitempty"`
}

// progress is how a sending campaign drains, for operators watching it:
// recipients done (sent, failed, suppressed or cancelled), the recent rate
// and when it will be done at that rate.
type progress struct {
	Done int64 `json:"done"`
	// RatePerSecond is the rate of the last RateWindowSeconds (recipients
	// done per second, from the watchdog's samples): after an outage or a
	// pause it is the rate now, not the average since the start, which
	// would still carry the outage. Without samples (no worker has swept
	// the campaign yet) it is the average since the start.
	RatePerSecond     float64  `json:"rate_per_second"`
	RateWindowSeconds float64  `json:"rate_window_seconds"`
	AverageRate       float64  `json:"average_rate_per_second"` // since the start
	ETASeconds        *float64 `json:"eta_seconds,omitempty"`
}

// rateWindow is how far back the ETA's rate looks: long enough to smooth a
// chunk's stop-and-go, short enough that minutes after an outage the ETA
// says the truth.
const rateWindow = 2 * time.Minute

// minRateSpan is the least span of samples the recent rate is taken over;
// shorter, the average since the start is used.
const minRateSpan = 20 * time.Second

func progressOf(c *notice.Campaign, now time.Time, samples []store.Sample) *progress {
	if c.Status != notice.CampaignSending || c.StartedAt == nil {
		return nil
	}
	n := c.Counts
	p := &progress{Done: n.Done()}
	if d := now.Sub(*c.StartedAt).Seconds(); d > 0 {
		p.AverageRate = math.Round(float64(p.Done)/d*10) / 10
		p.RatePerSecond, p.RateWindowSeconds = p.AverageRate, math.Round(d)
	}
	if rate, span, ok := recentRate(samples, now, p.Done); ok {
		p.RatePerSecond, p.RateWindowSeconds = math.Round(rate*10)/10, math.Round(span.Seconds())
		if p.RatePerSecond == 0 && rate > 0 {
			p.RatePerSecond = rate // slower than 0.05/s: do not round it away
		}
	}
	if p.RatePerSecond > 0 {
		eta := math.Ceil(float64(n.Total-p.Done) / p.RatePerSecond)
		p.ETASeconds = &eta
	}
	return p
}

// recentRate is the rate of recipients done over the last rateWindow: from
// the oldest sample in the window to now, when done is the count now. ok is
// false when the samples span less than minRateSpan.
func recentRate(samples []store.Sample, now time.Time, done int64) (rate float64, span time.Duration, ok bool) {
	from := now.Add(-rateWindow)
	for _, s := range samples {
		if s.At.Before(from) || s.At.After(now) {
			continue
		}
		span = now.Sub(s.At)
		if span < minRateSpan || done < s.Done {
			return 0, 0, false
		}
		return float64(done-s.Done) / span.Seconds(), span, true
	}
	return 0, 0, false
}

// listCampaigns answers GET /v1/campaigns?status=&limit=&cursor=, newest
// first.
func (s *Server) listCampaigns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var want notice.CampaignStatus
	if v := q.Get("status"); v != "" {
		want = notice.CampaignStatus(v)
		if !slices.Contains(campaignStatuses, want) {
			msg := fmt.Sprintf("unknown campaign status %s (want one of draft, sending, paused, done, cancelled)", quoted(v))
			writeError(w, http.StatusBadRequest, "bad_status", msg, []fieldError{{"status", msg}})
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
		s.storeError(w, r, err)
		return
	}
	for _, c := range page.Campaigns {
		s.sentNeverBack(c)
	}
	writeJSON(w, http.StatusOK, map[string]any{"campaigns": page.Campaigns, "next_cursor": nextCursor(page.Next)})
}

var campaignStatuses = []notice.CampaignStatus{notice.CampaignDraft, notice.CampaignSending, notice.CampaignPaused, notice.CampaignDone, notice.CampaignCancelled}

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
				[]fieldError{{"at", "null: leave it out to start now, or give an RFC 3339 time"}})
			return
		}
		at = new(time.Time)
		if err := json.Unmarshal(req.At, at); err != nil {
			writeError(w, http.StatusBadRequest, "bad_json", "request body: at: "+err.Error(),
				[]fieldError{{"at", "not an RFC 3339 time (like 2026-12-01T09:00:00+09:00): " + err.Error()}})
			return
		}
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if c.Status == notice.CampaignDraft {
		// A draft made before a template required more (cause and
		// secondary_harm, which APPI requires) must not go out without it.
		if errs := dataErrors(s.templates.Validate(c.Template, c.Data)); errs != nil {
			writeError(w, http.StatusUnprocessableEntity, "invalid_campaign", "the campaign's data lacks what the notice must state; fix it in a new campaign", errs)
			return
		}
	}
	if c.Status == notice.CampaignDraft && c.Counts.Total == 0 {
		// Started, it would be done at once and for ever: an upload that
		// failed or went to another campaign should be noticed now.
		writeError(w, http.StatusUnprocessableEntity, "no_recipients",
			"campaign "+id+" has no recipients; upload them (POST /v1/campaigns/"+id+"/recipients) before starting", nil)
		return
	}
	if c.Charset == notice.CharsetISO2022JP {
		if problems := s.charsetProblems(c); problems != nil {
			writeError(w, http.StatusUnprocessableEntity, "charset", "the notice has characters ISO-2022-JP cannot carry", problems)
			return
		}
	}
	if now := time.Now(); at != nil && at.Before(now.Add(-time.Minute)) {
		// A mistyped year must not send a breach notice on the spot.
		writeError(w, http.StatusUnprocessableEntity, "invalid", "at is in the past; leave it out to start now",
			[]fieldError{{"at", "in the past (" + at.Format(time.RFC3339) + ")"}})
		return
	}
	if c.Status == notice.CampaignDraft {
		// Starting again (a no-op) or resuming costs nothing; a new
		// start of a draft, now or scheduled, takes from the key's quota.
		if err := s.quota(r.Context(), limitStarts); err != nil {
			s.supportError(w, r, err)
			return
		}
	}
	if now := time.Now(); at != nil && at.After(now.Add(time.Second)) {
		if at.After(now.Add(maxScheduleAhead)) {
			writeError(w, http.StatusUnprocessableEntity, "invalid", "at is more than 90 days ahead", []fieldError{{"at", "more than 90 days ahead"}})
			return
		}
		s.schedule(w, r, c, at.Truncate(time.Millisecond))
		return
	}
	// Recipients a failed upload stored but left out of the look-up index
	// go in now: support must find everyone a campaign sends to.
	if c.Status == notice.CampaignDraft {
		if err := s.store.RepairIndex(r.Context(), id); err != nil {
			s.unavailable(w, r, "the campaign could not be started (server problem); it is still a draft; try again later", err, nil)
			return
		}
	}
	t, err := s.store.Start(r.Context(), id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidMove) {
			s.storeError(w, r, err)
			return
		}
		// Redis refused (out of memory, away): the status change is one
		// script, so the campaign is still what it was.
		s.unavailable(w, r, "the campaign could not be started (server problem); it is still "+string(c.Status)+"; try again later", err, nil)
		return
	}
	if t.Changed {
		s.dropStartTask(r.Context(), c)
	}
	if t.Status == notice.CampaignSending {
		if err := tasks.Fanout(r.Context(), s.queue, id, t.Gen); err != nil {
			// The campaign is sending but its fan-out is not queued. Say
			// so: a start again queues it (the watchdog also does within a
			// minute); nothing is sent twice either way.
			if t.Changed {
				s.audit(r, store.AuditEntry{Action: "campaign.start", CampaignID: id})
			}
			s.log.Error("start: fan-out not queued", "campaign", id, "err", err)
			cur, _ := s.store.Campaign(context.WithoutCancel(r.Context()), id)
			writeError(w, http.StatusServiceUnavailable, "start_incomplete",
				"the campaign is marked sending, but its sending could not be queued (server problem); call start again to complete it", cur)
			return
		}
	}
	if t.Changed {
		s.audit(r, store.AuditEntry{Action: "campaign.start", CampaignID: id})
		s.lifecycle(r, "campaign started", id, "status", string(t.Status), "recipients", c.Counts.Total)
		s.emit(webhooks.CampaignStarted, id, string(t.Status))
	}
	s.campaignAnswer(w, r, id, http.StatusAccepted)
}

// charsetProblems renders the campaign for both locales with a sample
// recipient and reports what ISO-2022-JP cannot carry.
func (s *Server) charsetProblems(c *notice.Campaign) []fieldError {
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
	// One entry for the one field at fault: the charset the campaign chose.
	return []fieldError{{"charset", strings.Join(out, "; ")}}
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

// moveLogs is the log line of each move.
var moveLogs = map[string]string{
	"campaign.pause": "campaign paused", "campaign.resume": "campaign resumed", "campaign.cancel": "campaign cancelled",
}

// moveEvents names the status webhook event of each move.
var moveEvents = map[string]string{
	"campaign.pause": webhooks.CampaignPaused, "campaign.resume": webhooks.CampaignResumed, "campaign.cancel": webhooks.CampaignCancelled,
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
		s.lifecycle(r, moveLogs[action], id, "status", string(t.Status))
		s.emit(moveEvents[action], id, string(t.Status))
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
	s.lifecycle(r, "campaign scheduled", id, "at", at.UTC().Format(time.RFC3339))
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
	err := insp.DeleteTask(tasks.QueueUrgent, tasks.StartID(c.ID, *c.ScheduledAt))
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
	if fe := s.cardInText(r.Context(), "reason", req.Reason); fe != nil {
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
	if err := s.dropLostDeliveries(r.Context(), id); err != nil {
		s.storeError(w, r, err)
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
	s.emit(webhooks.CampaignPurged, id, "purged")
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n, "campaign": c})
}

// dropLostDeliveries forgets the campaign's outstanding resends and single
// notices (see store.TrackDelivery) that are past their deadline and whose
// task asynq no longer holds, or holds archived: lost with a crashed Redis,
// deleted by an operator, or given up. One whose task is still queued,
// scheduled, retrying or running stays, and the purge waits for it,
// however late it is (workers that were down for an hour).
func (s *Server) dropLostDeliveries(ctx context.Context, cid string) error {
	out, err := s.store.OutstandingDeliveries(ctx, cid)
	if err != nil {
		return err
	}
	now := time.Now()
	var insp *asynq.Inspector
	for _, o := range out {
		if o.Until.After(now) {
			continue
		}
		if insp == nil {
			insp = asynq.NewInspectorFromRedisClient(s.store.Redis())
		}
		info, err := insp.GetTaskInfo(tasks.QueueUrgent, o.TaskID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound),
			err == nil && (info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted):
			s.log.Warn("purge: forgetting a resend or notice whose task is gone", "campaign", cid, "task", o.TaskID)
			if err := s.store.DropStaleDelivery(ctx, cid, o); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("look up task %s: %w", o.TaskID, err)
		}
	}
	return nil
}
