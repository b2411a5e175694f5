package mailer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"mime/multipart"
	netmail "net/mail"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/wneessen/go-mail"
	"golang.org/x/text/encoding/japanese"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/templates"
)

// envelope is the SMTP envelope of a message: MAIL FROM and RCPT TO. It is
// taken from Message, never from the written headers, so a display name can
// never add a recipient.
type envelope struct{ from, to, token string }

// Build makes the go-mail message: multipart/alternative, text first then
// HTML, in UTF-8 (quoted-printable, or base64 for a mostly non-ASCII —
// Japanese — part, whichever is smaller) or ISO-2022-JP (7bit as RFC 1468
// has it, headers as ISO-2022-JP encoded-words where they are not ASCII).
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

// TokenHeader carries a notice's bounce token (Message.Token).
const TokenHeader = "X-Oshirase-Token"

// SMTPAPIHeader is SendGrid's SMTP API header (Options.SendGridSMTPAPI).
const SMTPAPIHeader = "X-SMTPAPI"

// isToken reports whether s is a bounce token as package bounce makes them:
// it goes into MAIL FROM and a header as it is.
func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9' || s[i] == '-') {
			return false
		}
	}
	return true
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
	if m.ReturnPath != "" || m.Token != "" {
		if err := checkAddr(m.ReturnPath); err != nil {
			return nil, env, fmt.Errorf("return path: %w", err)
		}
		if !isToken(m.Token) {
			return nil, env, errors.New("bounce token: want lower-case [a-z0-9-], 1 to 64 characters")
		}
		env.from, env.token = m.ReturnPath, m.Token
	}

	// A boundary of our own: a DKIM signature is made over the message
	// written once, and go-mail would pick another boundary each time.
	opts := []mail.MsgOption{mail.WithNoDefaultUserAgent(), mail.WithBoundary(newBoundary())}
	if iso {
		opts = append(opts, mail.WithCharset(mail.CharsetISO2022JP), mail.WithEncoding(mail.NoEncoding))
	} else {
		opts = append(opts, mail.WithCharset(mail.CharsetUTF8), mail.WithEncoding(mail.EncodingQP))
	}
	msg := mail.NewMsg(opts...)

	// Text in MIME is CRLF-delimited (RFC 2045 canonical form); base64
	// would otherwise carry bare LFs that quoted-printable turns into CRLF.
	text := crlf(m.Text)
	html := m.HTML
	if html != "" {
		cs := notice.CharsetUTF8
		if iso {
			cs = notice.CharsetISO2022JP
		}
		// Before crlf: the declaration it may add is on a line of its own.
		html = crlf(setHTMLCharset(html, cs))
	}

	if iso {
		// Everything is checked before anything is converted, so one error
		// lists every character of the message ISO-2022-JP cannot carry.
		if err := checkISO2022JP(m, from, to, replyTo, subject, text, html); err != nil {
			return nil, env, err
		}
		if isASCII(subject) {
			// An encoded-word where none is needed is what spam looks
			// like (rspamd: SUBJ_EXCESS_BASE64).
			msg.Subject(subject)
		} else {
			enc, err := encodeWords(subject, true, subjectWordRaw)
			if err != nil {
				return nil, env, fmt.Errorf("subject: %w", err)
			}
			msg.SetGenHeaderPreformatted(mail.HeaderSubject, enc)
		}
		if text, err = toISO2022JP(text); err != nil {
			return nil, env, fmt.Errorf("text: %w", err)
		}
		if html, err = toISO2022JP(html); err != nil {
			return nil, env, fmt.Errorf("html: %w", err)
		}
		if err := setISO2022JPBody(msg, text, html); err != nil {
			return nil, env, err
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
	if env.token != "" {
		// For bounces that lose the envelope: many return our headers.
		msg.SetGenHeader(mail.Header(TokenHeader), env.token)
		if o != nil && o.SendGridSMTPAPI {
			// The token is [a-z0-9-] (isToken): nothing to escape in the
			// JSON, nothing to fold in the header. Not DKIM-signed
			// (dkimHeaders): SendGrid takes it out.
			msg.SetGenHeaderPreformatted(mail.Header(SMTPAPIHeader), `{"unique_args":{"oshirase_token":"`+env.token+`"}}`)
		}
	}
	if o != nil && o.ListUnsubscribe != "" {
		// Off by default: a breach notice is not marketing, and nobody may
		// opt out of being told their card leaked.
		msg.SetGenHeader(mail.Header("List-Unsubscribe"), cleanName(o.ListUnsubscribe))
	}
	if key := o.signingKey(from.Address[strings.LastIndexByte(from.Address, '@')+1:]); key != nil {
		so, err := loadDKIM(key)
		if err != nil {
			return nil, env, err
		}
		if err := signDKIM(msg, so); err != nil {
			return nil, env, err
		}
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

// newBoundary is a random MIME boundary.
func newBoundary() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

var dkimCache sync.Map // DKIMOptions → *dkim.SignOptions

// dkimHeaders are signed, and those in dkimOversigned once more than they
// occur, so a second From, Subject or Reply-To added on the way — above
// ours, where most clients read it — breaks the signature. Date is signed
// as RFC 6376 5.4 recommends (a replayed notice cannot be re-dated),
// MIME-Version and Auto-Submitted because both change how the message is
// read.
//
// The signature is made with go-msgauth, not go-mail's signer: go-mail
// v0.8.1 folds the h= tag at a fixed width, even inside a header name
// ("Auto-S<CRLF> ubmitted"), and signs it unfolded, so with more than a
// line of header names its signatures do not verify.
var (
	dkimHeaders    = []string{"From", "To", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version", "Content-Type", "Auto-Submitted"}
	dkimOversigned = []string{"From", "Subject", "Reply-To"}
)

// loadDKIM reads the key once per setting (RSA in PKCS #1 or PKCS #8, or
// Ed25519 in PKCS #8) and returns signing options shared by every message.
func loadDKIM(o *DKIMOptions) (*dkim.SignOptions, error) {
	if v, ok := dkimCache.Load(*o); ok {
		return v.(*dkim.SignOptions), nil
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
	so := &dkim.SignOptions{
		Domain: o.Domain, Selector: o.Selector, Signer: key, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: append(slices.Clone(dkimHeaders), dkimOversigned...),
	}
	// Fail on a bad key now, not on the first message.
	if _, err := dkim.NewSigner(so); err != nil {
		return nil, fmt.Errorf("DKIM: %w", err)
	}
	v, _ := dkimCache.LoadOrStore(*o, so)
	return v.(*dkim.SignOptions), nil
}

// signDKIM adds a DKIM-Signature to msg, made over msg as it is written:
// everything that goes into the message (Date, Message-ID, the multipart
// boundary) is fixed before, so that the pool's WriteTo writes the same.
func signDKIM(msg *mail.Msg, so *dkim.SignOptions) error {
	var b bytes.Buffer
	if _, err := msg.WriteTo(&b); err != nil {
		return fmt.Errorf("DKIM: %w", err)
	}
	s, err := dkim.NewSigner(so)
	if err != nil {
		return fmt.Errorf("DKIM: %w", err)
	}
	if _, err := b.WriteTo(s); err != nil {
		s.Close()
		return fmt.Errorf("DKIM: %w", err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("DKIM: %w", err)
	}
	// "DKIM-Signature: v=1; …\r\n", folded by go-msgauth with CRLF SP.
	v, ok := strings.CutPrefix(s.Signature(), "DKIM-Signature: ")
	if !ok {
		return errors.New("DKIM: unexpected signature header")
	}
	msg.SetGenHeaderPreformatted(mail.Header("DKIM-Signature"), strings.TrimSuffix(v, "\r\n"))
	return nil
}

// maxLine7bit is the longest line a 7bit part may have (RFC 5322 2.1.1,
// RFC 2045 2.7), not counting CRLF.
const maxLine7bit = 998

// setISO2022JPBody makes the message's body multipart/alternative with the
// text and (if any) the HTML in ISO-2022-JP, each part 7bit — as RFC 1468
// sends Japanese mail and Japanese carriers' filters expect — unless it has
// a line past 998 octets, which only base64 can carry. go-mail cannot write
// a 7bit part (it quoted-printables one, turning every ESC into =1B), so
// the parts are written here, and go-mail writes the whole as one part.
// text and html are in ISO-2022-JP with CRLF line ends.
func setISO2022JPBody(msg *mail.Msg, text, html string) error {
	var b strings.Builder
	mw := multipart.NewWriter(&b)
	for _, p := range []struct{ ctype, body string }{{"text/plain", text}, {"text/html", html}} {
		if p.body == "" && p.ctype == "text/html" {
			continue
		}
		enc := "7bit"
		if !fits7bit(p.body) {
			enc = "base64"
		}
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.ctype + "; charset=ISO-2022-JP"},
			"Content-Transfer-Encoding": {enc},
		})
		if err != nil {
			return fmt.Errorf("body: %w", err)
		}
		if enc == "7bit" {
			io.WriteString(w, p.body)
			continue
		}
		all := base64.StdEncoding.EncodeToString([]byte(p.body))
		for len(all) > 76 {
			io.WriteString(w, all[:76]+"\r\n")
			all = all[76:]
		}
		io.WriteString(w, all+"\r\n")
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	body := b.String()
	// The whole is labelled 8bit: go-mail writes a Content-Transfer-Encoding
	// for it, and only 8bit is written as it is (every byte of it is 7-bit
	// all the same), and a charset parameter, which multipart ignores.
	msg.SetBodyWriter(mail.ContentType(`multipart/alternative; boundary="`+mw.Boundary()+`"`), func(w io.Writer) (int64, error) {
		n, err := io.WriteString(w, body)
		return int64(n), err
	}, mail.WithPartEncoding(mail.NoEncoding))
	return nil
}

// fits7bit reports whether s (CRLF line ends) can go in a 7bit part as it
// is: ASCII without NUL or a bare CR or LF, no line past maxLine7bit octets.
func fits7bit(s string) bool {
	line := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r':
			if i+1 >= len(s) || s[i+1] != '\n' {
				return false
			}
			i++
			line = 0
			continue
		case c == '\n' || c == 0 || c >= 0x80:
			return false
		}
		if line++; line > maxLine7bit {
			return false
		}
	}
	return true
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
