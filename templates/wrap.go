package templates

import (
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/text/width"
)

// MaxLineOctets is the longest line RFC 5322 allows in a message body,
// not counting CRLF. Wrap never produces a longer line.
const MaxLineOctets = 998

// Line widths in display columns. A full-width character takes two columns,
// so 76 columns is 38 Japanese characters.
const (
	widthJA = 76
	widthEN = 76
)

// Characters that must not begin a line (closing brackets and punctuation,
// small kana, prolonged sound mark) and characters that must not end one
// (opening brackets): simple Japanese kinsoku shori. ASCII punctuation is
// included so "1234)" or "(1234" never split either.
const (
	noStart = "、。，．,.)]}）］｝〕〉》」』】〙〗〟’”｠»・：；:;!?！？ーぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ々〻ゝゞヽヾ…‥"
	noEnd   = "([{（［｛〔〈《「『【〘〖〝‘“｟«"
)

// Wrap folds the lines of a plain-text body for reading in a mail client:
// Japanese at 38 full-width characters (76 columns) with simple kinsoku
// (no line begins with 、。」 and the like, none ends with 「), English at 76
// columns on word boundaries. A run of non-space half-width characters (a
// word, a number, a URL, an address) is never split unless it alone is
// longer than MaxLineOctets, the hard limit every output line keeps.
// Lines that already fit are left as they are; a wrapped list item
// ("・", "- ", "1. ") continues with a hanging indent. CRLF becomes LF.
func Wrap(text, locale string) string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	w, cache := wrapperFor(locale)
	var b strings.Builder
	b.Grow(len(text) + len(text)/32)
	for i := 0; ; i++ {
		line, rest, more := strings.Cut(text, "\n")
		text = rest
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(cache.wrap(w, line))
		if !more {
			break
		}
	}
	return b.String()
}

// wrapperFor returns the wrapper for locale and its cache of wrapped lines.
func wrapperFor(locale string) (wrapper, *lineCache) {
	if locale == "ja" {
		return wrapper{max: widthJA, ambiguousWide: true}, wrapCacheJA
	}
	return wrapper{max: widthEN}, wrapCacheEN
}

// lineCache remembers wrapped lines. A campaign's notices differ from each
// other in a few lines (name, last 4 digits) and share all the others, so
// after the first message nearly every line is a map look-up instead of a
// width computation — this was half of the rendering time. The cache is
// bounded: when it fills up (many distinct personalised lines) it starts
// over, which costs one re-wrap per line.
type lineCache struct {
	m atomic.Pointer[sync.Map]
	n atomic.Int64
}

const lineCacheMax = 8192

var wrapCacheJA, wrapCacheEN = newLineCache(), newLineCache()

func newLineCache() *lineCache {
	c := &lineCache{}
	c.m.Store(new(sync.Map))
	return c
}

func (c *lineCache) wrap(w wrapper, line string) string {
	m := c.m.Load()
	if v, ok := m.Load(line); ok {
		return v.(string)
	}
	out := w.wrap(line)
	if len(line) <= 4096 { // keep the cache small in bytes too
		if c.n.Add(1) > lineCacheMax {
			c.m.Store(new(sync.Map))
			c.n.Store(0)
		}
		// Key (and value, when unchanged) are cloned: line is a slice of
		// the caller's text, which would otherwise stay alive with the entry.
		key := strings.Clone(line)
		if out == line {
			out = key
		}
		m.Store(key, out)
	}
	return out
}

type wrapper struct {
	max           int
	ambiguousWide bool // East Asian ambiguous characters (①, ※, …) take two columns
}

// wrap folds one line (no LF in it) as Wrap does.
func (w wrapper) wrap(line string) string {
	if len(line) <= MaxLineOctets && w.width(line) <= w.max {
		return line
	}
	var b strings.Builder
	w.wrapLine(&b, line)
	return b.String()
}

func (w wrapper) runeWidth(r rune) int {
	if r < 0x1100 && (r < 0xa1 || !w.ambiguousWide) {
		return 1 // nothing below U+1100 is wide; ambiguous ones start at U+00A1
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	case width.EastAsianAmbiguous:
		if w.ambiguousWide {
			return 2
		}
	}
	return 1
}

func (w wrapper) width(s string) int {
	n := 0
	for _, r := range s {
		n += w.runeWidth(r)
	}
	return n
}

// token is a piece of a line that is never broken, with the white space
// that preceded it (dropped when the token starts a new line).
type token struct {
	space string
	text  string
	width int
	open  bool // ends with a character that must not end a line
	word  bool // ends with a half-width character: the next one continues it
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\u3000' }

func (w wrapper) tokens(s string) []token {
	toks := make([]token, 0, len(s)/4)
	spaceStart := -1
	for i, r := range s {
		if isSpace(r) {
			if spaceStart < 0 {
				spaceStart = i
			}
			continue
		}
		space := ""
		if spaceStart >= 0 {
			space = s[spaceStart:i]
			spaceStart = -1
		}
		rw := w.runeWidth(r)
		wide := rw == 2
		// The bytes the rune took, not utf8.RuneLen(r): an invalid byte
		// decodes to U+FFFD (3 bytes long) but took one.
		_, size := utf8.DecodeRuneInString(s[i:])
		end := i + size
		if n := len(toks); n > 0 && space == "" {
			// Tokens are contiguous slices of s, so extending one is
			// re-slicing: no copying.
			last := &toks[n-1]
			if last.open || (!wide && last.word) || strings.ContainsRune(noStart, r) {
				last.text = s[end-len(last.text)-size : end]
				last.width += rw
				last.open = strings.ContainsRune(noEnd, r)
				last.word = !wide
				continue
			}
		}
		toks = append(toks, token{
			space: space,
			text:  s[i:end],
			width: rw,
			open:  strings.ContainsRune(noEnd, r),
			word:  !wide,
		})
	}
	return toks
}

// prefix splits a line into its indentation plus list marker, and the rest.
func prefix(line string) (string, string) {
	i := 0
	for i < len(line) {
		r, n := utf8.DecodeRuneInString(line[i:])
		if !isSpace(r) {
			break
		}
		i += n
	}
	rest := line[i:]
	for _, m := range []string{"・", "※", "■", "●", "○", "◆", "- ", "* ", "• "} {
		if strings.HasPrefix(rest, m) {
			j := i + len(m)
			for j < len(line) && line[j] == ' ' {
				j++
			}
			return line[:j], line[j:]
		}
	}
	// "1. ", "2) "
	j := i
	for j < len(line) && line[j] >= '0' && line[j] <= '9' {
		j++
	}
	if j > i && j+1 < len(line) && (line[j] == '.' || line[j] == ')') && line[j+1] == ' ' {
		return line[:j+2], line[j+2:]
	}
	return line[:i], line[i:]
}

func (w wrapper) wrapLine(b *strings.Builder, line string) {
	line = strings.TrimRight(line, " \t")
	pre, rest := prefix(line)
	indent := strings.Repeat(" ", w.width(pre))
	if w.width(pre) > w.max/2 || len(indent) > MaxLineOctets/2 {
		indent = ""
	}
	b.WriteString(pre)
	col, octets, empty := w.width(pre), len(pre), true
	for _, t := range w.tokens(rest) {
		sw, so := w.width(t.space), len(t.space)
		if !empty && (col+sw+t.width > w.max || octets+so+len(t.text) > MaxLineOctets) {
			b.WriteByte('\n')
			b.WriteString(indent)
			col, octets, empty = len(indent), len(indent), true
		}
		if !empty {
			b.WriteString(t.space)
			col += sw
			octets += so
		}
		text, tw := t.text, t.width
		// Only a token longer than a whole line is cut, and only to keep
		// the octet limit: a long URL stays on one line of its own.
		for octets+len(text) > MaxLineOctets {
			cut := MaxLineOctets - octets
			for cut > 0 && !utf8.RuneStart(text[cut]) {
				cut--
			}
			if cut == 0 { // not even one rune fits after the indent
				b.WriteByte('\n')
				col, octets = 0, 0
				continue
			}
			b.WriteString(text[:cut])
			b.WriteByte('\n')
			b.WriteString(indent)
			tw -= w.width(text[:cut])
			text = text[cut:]
			col, octets = len(indent), len(indent)
		}
		b.WriteString(text)
		col += tw
		octets += len(text)
		empty = false
	}
}
