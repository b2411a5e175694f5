package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// Previews render a whole notice — for a campaign possibly a real
// customer's — so that a person reads it before thousands of copies leave.

// PreviewRequest is a template preview's input: the body of POST
// /v1/templates/{name}/preview. Data and Recipient default to the
// template's sample data and SampleRecipient.
type PreviewRequest struct {
	Locale     string                 `json:"locale"`
	Data       map[string]any         `json:"data"`
	Recipient  *NotificationRecipient `json:"recipient"`
	Charset    string                 `json:"charset"`
	Paragraphs []string               `json:"extra_paragraphs"`
}

// Preview is a rendered notice.
type Preview struct {
	Template    string        `json:"template"`
	Locale      string        `json:"locale"`
	Charset     string        `json:"charset"`
	Recipient   string        `json:"recipient"` // "sample", "request" (given in the request) or the recipient id
	Subject     string        `json:"subject"`
	Text        string        `json:"text"`
	HTML        string        `json:"html"`
	CharsetOK   bool          `json:"charset_ok"`
	CharProblem []CharProblem `json:"charset_problems,omitempty"`
}

// CharProblem is a templates.CharProblem with the character spelled out.
type CharProblem struct {
	Part string `json:"part"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Char string `json:"char"`
	Code string `json:"code"` // "U+2460"
}

// PreviewTemplate renders template name with the request's data and
// recipient, or the template's samples.
func (a *App) PreviewTemplate(ctx context.Context, name string, req PreviewRequest) (*Preview, error) {
	if !a.templates.Has(name) {
		return nil, E(NotFound, "not_found", fmt.Sprintf("unknown template %s (see GET /v1/templates)", Quote(name)))
	}
	if req.Locale == "" {
		req.Locale = notice.LocaleJA
	}
	if !notice.ValidLocale(req.Locale) {
		return nil, E(BadRequest, "invalid", "locale must be ja or en", FieldError{"locale", "must be ja or en"})
	}
	charset, ok := normCharset(req.Charset)
	if !ok {
		return nil, E(BadRequest, "invalid", "charset must be utf-8 or iso-2022-jp", FieldError{"charset", "must be utf-8 or iso-2022-jp"})
	}
	// A preview shows what it was given: a card number in it would come
	// straight back.
	var errs []FieldError
	bad := func(f, msg string, args ...any) { errs = append(errs, FieldError{f, fmt.Sprintf(msg, args...)}) }
	CheckCardNumbers("data", req.Data, bad)
	for i, p := range req.Paragraphs {
		CheckCardNumbers(fmt.Sprintf("extra_paragraphs[%d]", i), p, bad)
	}
	if p := req.Recipient; p != nil {
		for _, f := range []struct{ name, v string }{{"email", p.Email}, {"name", p.Name}, {"locale", p.Locale},
			{"customer_id", p.CustomerID}, {"card_brand", p.CardBrand}, {"card_last4", p.CardLast4}} {
			CheckCardNumbers("recipient."+f.name, f.v, bad)
		}
		for k, v := range p.Extra {
			CheckCardNumbers("recipient.extra", k, bad)
			CheckCardNumbers("recipient.extra", v, bad)
		}
	}
	if len(errs) > 0 {
		a.NoteCards(ctx, errs)
		return nil, E(Invalid, "invalid", "the preview's input looks like it holds a full card number", errs...)
	}
	in, err := a.templates.Sample(name, req.Locale)
	if err != nil {
		return nil, err
	}
	if req.Data != nil {
		if err := a.templates.Validate(name, req.Data); err != nil {
			return nil, &Error{Kind: Invalid, Code: "invalid_data", Msg: err.Error(), Fields: DataErrors(err), Err: err}
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
	return a.preview(name, in, charset, who)
}

// PreviewCampaign renders campaign id as its recipients will get it: for
// recipient rid (> 0), otherwise for SampleRecipient, in locale if given
// (else the recipient's or the campaign's). Reading a customer's notice is
// reading their personal data: a preview for a recipient is audited.
func (a *App) PreviewCampaign(ctx context.Context, id, locale string, rid int64) (*Preview, error) {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	if locale != "" && !notice.ValidLocale(locale) {
		return nil, E(BadRequest, "invalid", "locale must be ja or en", FieldError{"locale", "must be ja or en"})
	}
	who := "sample"
	var rcpt notice.Recipient
	if rid > 0 {
		rp, err := a.store.Recipient(ctx, id, rid)
		if err != nil {
			return nil, err
		}
		rcpt, who = *rp, fmt.Sprint(rid)
		if locale == "" {
			locale = rcpt.EffectiveLocale(c.DefaultLocale)
		}
		a.Audit(ctx, store.AuditEntry{Action: "campaign.preview", CampaignID: id, Recipient: rid})
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
	return a.preview(c.Template, templates.Input{Locale: locale, Data: c.Data, Recipient: rcpt, Paragraphs: c.Paragraphs, Date: date.In(c.Zone())}, charset, who)
}

// preview renders in and says what charset cannot carry.
func (a *App) preview(name string, in templates.Input, charset, who string) (*Preview, error) {
	out, err := a.templates.Render(name, in)
	if err != nil {
		return nil, &Error{Kind: Invalid, Code: "render", Msg: err.Error(), Err: err}
	}
	p := &Preview{Template: name, Locale: in.Locale, Charset: charset, Recipient: who,
		Subject: out.Subject, Text: out.Text, HTML: out.HTML, CharsetOK: true}
	if err := templates.CheckCharset(out, charset); err != nil {
		var ce *templates.CharsetError
		if !errors.As(err, &ce) {
			return nil, &Error{Kind: BadRequest, Code: "invalid", Msg: err.Error(), Err: err}
		}
		p.CharsetOK = false
		for _, pr := range ce.Problems {
			p.CharProblem = append(p.CharProblem, CharProblem{Part: pr.Part, Line: pr.Line, Col: pr.Col,
				Char: string(pr.Char), Code: fmt.Sprintf("U+%04X", pr.Char)})
		}
	}
	return p, nil
}

// normCharset is cs as notices name it, and whether it is one they take.
func normCharset(cs string) (string, bool) {
	switch strings.ToLower(cs) {
	case "", notice.CharsetUTF8, "utf8":
		return notice.CharsetUTF8, true
	case notice.CharsetISO2022JP:
		return notice.CharsetISO2022JP, true
	}
	return "", false
}
