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
// longer than MaxLineOctets, the hard limit every output line keeps; nor is
// a run of katakana (up to half a line) or of full-width letters and digits.
//
// Where a line must be broken, Wrap looks back up to breakLookback columns
// for a better place than the last one that fits: in Japanese right after
// 、。 or a closing bracket, else at a space, before an opening bracket or
// where a word likely begins (a particle or a longer run of hiragana
// followed by kanji, katakana or a number), and it avoids breaking between
// a number and its counter (2019|年) or after the honorific お/ご; in
// English it keeps a date ("28 May 2019") on one line. Lines are then a
// little shorter than they could be, never by more than breakLookback.
//
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
		return wrapper{max: widthJA, ambiguousWide: true, ja: true}, wrapCacheJA
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
	ja            bool // prefer Japanese break points (after 、。, before a word)
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

// breakLookback is how far back, in columns, wrapLine looks from the point
// where a line overflows for a better place to break it: ten full-width
// characters.
const breakLookback = 20

// maxKatakanaRun is the longest run of katakana, in columns, kept on one
// line: longer runs (rare; a whole line of katakana) may break.
const maxKatakanaRun = widthJA / 2

// token is a piece of a line that is never broken, with the white space
// that preceded it (dropped when the token starts a new line).
type token struct {
	space string
	text  string
	at    int // where text starts in the line
	width int
	open  bool // ends with a character that must not end a line
	word  bool // ends with a half-width character: the next one continues it
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\u3000' }

// Character classes that break preferences depend on.

func isHiragana(r rune) bool { return r >= 'ぁ' && r <= 'ゖ' || r == 'ゝ' || r == 'ゞ' }

// isKatakana: full- and half-width katakana and the prolonged sound mark,
// not the middle dot ・ (a separator).
func isKatakana(r rune) bool {
	return r >= 'ァ' && r <= 'ヺ' || r >= 'ー' && r <= 'ヿ' || r >= 'ㇰ' && r <= 'ㇿ' || r >= 'ｦ' && r <= 'ﾟ'
}

func isHan(r rune) bool {
	return r >= 0x4e00 && r <= 0x9fff || r >= 0x3400 && r <= 0x4dbf || r >= 0xf900 && r <= 0xfaff ||
		r >= 0x20000 && r <= 0x3134f || r == '々' || r == '〆' || r == 'ヶ' || r == '〇'
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' || r >= '０' && r <= '９' }

// isFullAlnum: full-width Latin letters and digits, which form words as
// their half-width forms do.
func isFullAlnum(r rune) bool {
	return r >= '０' && r <= '９' || r >= 'Ａ' && r <= 'Ｚ' || r >= 'ａ' && r <= 'ｚ'
}

func isAlnum(r rune) bool {
	return isFullAlnum(r) || r < 0x80 && (r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z')
}

// joins reports whether wide rune r continues the token ending with last
// (width so far tw) rather than starting a token: within a run of katakana
// or of full-width letters and digits.
func joins(last, r rune, tw int) bool {
	switch {
	case isKatakana(r):
		return isKatakana(last) && tw < maxKatakanaRun
	case isFullAlnum(r):
		return isFullAlnum(last)
	}
	return false
}

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
			lastRune, _ := utf8.DecodeLastRuneInString(last.text)
			if last.open || (!wide && last.word) || strings.ContainsRune(noStart, r) || (wide && joins(lastRune, r, last.width)) {
				last.text = s[last.at:end]
				last.width += rw
				last.open = strings.ContainsRune(noEnd, r)
				last.word = !wide
				continue
			}
		}
		toks = append(toks, token{
			space: space,
			text:  s[i:end],
			at:    i,
			width: rw,
			open:  strings.ContainsRune(noEnd, r),
			word:  !wide,
		})
	}
	return toks
}

// splitLong cuts every token longer than limit octets into pieces of at
// most limit octets, at character boundaries: the only breaks inside a
// token, to keep the octet limit.
func (w wrapper) splitLong(toks []token, limit int) []token {
	long := false
	for _, t := range toks {
		if len(t.text) > limit {
			long = true
			break
		}
	}
	if !long {
		return toks
	}
	out := make([]token, 0, len(toks)+4)
	for _, t := range toks {
		for len(t.text) > limit {
			cut := limit
			for cut > 0 && !utf8.RuneStart(t.text[cut]) {
				cut--
			}
			if cut == 0 { // limit is shorter than a character: cannot happen with limit ≥ 4
				cut = limit
			}
			head := t
			head.text = t.text[:cut]
			head.width = w.width(head.text)
			head.open, head.word = false, true
			out = append(out, head)
			t = token{text: t.text[cut:], at: t.at + cut, width: t.width - head.width, open: t.open, word: t.word}
		}
		out = append(out, t)
	}
	return out
}

// Break qualities, best last. A break is made at the best place within
// breakLookback columns before the overflow, the latest of equals.
const (
	breakAvoid = iota // a number and its counter, お/ご and its word, a date
	breakPoor         // within a word as far as we know: 流|出, パスワード|を
	breakFair         // a change of script: 不正|アクセス, VISA|カード
	breakGood         // before a word: 情報が|流出, 「, お客様の|ご利用
	breakSpace        // at a space (Japanese text: English text keeps breakPoor for every space)
	breakBest         // after 、。 or a closing bracket (not one a particle follows)
)

const (
	stops     = "、。，．！？!?"
	closers   = ")]}）］｝〕〉》」』】〙〗〟’”｠»"
	particles = "がをにはへとでものやか"
)

// quality rates a break between a and b, the tokens before and after it.
func (w wrapper) quality(line string, a, b token) int {
	if b.space != "" {
		if isDate(line, a, b) {
			return breakAvoid
		}
		if w.ja {
			return breakSpace
		}
		return breakPoor
	}
	if !w.ja {
		return breakPoor
	}
	prev, _ := utf8.DecodeLastRuneInString(a.text)
	next, n := utf8.DecodeRuneInString(b.text)
	after, _ := utf8.DecodeRuneInString(line[b.at+n:])
	switch {
	case strings.ContainsRune(stops, prev):
		return breakBest
	case strings.ContainsRune(closers, prev):
		if isHiragana(next) { // 「サンプル通販」|で: the particle belongs to the bracket
			return breakPoor
		}
		return breakBest
	case prev == '・' || prev == '：' || prev == '；' || strings.ContainsRune(noEnd, next):
		return breakGood
	case isDigit(prev) && isHan(next) || isHan(prev) && isDigit(next):
		return breakAvoid // 2019|年, 年|5月
	case (prev == 'お' || prev == 'ご') && (isHan(next) || isKatakana(next)):
		return breakAvoid // ご|利用, お|客様
	case isHiragana(prev) && wordStart(next, after):
		// After a particle or a run of hiragana (ました|, ことは|), not
		// after one kana of okurigana inside a word (問い|合わせ, 申し|訳).
		if strings.ContainsRune(particles, prev) || hiraganaRun(line[:a.at+len(a.text)]) >= 2 {
			return breakGood
		}
	case isHan(prev) && isKatakana(next) || isKatakana(prev) && isHan(next) ||
		isAlnum(prev) && !isAlnum(next) && !isDigit(prev) || !isAlnum(prev) && isAlnum(next) && !isDigit(next):
		return breakFair
	}
	return breakPoor
}

// wordStart reports whether next (followed by after) likely begins a word
// after hiragana: kanji, katakana, a letter or digit, or お/ご before one.
func wordStart(next, after rune) bool {
	if next == 'お' || next == 'ご' {
		return isHan(after) || isKatakana(after)
	}
	return isHan(next) || isKatakana(next) || isAlnum(next)
}

// hiraganaRun is the number of hiragana that s ends with.
func hiraganaRun(s string) int {
	n := 0
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if !isHiragana(r) {
			break
		}
		n++
		s = s[:len(s)-size]
	}
	return n
}

var months = []string{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
	"Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec"}

// isDate reports whether a and b, two words a space apart in line, are
// part of a date: "28 May", "May 2019", "May 28," or "28, 2019" of
// "May 28, 2019".
func isDate(line string, a, b token) bool {
	switch {
	case isNumber(a.text, 1, 2) && isMonth(b.text):
		return true
	case isMonth(a.text) && (isNumber(b.text, 4, 4) || isNumber(b.text, 1, 2)):
		return true
	case strings.HasSuffix(a.text, ",") && isNumber(a.text, 1, 2) && isNumber(b.text, 4, 4):
		words := strings.Fields(line[:a.at])
		return len(words) > 0 && isMonth(words[len(words)-1])
	}
	return false
}

func isMonth(s string) bool {
	s = strings.TrimRight(s, ".,;:)")
	for _, m := range months {
		if strings.EqualFold(s, m) {
			return true
		}
	}
	return false
}

// isNumber reports whether s is min to max digits, perhaps with trailing
// punctuation ("2019.", "28,").
func isNumber(s string, min, max int) bool {
	s = strings.TrimRight(s, ".,;:)")
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
	if len(pre) > MaxLineOctets/2 { // absurd indentation: dropped, so that lines keep the octet limit
		pre, rest, indent = "", strings.TrimLeft(line, " \t\u3000"), ""
	}
	b.WriteString(pre)
	// Only a token longer than a whole line is cut, and only to keep the
	// octet limit: a long URL stays on one line of its own.
	toks := w.splitLong(w.tokens(rest), MaxLineOctets-max(len(pre), len(indent)))
	if len(toks) == 0 {
		return
	}
	// q rates a break before toks[j]; only places near an overflow are rated.
	q := func(j int) int { return w.quality(rest, toks[j-1], toks[j]) }
	start := 0 // the current line's first token
	col, octets := w.width(pre), len(pre)
	emit := func(end int) {
		for k := start; k < end; k++ {
			if k > start {
				b.WriteString(toks[k].space)
			}
			b.WriteString(toks[k].text)
		}
	}
	for i := 0; i < len(toks); {
		t := toks[i]
		if i == start {
			col += t.width
			octets += len(t.text)
			i++
			continue
		}
		sw, so := w.width(t.space), len(t.space)
		if col+sw+t.width <= w.max && octets+so+len(t.text) <= MaxLineOctets {
			col += sw + t.width
			octets += so + len(t.text)
			i++
			continue
		}
		// toks[i] does not fit: break before it, or before an earlier
		// token that makes a better break, carrying toks[j:i] over.
		j, best := i, q(i)
		carry, carryOctets := 0, 0 // toks[k:i] on a line of their own
		for k := i - 1; k > start; k-- {
			carry += toks[k].width
			carryOctets += len(toks[k].text)
			if k < i-1 {
				carry += w.width(toks[k+1].space)
				carryOctets += len(toks[k+1].space)
			}
			if carry > breakLookback || len(indent)+carry+sw+t.width > w.max ||
				len(indent)+carryOctets+so+len(t.text) > MaxLineOctets {
				break
			}
			if best == breakBest {
				break // nothing earlier can be better
			}
			if qk := q(k); qk > best {
				j, best = k, qk
			}
		}
		emit(j)
		b.WriteByte('\n')
		b.WriteString(indent)
		start = j
		col, octets = len(indent), len(indent)
		for k := j; k < i; k++ {
			if k > j {
				col += w.width(toks[k].space)
				octets += len(toks[k].space)
			}
			col += toks[k].width
			octets += len(toks[k].text)
		}
		if j == i { // toks[i] starts the line
			col += t.width
			octets += len(t.text)
			i++
		}
	}
	emit(len(toks))
}
