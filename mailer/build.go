package mailer

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	netmail "net/mail"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/wneessen/go-mail"
	"golang.org/x/text/encoding/japanese"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/templates"
)

// envelope is the SMTP envelope of a message: MAIL FROM and RCPT TO. It is
// taken from Message, never from the written headers, so a display name can
// never add a recipient.
type envelope struct{ from, to string }

// Build makes the go-mail message: multipart/alternative, text first then
// HTML, in UTF-8 (quoted-printable, or base64 for a mostly non-ASCII —
// Japanese — part, whichever is smaller) or ISO-2022-JP (base64, headers as
// ISO-2022-JP encoded-words).
//
// For ISO-2022-JP, every character of the subject, the display names and
// both bodies must be one the charset carries (ASCII and JIS X 0208, as
// templates.CheckCharset judges it); otherwise Build fails with a
// *templates.CharsetError naming each character and where it is. Nothing is
// replaced or dropped silently.
//
// Header values of our making never span lines: CR and LF in names and the
// subject become spaces; an address or Message-ID with a line break, a space
// or a bracket is an error.
func Build(m *Message, o *Options) (*mail.Msg, error) {
	msg, _, err := build(m, o)
	return msg, err
}

func build(m *Message, o *Options) (*mail.Msg, envelope, error) {
	var env envelope
	iso, err := isISO2022JP(m.Charset)
	if err != nil {
		return nil, env, err
	}
	from, err := senders.parse(m.From)
	if err != nil {
		return nil, env, fmt.Errorf("from: %w", err)
	}
	if err := checkAddr(m.To); err != nil {
		return nil, env, fmt.Errorf("to: %w", err)
	}
	to := &netmail.Address{Name: cleanName(m.ToName), Address: m.To}
	var replyTo *netmail.Address
	if m.ReplyTo != "" {
		if replyTo, err = senders.parse(m.ReplyTo); err != nil {
			return nil, env, fmt.Errorf("reply-to: %w", err)
		}
	}
	msgID := m.MessageID
	if msgID == "" {
		msgID = newMessageID(from.Address)
	} else if err := checkMessageID(msgID); err != nil {
		return nil, env, fmt.Errorf("message-id: %w", err)
	}
	subject := cleanName(m.Subject)
	env = envelope{from: from.Address, to: m.To}

	opts := []mail.MsgOption{mail.WithNoDefaultUserAgent()}
	if iso {
		opts = append(opts, mail.WithCharset(mail.CharsetISO2022JP), mail.WithEncoding(mail.EncodingB64))
	} else {
		opts = append(opts, mail.WithCharset(mail.CharsetUTF8), mail.WithEncoding(mail.EncodingQP))
	}
	msg := mail.NewMsg(opts...)

	// Text in MIME is CRLF-delimited (RFC 2045 canonical form); base64
	// would otherwise carry bare LFs that quoted-printable turns into CRLF.
	text := crlf(m.Text)
	html := crlf(m.HTML)
	if html != "" {
		cs := notice.CharsetUTF8
		if iso {
			cs = notice.CharsetISO2022JP
		}
		html = setHTMLCharset(html, cs)
	}

	if iso {
		// Everything is checked before anything is converted, so one error
		// lists every character of the message ISO-2022-JP cannot carry.
		if err := checkISO2022JP(m, from, to, replyTo, subject, text, html); err != nil {
			return nil, env, err
		}
		enc, err := encodeWords(subject, true, subjectWordRaw)
		if err != nil {
			return nil, env, fmt.Errorf("subject: %w", err)
		}
		msg.SetGenHeaderPreformatted(mail.HeaderSubject, enc)
		if text, err = toISO2022JP(text); err != nil {
			return nil, env, fmt.Errorf("text: %w", err)
		}
		if html, err = toISO2022JP(html); err != nil {
			return nil, env, fmt.Errorf("html: %w", err)
		}
		msg.SetBodyString(mail.TypeTextPlain, text)
		if html != "" {
			msg.AddAlternativeString(mail.TypeTextHTML, html)
		}
	} else {
		if isASCII(subject) {
			msg.Subject(subject)
		} else {
			enc, err := encodeWords(subject, false, subjectWordRaw)
			if err != nil {
				return nil, env, fmt.Errorf("subject: %w", err)
			}
			msg.SetGenHeaderPreformatted(mail.HeaderSubject, enc)
		}
		msg.SetBodyString(mail.TypeTextPlain, text, mail.WithPartEncoding(bodyEncoding(text)))
		if html != "" {
			msg.AddAlternativeString(mail.TypeTextHTML, html, mail.WithPartEncoding(bodyEncoding(html)))
		}
	}
	// go-mail would write display names through net/mail: as UTF-8
	// encoded-words in any charset, and a long name split into several
	// words. Write the address headers ourselves. Every value is made of
	// base64 encoded-words, quoted ASCII and addresses checkAddr accepted,
	// so no CR or LF of anyone's making reaches these preformatted headers.
	for _, h := range []struct {
		name string
		addr *netmail.Address
	}{{"From", from}, {"To", to}, {"Reply-To", replyTo}} {
		if h.addr == nil {
			continue
		}
		v, err := formatAddr(h.name, h.addr, iso)
		if err != nil {
			return nil, env, fmt.Errorf("%s: %w", strings.ToLower(h.name), err)
		}
		msg.SetGenHeaderPreformatted(mail.Header(h.name), v)
	}
	msg.SetMessageIDWithValue(msgID)
	msg.SetDate()
	// RFC 3834: replies by auto-responders (vacation notices) are not wanted.
	msg.SetGenHeader(mail.Header("Auto-Submitted"), "auto-generated")
	if o != nil && o.ListUnsubscribe != "" {
		// Off by default: a breach notice is not marketing, and nobody may
		// opt out of being told their card leaked.
		msg.SetGenHeader(mail.Header("List-Unsubscribe"), cleanName(o.ListUnsubscribe))
	}
	if o != nil && o.DKIM != nil {
		signer, err := loadDKIM(o.DKIM)
		if err != nil {
			return nil, env, err
		}
		msg.SetDKIM(signer)
	}
	return msg, env, nil
}

func isISO2022JP(charset string) (bool, error) {
	switch strings.ToLower(charset) {
	case "", notice.CharsetUTF8, "utf8":
		return false, nil
	case notice.CharsetISO2022JP:
		return true, nil
	}
	return false, fmt.Errorf("charset %q: want %s or %s", charset, notice.CharsetUTF8, notice.CharsetISO2022JP)
}

// checkISO2022JP reports, as one *templates.CharsetError, every character
// of the message ISO-2022-JP cannot carry. Parts are named "subject",
// "text", "html", "from name", "to name" and "reply-to name".
func checkISO2022JP(m *Message, from, to, replyTo *netmail.Address, subject, text, html string) error {
	all := &templates.CharsetError{Charset: notice.CharsetISO2022JP}
	add := func(err error, part string) error {
		var ce *templates.CharsetError
		if !errors.As(err, &ce) {
			return err
		}
		for _, p := range ce.Problems {
			if part != "" {
				p.Part = part
			}
			all.Problems = append(all.Problems, p)
		}
		return nil
	}
	if err := add(templates.CheckCharset(&templates.Rendered{Subject: subject, Text: text, HTML: html}, notice.CharsetISO2022JP), ""); err != nil {
		return err
	}
	for _, n := range []struct {
		part string
		addr *netmail.Address
	}{{"from name", from}, {"to name", to}, {"reply-to name", replyTo}} {
		if n.addr == nil || n.addr.Name == "" {
			continue
		}
		if err := add(templates.CheckCharset(&templates.Rendered{Subject: n.addr.Name}, notice.CharsetISO2022JP), n.part); err != nil {
			return err
		}
	}
	if len(all.Problems) > 0 {
		return all
	}
	return nil
}

// bodyEncoding picks the smaller transfer encoding for a UTF-8 body:
// quoted-printable turns every non-ASCII byte into three ("=E3"), base64
// costs 4/3 of everything. A Japanese notice is mostly 3-byte characters, so
// base64 halves its size (21 KB → 10 KB), and with it the SMTP DATA work on
// both ends; an English one stays quoted-printable and readable.
func bodyEncoding(s string) mail.Encoding {
	high, i := 0, 0
	// Eight bytes at a time: a notice is 5–10 KB and thousands a second
	// are built.
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		high += bits.OnesCount64(w & 0x8080808080808080)
	}
	for ; i < len(s); i++ {
		if s[i] >= 0x80 {
			high++
		}
	}
	// QP ≈ len + 2·high; base64 ≈ 1.35·len (with line breaks).
	if 2*high > len(s)*35/100 {
		return mail.EncodingB64
	}
	return mail.EncodingQP
}

// cleanName makes s fit one header line: every run of ASCII spaces and
// control characters (CR and LF above all: header injection) becomes one
// space, and the ends are trimmed. Other spaces — the ideographic space
// between a Japanese family and given name — stay as they are.
func cleanName(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == ' ' || r == '\u2028' || r == '\u2029'
	}), " ")
}

// parseMailbox reads "Name <addr>" or "addr". A CR or LF anywhere is an
// error, not something to strip: "x@example.jp\r\nBcc: y@example.com" must
// not become a valid-looking mailbox.
// senders caches parsed From and Reply-To addresses: a campaign has one of
// each for all its messages, and net/mail's parser is not cheap.
var senders = &mailboxCache{m: map[string]mailboxResult{}}

type mailboxCache struct {
	mu sync.Mutex
	m  map[string]mailboxResult
}

type mailboxResult struct {
	a   netmail.Address
	err error
}

// parse is parseMailbox, cached. The result is a copy the caller may keep.
func (c *mailboxCache) parse(s string) (*netmail.Address, error) {
	c.mu.Lock()
	r, ok := c.m[s]
	c.mu.Unlock()
	if !ok {
		a, err := parseMailbox(s)
		if a != nil {
			r.a = *a
		}
		r.err = err
		c.mu.Lock()
		if len(c.m) >= 1024 { // bounded: campaigns are few
			clear(c.m)
		}
		c.m[s] = r
		c.mu.Unlock()
	}
	if r.err != nil {
		return nil, r.err
	}
	a := r.a
	return &a, nil
}

func parseMailbox(s string) (*netmail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in address")
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return nil, err
	}
	if err := checkAddr(a.Address); err != nil {
		return nil, err
	}
	a.Name = cleanName(a.Name)
	return a, nil
}

// checkAddr accepts a bare addr-spec that can go on an SMTP command line
// as it is: printable ASCII, no space, no bracket, one '@' with text on
// both sides.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';' || c == '"' || c == '\\' {
			return fmt.Errorf("address has a character %q that cannot go on an SMTP command line", c)
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return errors.New("address is not local@domain")
	}
	a, err := netmail.ParseAddress(addr)
	if err != nil || a.Address != addr || a.Name != "" {
		return errors.New("not an RFC 5322 address")
	}
	return nil
}

// checkMessageID accepts id-left "@" id-right without brackets, made of
// printable ASCII without space, brackets or quotes.
func checkMessageID(id string) error {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' || c == '\\' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	if l, r, ok := strings.Cut(id, "@"); !ok || l == "" || r == "" || strings.Contains(r, "@") {
		return errors.New("want left@right")
	}
	return nil
}

// newMessageID makes a random Message-ID in the sender's domain, for
// messages (previews) that come without one.
func newMessageID(from string) string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) + from[strings.LastIndexByte(from, '@'):]
}

var (
	metaCharsetRE   = regexp.MustCompile(`(?i)<meta\s+charset\s*=\s*["']?[A-Za-z0-9_.:-]*["']?\s*/?>`)
	metaHTTPEquivRE = regexp.MustCompile(`(?i)<meta\s+http-equiv\s*=\s*["']?content-type["']?[^>]*>`)
	headRE          = regexp.MustCompile(`(?i)<head(\s[^>]*)?>`)
)

// setHTMLCharset makes the HTML document declare the charset its MIME part
// is in: a client that trusts the document over the MIME header must not
// read ISO-2022-JP bytes as UTF-8. An existing declaration is rewritten,
// otherwise one is added at the top of <head>.
func setHTMLCharset(html, charset string) string {
	// A charset declaration belongs in <head>: look only there. The body
	// is most of a notice, and three regexps over it cost more than the
	// rest of building the message.
	if i := headEnd(html); i >= 0 {
		return setHTMLCharset(html[:i], charset) + html[i:]
	}
	found := false
	html = metaCharsetRE.ReplaceAllStringFunc(html, func(string) string {
		found = true
		return `<meta charset="` + charset + `">`
	})
	html = metaHTTPEquivRE.ReplaceAllStringFunc(html, func(string) string {
		found = true
		return `<meta http-equiv="Content-Type" content="text/html; charset=` + charset + `">`
	})
	if found {
		return html
	}
	loc := headRE.FindStringIndex(html)
	if loc == nil {
		return html
	}
	return html[:loc[1]] + "\n" + `<meta http-equiv="Content-Type" content="text/html; charset=` + charset + `">` + html[loc[1]:]
}

// headEnd is the index of "</head" in any letter case, or -1.
func headEnd(html string) int {
	for i := 0; ; {
		j := strings.Index(html[i:], "</")
		if j < 0 {
			return -1
		}
		i += j
		if len(html)-i >= 6 && strings.EqualFold(html[i+2:i+6], "head") {
			return i
		}
		i += 2
	}
}

func toISO2022JP(s string) (string, error) {
	b, err := japanese.ISO2022JP.NewEncoder().String(s)
	if err != nil {
		return "", fmt.Errorf("a character cannot be written in ISO-2022-JP: %w", err)
	}
	return b, nil
}

// crlf gives every line break the form CRLF.
func crlf(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	if !strings.Contains(s, "\r") {
		return strings.ReplaceAll(s, "\n", "\r\n") // the usual case: one pass
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// formatAddr writes the value of address header name: an ASCII display
// name as net/mail writes it (quoted where needed), any other as base64
// encoded-words in the message's charset, then the address in angle
// brackets, folded so that no line passes 76 characters (RFC 2047 2).
func formatAddr(name string, a *netmail.Address, iso bool) (string, error) {
	bare := (&netmail.Address{Address: a.Address}).String()
	if a.Name == "" {
		return bare, nil
	}
	// A name that holds "=?" goes as encoded-words even when ASCII: in a
	// quoted string "=?utf-8?q?evil=40attacker.com?=" is decoded by mail
	// programs (Python's email, many clients) into evil@attacker.com; as
	// the content of an encoded-word it is shown as the literal text.
	if isASCII(a.Name) && !strings.Contains(a.Name, "=?") {
		return a.String(), nil
	}
	words, err := encodeWords(a.Name, iso, nameWordRaw(iso))
	if err != nil {
		return "", err
	}
	tokens := append(strings.Split(words, "\r\n "), bare)
	var b strings.Builder
	col := len(name) + 2 // "From: "
	for i, tok := range tokens {
		switch {
		case i == 0 && col+len(tok) > 76:
			// In a structured header, leading folding white space is
			// not part of the name: start on the next line.
			b.WriteString("\r\n ")
			col = 1
		case i > 0 && col+1+len(tok) > 76:
			b.WriteString("\r\n ")
			col = 1
		case i > 0:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(tok)
		col += len(tok)
	}
	return b.String(), nil
}

// encodeWords encodes a header value as RFC 2047 B-words in UTF-8 or
// ISO-2022-JP, each word complete in itself (whole characters; for
// ISO-2022-JP ending in ASCII mode) and at most maxRaw bytes before
// base64, joined by CRLF SP. Spaces stay inside the words: white space
// between encoded-words is dropped when decoding, so the value decodes back
// exactly.
func encodeWords(s string, iso bool, maxRaw int) (string, error) {
	prefix, conv := "=?UTF-8?B?", func(s string) (string, error) { return s, nil }
	if iso {
		prefix, conv = "=?ISO-2022-JP?B?", toISO2022JP
	}
	var words []string
	if !iso {
		// UTF-8 needs no conversion: cut between runes, each word as many
		// whole runes as fit in maxRaw bytes (at least one).
		for len(s) > 0 {
			n := 0
			for n < len(s) {
				_, size := utf8.DecodeRuneInString(s[n:])
				if n > 0 && n+size > maxRaw {
					break
				}
				n += size
			}
			words = append(words, prefix+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
			s = s[n:]
		}
		return strings.Join(words, "\r\n "), nil
	}
	runes := []rune(s)
	for start := 0; start < len(runes); {
		end := start + 1
		best := ""
		for ; end <= len(runes); end++ {
			enc, err := conv(string(runes[start:end]))
			if err != nil {
				return "", err
			}
			if len(enc) > maxRaw && best != "" {
				break
			}
			best = enc
		}
		words = append(words, prefix+base64.StdEncoding.EncodeToString([]byte(best))+"?=")
		start = end - 1
		if end > len(runes) {
			break
		}
	}
	return strings.Join(words, "\r\n "), nil
}

// subjectWordRaw keeps "Subject: " and the first word within 76 columns:
// 36 bytes are 48 base64 characters, 66 with "=?ISO-2022-JP?B?" and "?=".
// The first word must stay on the Subject line: folding before it would
// make a leading space part of the subject.
const subjectWordRaw = 36

// nameWordRaw is the most one encoded-word holds within RFC 2047's 75
// characters. A display name is kept in one word when it fits: parsers
// disagree about the space between two words in an address (Python's email
// package keeps one, RFC 2047 and Go drop it), and a single word reads back
// the same everywhere.
func nameWordRaw(iso bool) int {
	if iso {
		return 42 // 56 base64 + 18 = 74
	}
	return 45 // 60 base64 + 12 = 72
}

var dkimCache sync.Map // DKIMOptions → *mail.DKIMSigner

// dkimHeaders are signed, and dkimOversigned once more than they occur,
// so a second From, Subject or Reply-To added on the way — above ours,
// where most clients read it — breaks the signature.
//
// The list is kept short on purpose: go-mail v0.8.1 folds the h= tag at a
// fixed width, even inside a header name ("Auto-S<CRLF> ubmitted"), and a
// verifier then reads a different list than was signed. Everything must
// fit on one folded line (loadDKIM checks). Date and MIME-Version are left
// out for that room: the signature's own t= dates it.
var (
	dkimHeaders    = []string{"From", "To", "Subject", "Message-ID", "Reply-To", "Content-Type"}
	dkimOversigned = []string{"From", "Subject", "Reply-To"}
)

// loadDKIM reads the key once per setting (RSA in PKCS #1 or PKCS #8, or
// Ed25519 in PKCS #8) and returns a signer shared by every message.
func loadDKIM(o *DKIMOptions) (*mail.DKIMSigner, error) {
	if v, ok := dkimCache.Load(*o); ok {
		return v.(*mail.DKIMSigner), nil
	}
	if o.Domain == "" || o.Selector == "" || o.KeyFile == "" {
		return nil, errors.New("DKIM: DKIM_DOMAIN, DKIM_SELECTOR and DKIM_KEY_FILE are all required")
	}
	pemBytes, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("DKIM_KEY_FILE: %w", err)
	}
	key, err := mail.PrivKeyFromPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("DKIM_KEY_FILE %s: %w", o.KeyFile, err)
	}
	s := mail.NewDKIMSigner(o.Domain, o.Selector, key)
	s.SignHeaders(dkimHeaders...)
	s.OversignHeaders(dkimOversigned...)
	// See dkimHeaders: 75 is what go-mail's folding leaves on a line.
	if h := "h=" + strings.Join(append(slices.Clone(dkimHeaders), dkimOversigned...), ":") + "; "; len(h) > 75 {
		return nil, fmt.Errorf("DKIM: signed header list too long for go-mail's folding (%d > 75)", len(h))
	}
	if err := s.ValidateConfig(); err != nil {
		return nil, fmt.Errorf("DKIM: %w", err)
	}
	v, _ := dkimCache.LoadOrStore(*o, s)
	return v.(*mail.DKIMSigner), nil
}

// WriteEML writes the message as it would be sent.
func WriteEML(w io.Writer, m *Message, o *Options) error {
	msg, err := Build(m, o)
	if err != nil {
		return err
	}
	_, err = msg.WriteTo(w)
	return err
}
