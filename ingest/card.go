package ingest

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
// Full-width digits, spaces and dashes (what a Japanese IME types) count as
// their ASCII forms. A random digit string passes Luhn one time in ten, so the
// shapes are kept narrow: two phone numbers side by side must not look like a
// card. It runs on every field of every row: a field with fewer than 13
// possible digits is answered without decoding it.
func LooksLikeCardNumber(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		// ASCII digits, or the lead byte 0xEF of the 3-byte full-width forms.
		if c := s[i]; c-'0' <= 9 || c == 0xef {
			n++
		}
	}
	if n < 13 {
		return false
	}
	var sc cardScanner
	for _, r := range s {
		if d, ok := digitValue(r); ok {
			sc.digit(d)
			continue
		}
		if isGroupSep(r) && (sc.open || sc.afterSep && sc.sepN < maxSepRun) {
			if sc.open {
				if sc.closeGroup() {
					return true
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
			return true
		}
	}
	return sc.endRun()
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
	switch {
	case r >= '0' && r <= '9':
		return byte(r - '0'), true
	case r >= '０' && r <= '９':
		return byte(r - '０'), true
	}
	return 0, false
}

// isPlainSep reports whether r is how card numbers are usually grouped:
// space, hyphen and what Japanese input methods put in their place.
func isPlainSep(r rune) bool {
	switch r {
	case ' ', '-', '\u3000', '－', '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2212', 'ー':
		return true
	}
	return false
}

// isGroupSep reports whether r may separate digit groups: the plain
// separators and what else people put between a card's groups to get it
// past a filter or out of a spreadsheet (dots, slashes, commas,
// underscores, tabs, no-break spaces, their full-width forms).
func isGroupSep(r rune) bool {
	switch r {
	case '.', '/', ',', '_', '\t', '\u00a0', '．', '／', '，', '＿', '・':
		return true
	}
	return isPlainSep(r)
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
