package ingest

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// LooksLikeCardNumber reports whether s holds what may be a full payment card
// number (PAN): 13 to 19 digits that pass the Luhn check, written either
//
//   - as one run of digits optionally grouped by single spaces or dashes
//     ("4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111"), or
//   - card-shaped inside a longer run: groups of four and a last group
//     (4-4-4-4, 4-4-4-4-3, ...) or 4-6-x (Amex, Diners), so that
//     "4111 1111 1111 1111 12/25" or "2019-05-28 4111-1111-1111-1111" are
//     caught although the whole run has more than 19 digits or fails Luhn.
//
// The text is read as NFKC with format characters (zero-width space and
// joiner, word joiner, soft hyphen, BOM) and combining marks taken out, so
// full-width digits and spaces (what a Japanese IME types), mathematical
// digits and invisible characters between digits change nothing. Digit
// groups may be separated by anything Unicode calls a space, punctuation or
// symbol (4111、1111, 4111+1111, 4111|1111, 4111〜1111): the categories
// decide, not a list. Only single spaces and dashes make the plain rule's
// groups; any other separator needs the card's shape, so that dates
// ("2009/05/01 - 2019/05/27") and amounts ("1,234,567,890,123") are not
// taken for one. A random digit string passes Luhn one time in ten, so the
// shapes are kept narrow: two phone numbers side by side must not look like
// a card. It runs on every field of every row: a field that cannot hold 13
// digits is answered without decoding it.
func LooksLikeCardNumber(s string) bool {
	t, ok := cardText(s)
	if !ok {
		return false
	}
	_, _, found := scanCard(t)
	return found
}

// MaskCardNumbers returns s with the digits of every card number in it
// replaced by '*', for text that must be shown (an error message quoting
// what it refused) but must not repeat a number. Text with a card number
// comes back in the form the detector reads (NFKC, no format characters).
func MaskCardNumbers(s string) string {
	t, ok := cardText(s)
	if !ok {
		return s
	}
	start, end, found := scanCard(t)
	if !found {
		return s
	}
	var b strings.Builder
	for found {
		b.WriteString(t[:start])
		for _, r := range t[start:end] {
			if _, isDigit := digitValue(r); isDigit {
				r = '*'
			}
			b.WriteRune(r)
		}
		t = t[end:]
		start, end, found = scanCard(t)
	}
	b.WriteString(t)
	return b.String()
}

// cardText returns s as the detector reads it, and false when s cannot hold
// 13 digits. ASCII text is read as it is (NFKC leaves it alone); other text
// is normalised, since one character may become digits (full-width, "𝟒",
// "⑳" → "20", at most two).
func cardText(s string) (string, bool) {
	digits, other := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c-'0' <= 9:
			digits++
		case c >= 0xc0: // the lead byte of a multi-byte character
			other++
		}
	}
	if digits+2*other < 13 {
		return "", false
	}
	if other == 0 {
		return s, true
	}
	// Letters (kana, kanji) end a run of digits before NFKC and after it:
	// text whose only non-ASCII characters are letters is read as it is,
	// which spares the normalisation for most Japanese text.
	letters := true
	for _, r := range s {
		if r >= utf8.RuneSelf && !unicode.IsLetter(r) {
			letters = false
			break
		}
	}
	if letters {
		return s, true
	}
	t := norm.NFKC.String(s)
	t = strings.Map(func(r rune) rune {
		if r >= utf8.RuneSelf && unicode.In(r, unicode.Cf, unicode.Mn, unicode.Me) {
			return -1
		}
		return r
	}, t)
	return t, true
}

// runEnd is where the run of digits and separators at t[i:] ends.
func runEnd(t string, i int) int {
	for j, r := range t[i:] {
		if _, ok := digitValue(r); !ok && !isGroupSep(r) {
			return i + j
		}
	}
	return len(t)
}

// scanCard finds the first card number in t (a cardText) and returns the
// byte range of the digit run that holds it.
func scanCard(t string) (start, end int, found bool) {
	var sc cardScanner
	for i, r := range t {
		if d, ok := digitValue(r); ok {
			if !sc.open && !sc.afterSep {
				start = i // digit() starts a new run
			}
			sc.digit(d)
			continue
		}
		if (sc.open || sc.afterSep && sc.sepN < maxSepRun) && isGroupSep(r) {
			if sc.open {
				if sc.closeGroup() {
					return start, runEnd(t, i), true
				}
				sc.sepN = 0
			}
			sc.sepN++
			if sc.sepN > 1 || !isPlainSep(r) {
				sc.wide = true
			}
			sc.afterSep = true
			continue
		}
		if sc.endRun() {
			return start, i, true
		}
	}
	if sc.endRun() {
		return start, len(t), true
	}
	return 0, 0, false
}

// cardScanner follows one run of digit groups.
type cardScanner struct {
	// The whole run, for the plain "13–19 digits with separators" rule.
	run  [19]byte
	runN int // digits in the run so far (may exceed len(run))

	// The tail of the run, for card-shaped windows: the digits of the groups
	// that a window ending at a later group could still include (at most 18
	// of them) and the current group (at most 20 kept; more makes it "long").
	tail   [40]byte
	n      int     // digits in tail
	starts [20]int // start of each closed group in tail
	g      int     // closed groups in tail
	cur    int     // start of the open group in tail
	glen   int     // digits in the open group

	open     bool // the last rune was a digit
	afterSep bool // the last rune was a separator that follows a digit
	sepN     int  // separators in a row since the last digit
	// wide: the run has a separator other than one space or dash between
	// groups ("4111.1111", "4111 - 1111"). Such a run is a card number only
	// in a card's shape: as a plain 13–19 digits it would take dates
	// ("2009/05/01 - 2019/05/27") and amounts ("1,234,567,890,123") for one.
	wide bool
}

// maxSepRun is the most separators between two groups of one run
// ("4111 - 1111" has three).
const maxSepRun = 3

func (sc *cardScanner) digit(d byte) {
	if !sc.open {
		if !sc.afterSep {
			sc.reset() // a new run
		}
		sc.open, sc.afterSep, sc.sepN = true, false, 0
		sc.cur, sc.glen = sc.n, 0
	}
	if sc.runN < len(sc.run) {
		sc.run[sc.runN] = d
	}
	sc.runN++
	if sc.glen < 20 {
		sc.tail[sc.n] = d
		sc.n++
	}
	sc.glen++
}

func (sc *cardScanner) reset() {
	sc.runN, sc.n, sc.g, sc.open, sc.afterSep, sc.sepN, sc.wide = 0, 0, 0, false, false, 0, false
}

// endRun ends the current run (a rune that is neither digit nor a single
// separator, or the end of s) and reports whether it held a card number.
func (sc *cardScanner) endRun() bool {
	found := sc.open && sc.closeGroup()
	found = found || (!sc.wide && sc.runN >= 13 && sc.runN <= 19 && luhn(sc.run[:sc.runN]))
	sc.reset()
	return found
}

// closeGroup closes the open group and checks the card-shaped windows that
// end with it.
func (sc *cardScanner) closeGroup() bool {
	sc.open = false
	if sc.glen > 19 {
		// No window may hold this group; start afresh after it.
		sc.n, sc.g = 0, 0
		return false
	}
	sc.starts[sc.g] = sc.cur
	sc.g++
	e := sc.g - 1
	if sc.check(sc.starts[e]) {
		return true
	}
	for k := e - 1; k >= 0; k-- {
		l := sc.starts[k+1] - sc.starts[k]
		if l == 4 {
			if sc.check(sc.starts[k]) {
				return true
			}
			continue
		}
		// 4-6-x: Amex 4-6-5, Diners 4-6-4.
		if l == 6 && k == e-1 && k >= 1 && sc.starts[k]-sc.starts[k-1] == 4 && sc.check(sc.starts[k-1]) {
			return true
		}
		break
	}
	// Keep only what a window ending at a later group could include: that
	// window has at least one more digit, so at most 18 of these.
	k := 0
	for k < sc.g && sc.n-sc.starts[k] > 18 {
		k++
	}
	if k > 0 {
		off := 0
		if k < sc.g {
			off = sc.starts[k]
		} else {
			off = sc.n
		}
		copy(sc.tail[:], sc.tail[off:sc.n])
		sc.n -= off
		copy(sc.starts[:], sc.starts[k:sc.g])
		sc.g -= k
		for i := 0; i < sc.g; i++ {
			sc.starts[i] -= off
		}
	}
	return false
}

// check tests the window tail[from:n].
func (sc *cardScanner) check(from int) bool {
	l := sc.n - from
	return l >= 13 && l <= 19 && luhn(sc.tail[from:sc.n])
}

func digitValue(r rune) (byte, bool) {
	if r >= '0' && r <= '9' {
		return byte(r - '0'), true
	}
	return 0, false // other digits are ASCII once cardText has normalised them
}

// isPlainSep reports whether r is how card numbers are usually grouped:
// space, hyphen and what Japanese input methods put in their place (after
// NFKC: the ideographic space is a space, the full-width hyphen a hyphen).
func isPlainSep(r rune) bool {
	switch r {
	case ' ', '-', '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2212', 'ー', 'ｰ':
		return true
	}
	return false
}

// isGroupSep reports whether r may separate digit groups: what Unicode
// calls a space (Zs), punctuation (P*) or a symbol (S*), a tab, and the
// plain separators. People put all of these between a card's groups to get
// it past a filter or out of a spreadsheet.
func isGroupSep(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || r == '\t' || r > ' ' && r < 0x7f && !('0' <= r && r <= '9' || 'a' <= r|0x20 && r|0x20 <= 'z')
	}
	return isPlainSep(r) || unicode.In(r, unicode.Zs, unicode.P, unicode.S)
}

// luhn reports whether the digits d pass the Luhn (mod 10) check.
func luhn(d []byte) bool {
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i])
		if double {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}
