package templates

import (
	"fmt"
	"strings"
	"sync"

	"golang.org/x/text/encoding/japanese"

	"github.com/oshirase/oshirase/notice"
)

// CharProblem is one character a charset cannot carry.
type CharProblem struct {
	Part string `json:"part"` // "subject", "text" or "html"
	Line int    `json:"line"` // 1-based
	Col  int    `json:"col"`  // 1-based, in characters
	Char rune   `json:"char"`
}

func (p CharProblem) String() string {
	return fmt.Sprintf("%s:%d:%d: %q (U+%04X)", p.Part, p.Line, p.Col, p.Char, p.Char)
}

// CharsetError lists every character of a rendered notice that its charset
// cannot carry.
type CharsetError struct {
	Charset  string
	Problems []CharProblem
}

// maxListed bounds how many problems Error spells out; Problems has them all.
const maxListed = 10

func (e *CharsetError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s cannot carry %d character(s): ", e.Charset, len(e.Problems))
	for i, p := range e.Problems {
		if i == maxListed {
			fmt.Fprintf(&b, ", and %d more", len(e.Problems)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// CheckCharset reports, as a *CharsetError, every character of r that
// charset cannot carry. For "iso-2022-jp" (RFC 1468) that is anything outside
// ASCII and JIS X 0208 as golang.org/x/text encodes it: emoji, half-width
// katakana, machine-dependent characters such as ① and ㈱ (NEC and IBM
// extensions, which x/text encodes without complaint but which JIS-strict
// clients garble), the control characters ESC, SO and SI, and both forms of
// the characters Windows and JIS map differently: ～ and 〜 (write から or
// -), ∥ ‖, － −, ￠ ¢, ￡ £, ￢ ¬. x/text encodes only the Windows forms, and
// JIS-strict clients decode those to the other. "utf-8" (or "") carries
// everything and returns nil.
func CheckCharset(r *Rendered, charset string) error {
	switch strings.ToLower(charset) {
	case "", "utf-8", "utf8":
		return nil
	case "iso-2022-jp":
	default:
		return fmt.Errorf("unsupported charset %q", charset)
	}
	var probs []CharProblem
	for _, part := range []struct{ name, s string }{
		{"subject", r.Subject}, {"text", r.Text}, {"html", r.HTML},
	} {
		line, col := 1, 0
		for _, c := range part.s {
			if c == '\n' {
				line, col = line+1, 0
				continue
			}
			col++
			if !iso2022JPCarries(c) {
				probs = append(probs, CharProblem{Part: part.name, Line: line, Col: col, Char: c})
			}
		}
	}
	if len(probs) > 0 {
		return &CharsetError{Charset: "iso-2022-jp", Problems: probs}
	}
	return nil
}

// RecipientCharsetProblem reports the first field of r (email, name,
// customer_id, card_brand, card_last4, then extra fields in name order)
// holding a character charset cannot carry, with the character and its
// 1-based place, or "" when every field fits. A notice for that recipient
// could not be built, so an upload rejects the row at once instead of the
// worker failing it at send time.
func RecipientCharsetProblem(r *notice.Recipient, charset string) (field, msg string) {
	if !strings.EqualFold(charset, "iso-2022-jp") {
		return "", ""
	}
	check := func(v string) (rune, int) { return Uncarried(v, charset) }
	for _, f := range []struct{ name, v string }{
		{"email", r.Email}, {"name", r.Name}, {"customer_id", r.CustomerID}, {"card_brand", r.CardBrand}, {"card_last4", r.CardLast4},
	} {
		if c, i := check(f.v); i > 0 {
			return f.name, charsetMsg(c, i)
		}
	}
	var first string
	var c0 rune
	var i0 int
	for k, v := range r.Extra {
		if first != "" && k >= first {
			continue
		}
		if c, i := check(v); i > 0 {
			first, c0, i0 = k, c, i
		}
	}
	if first != "" {
		return first, charsetMsg(c0, i0)
	}
	return "", ""
}

// Uncarried returns the first character of v that charset cannot carry and
// its 1-based place, or 0, 0 when it carries them all.
func Uncarried(v, charset string) (rune, int) {
	if !strings.EqualFold(charset, "iso-2022-jp") {
		return 0, 0
	}
	i := 0
	for _, c := range v {
		i++
		if !iso2022JPCarries(c) {
			return c, i
		}
	}
	return 0, 0
}

// CharsetMessage says why character c at place i cannot be sent.
func CharsetMessage(c rune, i int) string { return charsetMsg(c, i) }

func charsetMsg(c rune, i int) string {
	return fmt.Sprintf("character %d, '%c' (U+%04X), cannot be sent in ISO-2022-JP, the campaign's charset: "+
		"replace it (an old-style kanji by its common form, ① by (1), ㈱ by （株）) or send the campaign as utf-8", i, c, c)
}

var jisVerdicts sync.Map // rune → bool

// windowsForms are the characters x/text (after WHATWG, after Windows
// CP932) puts where JIS X 0208 has 〜 ‖ − ¢ £ ¬.
const windowsForms = "～∥－￠￡￢"

func iso2022JPCarries(c rune) bool {
	if c < 0x80 {
		// ESC, SO and SI would corrupt the shift state (RFC 1468 forbids
		// them); other C0 controls are harmless but have no place in a notice.
		return (c >= 0x20 && c != 0x7f) || c == '\t' || c == '\r'
	}
	if v, ok := jisVerdicts.Load(c); ok {
		return v.(bool)
	}
	ok := encodesToJISX0208(c)
	jisVerdicts.Store(c, ok)
	return ok
}

// encodesToJISX0208 reports whether c encodes to a JIS X 0208 code point in
// one of the standard rows: 1–8 (symbols, kana, Greek, Cyrillic, box
// drawing) and 16–84 (kanji). The x/text encoder follows the WHATWG index,
// which also maps row 13 (NEC special: ①, ㈱, Ⅰ) and rows 89–92 and
// 115–119 (IBM extensions), and half-width katakana to ESC ( I.
func encodesToJISX0208(c rune) bool {
	b, err := japanese.ISO2022JP.NewEncoder().Bytes([]byte(string(c)))
	if err != nil || len(b) != 8 || string(b[:3]) != "\x1b$B" || string(b[5:]) != "\x1b(B" {
		return false
	}
	row := int(b[3]) - 0x20
	if !(row >= 1 && row <= 8 || row >= 16 && row <= 84) {
		return false
	}
	if strings.ContainsRune(windowsForms, c) {
		return false
	}
	// Decoding must give the same character back.
	d, err := japanese.ISO2022JP.NewDecoder().Bytes(b)
	return err == nil && string(d) == string(c)
}
