package ingest

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"

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

// Warning is a change an upload made to a row it accepted, for the
// uploader to check: an address typed with full-width characters, say.
type Warning struct {
	Line    int    `json:"line"`
	Field   string `json:"field"`
	Warning string `json:"warning"`
}

// Validate checks one recipient the way an upload's rows are checked and
// normalises it in place: every field trimmed, the address in the form it is
// sent in (NFKC, the domain in lower case and ASCII), the locale in lower
// case, empty extra fields dropped. It does not default the locale: an empty
// one means "the campaign's default".
//
// When several fields are wrong it reports the first of email, name, locale,
// customer_id, card_brand, card_last4, then the extra field whose name sorts
// first, so that the answer does not depend on map order.
func Validate(r *notice.Recipient) *Rejection {
	rej, _ := Check(r)
	return rej
}

// Check is Validate that also says what it changed (Line left 0).
func Check(r *notice.Recipient) (*Rejection, []Warning) {
	var rej *Rejection
	var notes []string
	if r.Email, notes, rej = checkEmail(r.Email); rej != nil {
		return rej, nil
	}
	var warns []Warning
	for _, n := range notes {
		warns = append(warns, Warning{Field: "email", Warning: n})
	}
	if rej := validateRest(r); rej != nil {
		return rej, nil
	}
	return nil, warns
}

func validateRest(r *notice.Recipient) *Rejection {
	var rej *Rejection
	if r.Name, rej = checkText("name", r.Name, MaxNameLen); rej != nil {
		return rej
	}
	if encodedWordRE.MatchString(r.Name) {
		// A mail program decodes an encoded-word even inside the quotes we
		// put a name in: "=?utf-8?q?evil=40attacker.com?=" would show as
		// the address evil@attacker.com in the To line. No one is called
		// that.
		return &Rejection{Field: "name", Error: "looks like a MIME encoded-word (=?charset?q?…?=), which mail programs would decode into other text; give the name as plain text"}
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

// encodedWordRE matches an RFC 2047 encoded-word anywhere in a text.
var encodedWordRE = regexp.MustCompile(`=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=`)

// HasEncodedWord reports whether s holds an RFC 2047 encoded-word, which
// has no place in a display name given as text.
func HasEncodedWord(s string) bool { return encodedWordRE.MatchString(s) }

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
		return &Rejection{Error: "an extra field's name " + msgCard, Card: true}
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
		return "", &Rejection{Field: field, Error: msgCard, Card: true}
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

// Notes checkEmail gives when it changed an address.
const (
	NoteNFKC = "written with full-width or other compatibility characters: converted to their plain form (NFKC)"
	NoteIDN  = "internationalised domain: converted to its ASCII (punycode) form, in which it is sent"
)

// checkEmail accepts a bare address only: no display name, angle brackets,
// comments, quotes, group syntax or spaces, since whatever else net/mail
// accepts could smuggle a second address or a header. What is safe to
// normalise is (with a note saying so): NFKC makes an address typed with a
// full-width IME ASCII, and an internationalised domain becomes its ASCII
// (punycode) form, which is how it goes on the wire. What could never be
// sent is refused: a local part that is not ASCII (that needs SMTPUTF8, which
// oshirase does not speak), invisible characters, a domain that is not a
// valid IDN, an IP address. It returns the address trimmed, with the domain
// in lower case.
func checkEmail(v string) (string, []string, *Rejection) {
	addr, rej := checkText("email", v, MaxFieldLen)
	if rej != nil {
		return "", nil, rej
	}
	bad := func(why string) (string, []string, *Rejection) {
		return "", nil, &Rejection{Field: "email", Error: why}
	}
	if addr == "" {
		return bad("required")
	}
	var notes []string
	if !isASCII(addr) {
		if n := norm.NFKC.String(addr); n != addr {
			addr = n
			notes = append(notes, NoteNFKC)
		}
	}
	if len(addr) > MaxEmailLen {
		return bad(fmt.Sprintf("longer than %d characters", MaxEmailLen))
	}
	if strings.ContainsAny(addr, "<>\"(),;:\\[]") || strings.IndexFunc(addr, unicode.IsSpace) >= 0 {
		return bad("must be a bare address like name@example.com (no display name, brackets, quotes, comments or spaces)")
	}
	if !isASCII(addr) && strings.IndexFunc(addr, func(r rune) bool { return unicode.Is(unicode.Cf, r) }) >= 0 {
		return bad("contains an invisible formatting character (zero-width space or joiner, soft hyphen, BOM, …)")
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
	case !isASCII(addr[:at]):
		return bad("the part before the @ has non-ASCII characters: such an address needs SMTPUTF8, which oshirase does not send with")
	}
	domain := addr[at+1:]
	if !isASCII(domain) || strings.Contains(strings.ToLower(domain), "xn--") {
		a, err := idna.Lookup.ToASCII(domain)
		if err != nil {
			return bad("not an address: the domain is not a valid internationalised domain name")
		}
		if a != strings.ToLower(domain) {
			notes = append(notes, NoteIDN)
		}
		domain = a
		addr = addr[:at+1] + domain
		if len(addr) > MaxEmailLen {
			return bad(fmt.Sprintf("longer than %d characters in its ASCII form", MaxEmailLen))
		}
	}
	if !strings.Contains(domain, ".") {
		return bad("not an address: the domain needs a dot (like example.com)")
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad("not an address: the domain is malformed")
		}
	}
	if IPDomain(domain) {
		return bad("not an address: the domain is an IP address; a recipient needs a domain name")
	}
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Name != "" || a.Address != addr {
		return bad("not a valid address (RFC 5322)")
	}
	if lower := strings.ToLower(domain); lower != domain {
		addr = addr[:at+1] + lower
	}
	return addr, notes, nil
}

// NormalizeEmail is the form of an address oshirase stores, sends to and
// looks up by (see checkEmail), or "" when it is no address that could be
// sent to.
func NormalizeEmail(v string) string {
	addr, _, rej := checkEmail(v)
	if rej != nil {
		return ""
	}
	return addr
}

// IPDomain reports whether the domain of an address is an IP address: an
// address literal ("[192.0.2.1]", "[IPv6:…]") or dotted numbers, which no
// top-level domain is.
func IPDomain(domain string) bool {
	if strings.HasPrefix(domain, "[") {
		return true
	}
	last := domain[strings.LastIndexByte(domain, '.')+1:]
	if last == "" {
		return false
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
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
