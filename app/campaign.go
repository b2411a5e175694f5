package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/templates"
)

// CampaignRequest is a campaign as it is asked for: the body of POST
// /v1/campaigns, and of a PATCH once merged into the draft.
type CampaignRequest struct {
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

// namedValue is a request value with the name errors give it.
type namedValue struct{ name, v string }

// froms lists the sender addresses given, named as errors name them.
func (req *CampaignRequest) froms() []namedValue {
	if req.From.byLocale == nil {
		return []namedValue{{"from", req.From.one}}
	}
	var out []namedValue
	for _, loc := range templates.Locales {
		out = append(out, namedValue{"from." + loc, req.From.byLocale[loc]})
	}
	return out
}

// Validate checks a campaign request; dkimDomains are the domains the
// service signs for (none: signing is off and alignment is not checked).
func (req *CampaignRequest) Validate(ts *templates.Set, dkimDomains []string) []FieldError {
	var errs []FieldError
	bad := func(f, msg string, a ...any) { errs = append(errs, FieldError{f, fmt.Sprintf(msg, a...)}) }
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
		bad("template", "unknown template %s (see GET /v1/templates)", Quote(req.Template))
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
		bad("time_zone", "not an IANA time zone like Asia/Tokyo: %s", Quote(req.TimeZone))
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
		CheckCardNumbers("data", req.Data, bad)
		if ts.Has(req.Template) && len(errs) == 0 {
			c := req.Campaign()
			errs = append(errs, DataErrors(ts.ValidateCampaign(&c))...)
		}
	}
	return errs
}

// CheckCardNumbers walks incident data: a full card number has no place in
// a notice, whatever field it hides in.
func CheckCardNumbers(path string, v any, bad func(string, string, ...any)) {
	switch x := v.(type) {
	case string:
		if ingest.LooksLikeCardNumber(x) {
			bad(path, "looks like a full card number; a notice may show the last 4 digits at most")
		}
	case []any:
		for i, e := range x {
			CheckCardNumbers(fmt.Sprintf("%s[%d]", path, i), e, bad)
		}
	case map[string]any:
		for k, e := range x {
			CheckCardNumbers(path+"."+k, e, bad)
		}
	}
}

// DataErrors turns a template's verdict on campaign data into field
// errors: one per data field ("data.cause": "is required: APPI …"), so
// that a refusal names every missing or bad item.
func DataErrors(err error) []FieldError {
	if err == nil {
		return nil
	}
	var de *templates.DataError
	if errors.As(err, &de) {
		out := make([]FieldError, 0, len(de.Fields))
		for _, f := range de.Fields {
			out = append(out, FieldError{"data." + f.Field, f.Reason})
		}
		return out
	}
	return []FieldError{{"data", err.Error()}}
}

func (req *CampaignRequest) Campaign() notice.Campaign {
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

// Quote is v in Go quotes for a message, card numbers masked first: %q
// would spell a thin space as \u2009, past the mask in writeError.
func Quote(v string) string { return strconv.Quote(ingest.MaskCardNumbers(v)) }
