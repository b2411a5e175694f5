package ingest

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/oshirase/oshirase/notice"
)

// Limits on what one recipient may carry.
const (
	MaxEmailLen     = 254 // octets (RFC 5321 path limit less the brackets)
	MaxLocalPartLen = 64  // octets before the @ (RFC 5321)
	MaxNameLen      = 200 // characters
	MaxFieldLen     = 500 // characters, every other field and extra column
	MaxExtraFields  = 50  // personalisation columns besides the known ones
	MaxExtraNameLen = 100 // characters in an extra column's name
)

// Messages that more than one place gives.
const (
	msgCard    = "looks like a full card number; only the last 4 digits may be stored (card_last4)"
	msgControl = "contains a line break or control character"
)

// Validate checks one recipient the way an upload's rows are checked and
// normalises it in place: every field trimmed, the address's domain in lower
// case, the locale in lower case, empty extra fields dropped. It does not
// default the locale: an empty one means "the campaign's default".
//
// When several fields are wrong it reports the first of email, name, locale,
// customer_id, card_brand, card_last4, then the extra field whose name sorts
// first, so that the answer does not depend on map order.
func Validate(r *notice.Recipient) *Rejection {
	var rej *Rejection
	if r.Email, rej = checkEmail(r.Email); rej != nil {
		return rej
	}
	if r.Name, rej = checkText("name", r.Name, MaxNameLen); rej != nil {
		return rej
	}
	if r.Locale, rej = checkText("locale", r.Locale, MaxFieldLen); rej != nil {
		return rej
	}
	if r.Locale != "" {
		r.Locale = strings.ToLower(r.Locale)
		if !notice.ValidLocale(r.Locale) {
			return &Rejection{Field: "locale", Error: "must be ja or en (or empty for the campaign's default)"}
		}
	}
	if r.CustomerID, rej = checkText("customer_id", r.CustomerID, MaxFieldLen); rej != nil {
		return rej
	}
	if r.CardBrand, rej = checkText("card_brand", r.CardBrand, MaxFieldLen); rej != nil {
		return rej
	}
	if r.CardLast4, rej = checkText("card_last4", r.CardLast4, MaxFieldLen); rej != nil {
		return rej
	}
	if r.CardLast4 != "" && !fourDigits(r.CardLast4) {
		return &Rejection{Field: "card_last4", Error: "must be exactly 4 digits (the last 4 of the card number)"}
	}
	return checkExtra(r.Extra)
}

// checkExtra validates and trims the extra fields in place.
func checkExtra(extra map[string]string) *Rejection {
	if len(extra) > MaxExtraFields {
		return &Rejection{Error: fmt.Sprintf("%d extra fields; at most %d are allowed", len(extra), MaxExtraFields)}
	}
	var first *Rejection
	var firstKey string
	for k, v := range extra {
		if first != nil && k >= firstKey {
			continue // only the first in name order is reported
		}
		if rej := checkExtraName(k); rej != nil {
			first, firstKey = rej, k
			continue
		}
		t, rej := checkText(k, v, MaxFieldLen)
		switch {
		case rej != nil:
			first, firstKey = rej, k
		case t == "":
			delete(extra, k) // deleting during range is allowed
		case len(t) != len(v):
			extra[k] = t
		}
	}
	return first
}

func checkExtraName(k string) *Rejection {
	switch {
	case k == "":
		return &Rejection{Error: "an extra field has no name"}
	case !utf8.ValidString(k) || hasControl(k):
		return &Rejection{Error: "an extra field's name has a control character or is not UTF-8"}
	case utf8.RuneCountInString(k) > MaxExtraNameLen:
		return &Rejection{Error: fmt.Sprintf("an extra field's name is longer than %d characters", MaxExtraNameLen)}
	case LooksLikeCardNumber(k):
		return &Rejection{Error: "an extra field's name " + msgCard}
	}
	return nil
}

// checkText is what every field must pass: valid UTF-8 without control
// characters or replacement characters, at most limit characters once
// trimmed, and no card number. It returns the trimmed value.
func checkText(field, v string, limit int) (string, *Rejection) {
	if v == "" {
		return "", nil
	}
	runes := 0
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return "", &Rejection{Field: field, Error: msgControl}
			}
			i++
			runes++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return "", &Rejection{Field: field, Error: "not valid UTF-8; save the file as UTF-8"}
		case r == utf8.RuneError:
			// What a lossy decoder (Shift_JIS past the first 64 KiB, JSON
			// with broken UTF-8) leaves in place of a character it could not
			// read: the name would go out garbled.
			return "", &Rejection{Field: field, Error: "contains an undecodable character (U+FFFD); check the file's encoding"}
		case isControlRune(r):
			return "", &Rejection{Field: field, Error: msgControl}
		}
		i += size
		runes++
	}
	t := strings.TrimSpace(v)
	if runes > limit && utf8.RuneCountInString(t) > limit {
		return "", &Rejection{Field: field, Error: fmt.Sprintf("longer than %d characters", limit)}
	}
	if LooksLikeCardNumber(t) {
		return "", &Rejection{Field: field, Error: msgCard}
	}
	return t, nil
}

// hasControl reports whether s holds a control character in the sense of
// isControlRune.
func hasControl(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if isControlRune(r) {
			return true
		}
		i += size
	}
	return false
}

// isControlRune reports whether r is a C0 or C1 control character, a Unicode
// line or paragraph separator, or a bidirectional control (which can make
// "moc.elpmaxe@" display as an innocent address).
func isControlRune(r rune) bool {
	switch {
	case r == '\u2028', r == '\u2029':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069', r == '\u200e', r == '\u200f', r == '\u061c':
		return true
	}
	return unicode.IsControl(r)
}

// checkEmail accepts a bare address only: no display name, angle brackets,
// comments, quotes, group syntax or spaces, since whatever else net/mail
// accepts could smuggle a second address or a header. It returns the address
// trimmed, with the domain in lower case.
func checkEmail(v string) (string, *Rejection) {
	addr, rej := checkText("email", v, MaxFieldLen)
	if rej != nil {
		return "", rej
	}
	bad := func(why string) (string, *Rejection) { return "", &Rejection{Field: "email", Error: why} }
	if addr == "" {
		return bad("required")
	}
	if len(addr) > MaxEmailLen {
		return bad(fmt.Sprintf("longer than %d characters", MaxEmailLen))
	}
	if strings.ContainsAny(addr, "<>\"(),;:\\[]") || strings.IndexFunc(addr, unicode.IsSpace) >= 0 {
		return bad("must be a bare address like name@example.com (no display name, brackets, quotes, comments or spaces)")
	}
	at := strings.LastIndexByte(addr, '@')
	switch {
	case at < 0:
		return bad("not an address: no @")
	case strings.IndexByte(addr, '@') != at:
		return bad("not an address: more than one @")
	case at == 0:
		return bad("not an address: nothing before the @")
	case at > MaxLocalPartLen:
		return bad(fmt.Sprintf("not an address: the part before the @ is longer than %d characters", MaxLocalPartLen))
	}
	domain := addr[at+1:]
	if !strings.Contains(domain, ".") {
		return bad("not an address: the domain needs a dot (like example.com)")
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad("not an address: the domain is malformed")
		}
	}
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Name != "" || a.Address != addr {
		return bad("not a valid address (RFC 5322)")
	}
	if lower := strings.ToLower(domain); lower != domain {
		addr = addr[:at+1] + lower
	}
	return addr, nil
}

func fourDigits(s string) bool {
	if len(s) != 4 {
		return false
	}
	for i := 0; i < 4; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
