package templates

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/oshirase/oshirase/notice"
)

// Prepared renders one template in one locale with one campaign's data for
// many recipients, as the worker does. It renders exactly what Set.Render
// renders, only cheaper: executing the templates is most of the cost of a
// notice, and the notices of a campaign differ in little more than a name.
//
// Where the analysis in analyse.go allows it, a Prepared executes the
// templates once per shape (which of the recipient fields the templates use
// are empty) with a marker in place of each non-empty field, and renders a
// notice by putting the recipient's values where the markers were, escaped
// in HTML as html/template would, before the subject is made one line and
// the text tidied and wrapped as usual. Otherwise it renders in full.
//
// The first notice of each shape is rendered both ways and compared; should
// they ever differ, the Prepared renders every later notice in full.
//
// A Prepared is safe for concurrent use.
type Prepared struct {
	name string
	lt   *localized
	view Input // Recipient is zero; a notice's goes in per render
	plan *plan // nil: render every notice in full
	lead rune  // first rune of every marker

	off    atomic.Bool // a pre-rendered notice differed from the full rendering
	mu     sync.Mutex  // held while building a skeleton
	shapes sync.Map    // shape (uint32) → *skeleton
	built  int         // skeletons in shapes, under mu
}

// maxShapes bounds the skeletons of one Prepared: with extra columns a
// template may use up to maxFields fields, whose 2^16 shapes could each hold
// a rendering. Notices of shapes past the first maxShapes render in full.
const maxShapes = 64

// renderFull is the skeleton of a shape rendered in full.
var renderFull = &skeleton{full: true}

// Candidate first runes of markers, private-use characters. Prepare takes
// the first that neither the templates nor the campaign's data contain.
var markerLeads = []rune{'\ue000', '\U000f0000', '\U00100000'}

// marker stands for field i in a skeleton.
func marker(lead rune, i int) string { return string([]rune{lead, lead + 1 + rune(i)}) }

// Prepare resolves in's data, locale, paragraphs and date (a zero Date is
// now, once) for rendering notices with Prepared.Render. in.Recipient is
// ignored. Errors are those Render would return for in.
func (s *Set) Prepare(name string, in Input) (*Prepared, error) {
	t, err := s.get(name)
	if err != nil {
		return nil, err
	}
	lt, view, err := t.view(in)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	p := &Prepared{name: name, lt: lt, view: view}
	if lt.plan != nil {
		for _, lead := range lt.plan.leads {
			if !viewContains(view, lead) {
				p.plan, p.lead = lt.plan, lead
				break
			}
		}
	}
	return p, nil
}

// viewContains reports whether r occurs in the data or paragraphs of view.
func viewContains(view Input, r rune) bool {
	for _, v := range view.Data {
		switch v := v.(type) {
		case string:
			if strings.ContainsRune(v, r) {
				return true
			}
		case []string:
			for _, s := range v {
				if strings.ContainsRune(s, r) {
					return true
				}
			}
		default: // resolve makes nothing else; be safe if it ever does
			return true
		}
	}
	for _, s := range view.Paragraphs {
		if strings.ContainsRune(s, r) {
			return true
		}
	}
	return false
}

// Render renders the notice for r: the same, errors included, as Set.Render
// with the Input given to Prepare and r as its Recipient.
func (p *Prepared) Render(r notice.Recipient) (*Rendered, error) {
	clean := cleanRecipient(r)
	if p.plan == nil || p.off.Load() {
		return p.full(clean)
	}
	var buf [maxFields]string // vals stays on the stack
	vals := fieldValues(buf[:0], &clean, p.plan.extra)
	var shape uint32
	for i, v := range vals {
		if p.plan.uses&(1<<i) == 0 || v == "" {
			continue
		}
		if strings.ContainsRune(v, p.lead) {
			// Substituting it would be right, but a value that could be a
			// marker could also pass the comparison below for a skeleton
			// split where a template printed a marker-like constant.
			return p.full(clean)
		}
		shape |= 1 << i
	}
	sk := p.skeleton(shape)
	if sk.full {
		return p.full(clean)
	}
	out, ok := sk.fill(vals, p.view.Locale)
	if !ok {
		return p.full(clean) // for its error
	}
	if !sk.checked.Load() {
		want, err := p.full(clean)
		if err != nil || *out != *want {
			// Name nothing of the recipient.
			if p.off.CompareAndSwap(false, true) {
				slog.Warn("templates: a pre-rendered notice differs from the full rendering; rendering in full from now on",
					"template", p.name, "locale", p.view.Locale)
			}
			return want, err
		}
		sk.checked.Store(true)
	}
	return out, nil
}

// full renders in the ordinary way; clean has been through cleanRecipient.
func (p *Prepared) full(clean notice.Recipient) (*Rendered, error) {
	view := p.view
	view.Recipient = clean
	out, err := p.lt.execute(view)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", p.name, err)
	}
	return out, nil
}

// skeleton is the rendering of one shape with markers, split at them.
type skeleton struct {
	full bool // the shape could not be pre-rendered: render in full

	subject, text, html segments

	// The final subject and text when no field shows in them: the same for
	// every recipient of the shape.
	fixedSubject, fixedText string
	subjectFixed, textFixed bool

	// The text, tidied and wrapped except for the lines that show fields.
	finished textPlan

	checked atomic.Bool // a notice of this shape matched its full rendering
}

// segments is a template's output cut at the markers: lits[0], the value of
// field slots[0], lits[1], … lits[len(slots)].
type segments struct {
	lits  []string
	slots []int
	size  int // total length of lits
}

// skeleton returns shape's skeleton, built the first time it is asked for.
func (p *Prepared) skeleton(shape uint32) *skeleton {
	if sk, ok := p.shapes.Load(shape); ok {
		return sk.(*skeleton)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if sk, ok := p.shapes.Load(shape); ok {
		return sk.(*skeleton)
	}
	if p.built == maxShapes {
		return renderFull
	}
	sk := p.build(shape)
	p.shapes.Store(shape, sk)
	p.built++
	return sk
}

// build renders shape with markers. Errors are not reported: the shape is
// rendered in full, which reports them.
func (p *Prepared) build(shape uint32) *skeleton {
	view := p.view
	for i := range numFields + len(p.plan.extra) {
		v := ""
		if shape&(1<<i) != 0 {
			v = marker(p.lead, i)
		}
		setField(&view.Recipient, p.plan.extra, i, v)
	}
	var parts [3]segments
	var finished textPlan
	for i, t := range []interface{ Execute(io.Writer, any) error }{p.lt.subject, p.lt.text, p.lt.html} {
		var b strings.Builder
		if err := t.Execute(&b, view); err != nil {
			return &skeleton{full: true}
		}
		seg, ok := split(b.String(), p.lead, shape)
		if !ok {
			return &skeleton{full: true}
		}
		parts[i] = seg
		if i == 1 && len(seg.slots) > 0 {
			tp, ok := planText(b.String(), p.lead, shape, p.view.Locale)
			if !ok {
				return &skeleton{full: true}
			}
			finished = tp
		}
	}
	sk := &skeleton{subject: parts[0], text: parts[1], html: parts[2], finished: finished}
	if len(sk.subject.slots) == 0 {
		s, err := p.lt.finishSubject(sk.subject.lits[0])
		if err != nil {
			return &skeleton{full: true}
		}
		sk.fixedSubject, sk.subjectFixed = s, true
	}
	if len(sk.text.slots) == 0 {
		sk.fixedText, sk.textFixed = finishText(sk.text.lits[0], p.view.Locale), true
	}
	return sk
}

// split cuts s at the markers of the fields in shape. It fails on a lead
// rune that starts no such marker: something other than a field printed it.
func split(s string, lead rune, shape uint32) (segments, bool) {
	var seg segments
	m := string(lead)
	for {
		i := strings.Index(s, m)
		if i < 0 {
			break
		}
		r, n := utf8.DecodeRuneInString(s[i+len(m):])
		f := int(r - lead - 1)
		if f < 0 || f >= maxFields || shape&(1<<f) == 0 {
			return segments{}, false
		}
		seg.lits = append(seg.lits, s[:i])
		seg.slots = append(seg.slots, f)
		s = s[i+len(m)+n:]
	}
	seg.lits = append(seg.lits, s)
	for _, l := range seg.lits {
		seg.size += len(l)
	}
	return seg, true
}

// fill renders a notice from sk and the recipient's (cleaned) field values.
// It fails where the full rendering fails: an empty subject.
func (sk *skeleton) fill(vals []string, locale string) (*Rendered, bool) {
	out := &Rendered{Subject: sk.fixedSubject, Text: sk.fixedText}
	if !sk.subjectFixed {
		out.Subject = oneLine(sk.subject.join(vals))
		if out.Subject == "" {
			return nil, false
		}
	}
	if !sk.textFixed {
		if t, ok := sk.finished.fill(vals, locale); ok {
			out.Text = t
		} else {
			out.Text = finishText(sk.text.join(vals), locale)
		}
	}
	if len(sk.html.slots) == 0 {
		out.HTML = sk.html.lits[0]
	} else {
		var buf [maxFields]string
		esc := buf[:len(vals)]
		for _, f := range sk.html.slots {
			if esc[f] == "" {
				esc[f] = escapeHTMLText(vals[f])
			}
		}
		out.HTML = sk.html.join(esc)
	}
	return out, true
}

func (s *segments) join(vals []string) string {
	if len(s.slots) == 0 {
		return s.lits[0]
	}
	n := s.size
	for _, f := range s.slots {
		n += len(vals[f])
	}
	var b strings.Builder
	b.Grow(n)
	for i, f := range s.slots {
		b.WriteString(s.lits[i])
		b.WriteString(vals[f])
	}
	b.WriteString(s.lits[len(s.slots)])
	return b.String()
}

// textPlan is a text skeleton after finishText, as far as that does not
// depend on the values of the fields: tidyText and Wrap work line by line,
// so every line without a field is finished once per shape, and only the
// lines that show a field (a name, the last 4 digits) are wrapped per notice.
// That holds for values that cannot change which lines are blank or what
// is trimmed: no CR or LF, no trailing space or tab (fill checks).
type textPlan struct {
	parts []textPart
	size  int // bytes of fixed text
}

// textPart is finished lines (each with its LF) or one line with fields.
type textPart struct {
	fixed string
	line  *segments
}

// planText makes the textPlan of a text skeleton s with markers.
func planText(s string, lead rune, shape uint32, locale string) (textPlan, bool) {
	w, _ := wrapperFor(locale)
	var tp textPlan
	var fixed strings.Builder
	flush := func() {
		if fixed.Len() > 0 {
			tp.parts = append(tp.parts, textPart{fixed: fixed.String()})
			tp.size += fixed.Len()
			fixed.Reset()
		}
	}
	for _, l := range tidyLines(s) {
		if !strings.ContainsRune(l, lead) {
			fixed.WriteString(w.wrap(l))
			fixed.WriteByte('\n')
			continue
		}
		seg, ok := split(l, lead, shape)
		if !ok {
			return textPlan{}, false
		}
		flush()
		tp.parts = append(tp.parts, textPart{line: &seg})
		tp.size += seg.size + 1
	}
	flush()
	return tp, len(tp.parts) > 0
}

// fill finishes the text with the recipient's values; false if a value
// could change the lines around it (then finishText does the whole text).
func (tp *textPlan) fill(vals []string, locale string) (string, bool) {
	if len(tp.parts) == 0 {
		return "", false
	}
	n := tp.size
	for _, p := range tp.parts {
		if p.line == nil {
			continue
		}
		for _, f := range p.line.slots {
			v := vals[f]
			if strings.ContainsAny(v, "\r\n") || strings.HasSuffix(v, " ") || strings.HasSuffix(v, "\t") {
				return "", false
			}
			n += len(v)
		}
	}
	w, _ := wrapperFor(locale)
	var b strings.Builder
	b.Grow(n + n/32)
	for _, p := range tp.parts {
		if p.line == nil {
			b.WriteString(p.fixed)
			continue
		}
		b.WriteString(w.wrap(p.line.join(vals)))
		b.WriteByte('\n')
	}
	return b.String(), true
}

// escapeHTMLText is what html/template's escaper for HTML text
// (_html_template_htmlescaper, htmlEscaper in html/template/html.go) makes of
// a string: htmlReplacer with htmlReplacementTable. That table replaces only
// NUL and ASCII characters, and no byte of a multi-byte UTF-8 sequence (nor
// of an invalid one, which htmlReplacer passes through a byte at a time) is
// ASCII, so going byte by byte finds exactly the runes it replaces.
func escapeHTMLText(s string) string {
	var b strings.Builder
	written := 0
	for i := 0; i < len(s); i++ {
		var repl string
		switch s[i] {
		case 0:
			repl = "\uFFFD"
		case '"':
			repl = "&#34;"
		case '&':
			repl = "&amp;"
		case '\'':
			repl = "&#39;"
		case '+':
			repl = "&#43;"
		case '<':
			repl = "&lt;"
		case '>':
			repl = "&gt;"
		default:
			continue
		}
		if written == 0 {
			b.Grow(len(s) + 16)
		}
		b.WriteString(s[written:i])
		b.WriteString(repl)
		written = i + 1
	}
	if written == 0 {
		return s
	}
	b.WriteString(s[written:])
	return b.String()
}
