package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// Template endpoints. Listing templates (names, descriptions, the fields
// each needs) shows no customer data: every role may. Previews render a
// whole notice — for a campaign possibly a real customer's — and are for
// admins, who create and start campaigns.

// previewRequest is the body of POST /v1/templates/{name}/preview. Data and
// Recipient default to the template's sample data and SampleRecipient.
type previewRequest struct {
	Locale     string                     `json:"locale"`
	Data       map[string]any             `json:"data"`
	Recipient  *app.NotificationRecipient `json:"recipient"`
	Charset    string                     `json:"charset"`
	Paragraphs []string                   `json:"extra_paragraphs"`
}

// Preview is a rendered notice as the preview endpoints return it.
type Preview struct {
	Template    string        `json:"template"`
	Locale      string        `json:"locale"`
	Charset     string        `json:"charset"`
	Recipient   string        `json:"recipient"` // "sample", "request" (given in the request) or the recipient id
	Subject     string        `json:"subject"`
	Text        string        `json:"text"`
	HTML        string        `json:"html"`
	CharsetOK   bool          `json:"charset_ok"`
	CharProblem []charProblem `json:"charset_problems,omitempty"`
}

// charProblem is a templates.CharProblem with the character spelled out.
type charProblem struct {
	Part string `json:"part"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Char string `json:"char"`
	Code string `json:"code"` // "U+2460"
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"templates": s.templates.List()})
}

func (s *Server) previewTemplate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.templates.Has(name) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("unknown template %s (see GET /v1/templates)", app.Quote(name)), nil)
		return
	}
	var req previewRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Locale == "" {
		req.Locale = notice.LocaleJA
	}
	if !notice.ValidLocale(req.Locale) {
		writeError(w, http.StatusBadRequest, "invalid", "locale must be ja or en", []fieldError{{Field: "locale", Error: "must be ja or en"}})
		return
	}
	charset, ok := normCharset(req.Charset)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid", "charset must be utf-8 or iso-2022-jp", []fieldError{{Field: "charset", Error: "must be utf-8 or iso-2022-jp"}})
		return
	}
	// A preview shows what it was given: a card number in it would come
	// straight back.
	var errs []fieldError
	bad := func(f, msg string, a ...any) {
		errs = append(errs, fieldError{Field: f, Error: fmt.Sprintf(msg, a...)})
	}
	app.CheckCardNumbers("data", req.Data, bad)
	for i, p := range req.Paragraphs {
		app.CheckCardNumbers(fmt.Sprintf("extra_paragraphs[%d]", i), p, bad)
	}
	if p := req.Recipient; p != nil {
		for _, f := range []struct{ name, v string }{{"email", p.Email}, {"name", p.Name}, {"locale", p.Locale},
			{"customer_id", p.CustomerID}, {"card_brand", p.CardBrand}, {"card_last4", p.CardLast4}} {
			app.CheckCardNumbers("recipient."+f.name, f.v, bad)
		}
		for k, v := range p.Extra {
			app.CheckCardNumbers("recipient.extra", k, bad)
			app.CheckCardNumbers("recipient.extra", v, bad)
		}
	}
	if len(errs) > 0 {
		s.app.NoteCards(r.Context(), errs)
		writeError(w, http.StatusUnprocessableEntity, "invalid", "the preview's input looks like it holds a full card number", errs)
		return
	}
	in, err := s.templates.Sample(name, req.Locale)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Data != nil {
		if err := s.templates.Validate(name, req.Data); err != nil {
			writeError(w, http.StatusUnprocessableEntity, "invalid_data", err.Error(), app.DataErrors(err))
			return
		}
		in.Data = req.Data
	}
	who := "sample"
	if p := req.Recipient; p != nil {
		in.Recipient = notice.Recipient{Email: p.Email, Name: p.Name, Locale: p.Locale, CustomerID: p.CustomerID,
			CardBrand: p.CardBrand, CardLast4: p.CardLast4, Extra: p.Extra}
		who = "request" // the recipient given in the request
	}
	in.Paragraphs = req.Paragraphs
	s.writePreview(w, name, in, charset, who)
}

// previewCampaign renders a campaign as its recipients will get it: with
// ?recipient_id= for that recipient, otherwise for SampleRecipient.
// ?locale= overrides the recipient's (or the campaign's default) locale.
func (s *Server) previewCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	locale := q.Get("locale")
	if locale != "" && !notice.ValidLocale(locale) {
		writeError(w, http.StatusBadRequest, "invalid", "locale must be ja or en", []fieldError{{Field: "locale", Error: "must be ja or en"}})
		return
	}
	who := "sample"
	var rcpt notice.Recipient
	if v := q.Get("recipient_id"); v != "" {
		rid, err := strconv.ParseInt(v, 10, 64)
		if err != nil || rid <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "recipient_id must be a positive integer", []fieldError{{Field: "recipient_id", Error: "must be a positive integer"}})
			return
		}
		rp, err := s.store.Recipient(r.Context(), id, rid)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		rcpt, who = *rp, strconv.FormatInt(rid, 10)
		if locale == "" {
			locale = rcpt.EffectiveLocale(c.DefaultLocale)
		}
		// Reading a customer's notice is reading their personal data.
		s.app.Audit(r.Context(), store.AuditEntry{Action: "campaign.preview", CampaignID: id, Recipient: rid})
	}
	if locale == "" {
		locale = c.DefaultLocale
	}
	if !notice.ValidLocale(locale) {
		locale = notice.LocaleJA
	}
	if who == "sample" {
		rcpt = templates.SampleRecipient(locale)
	}
	date := time.Now()
	if c.StartedAt != nil {
		date = *c.StartedAt
	}
	charset, _ := normCharset(c.Charset)
	s.writePreview(w, c.Template, templates.Input{Locale: locale, Data: c.Data, Recipient: rcpt, Paragraphs: c.Paragraphs, Date: date.In(c.Zone())}, charset, who)
}

func (s *Server) writePreview(w http.ResponseWriter, name string, in templates.Input, charset, who string) {
	out, err := s.templates.Render(name, in)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "render", err.Error(), nil)
		return
	}
	p := Preview{Template: name, Locale: in.Locale, Charset: charset, Recipient: who,
		Subject: out.Subject, Text: out.Text, HTML: out.HTML, CharsetOK: true}
	if err := templates.CheckCharset(out, charset); err != nil {
		var ce *templates.CharsetError
		if !errors.As(err, &ce) {
			writeError(w, http.StatusBadRequest, "invalid", err.Error(), nil)
			return
		}
		p.CharsetOK = false
		for _, pr := range ce.Problems {
			p.CharProblem = append(p.CharProblem, charProblem{Part: pr.Part, Line: pr.Line, Col: pr.Col,
				Char: string(pr.Char), Code: fmt.Sprintf("U+%04X", pr.Char)})
		}
	}
	writeJSON(w, http.StatusOK, p)
}

func normCharset(cs string) (string, bool) {
	switch strings.ToLower(cs) {
	case "", notice.CharsetUTF8, "utf8":
		return notice.CharsetUTF8, true
	case notice.CharsetISO2022JP:
		return notice.CharsetISO2022JP, true
	}
	return "", false
}
