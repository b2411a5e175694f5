// Package templates renders the notices oshirase sends: a subject, a plain
// text body and an HTML body per template and locale (ja, en).
//
// The default templates are embedded in the binary. A directory with the same
// layout can replace or add templates at start-up:
//
//	<name>/meta.json          description, data fields, sample data
//	<name>/ja/subject.tmpl    text/template, one line after rendering
//	<name>/ja/text.tmpl       text/template, wrapped by Wrap after rendering
//	<name>/ja/html.tmpl       html/template, a whole document
//	<name>/en/...             the same in English
//
// A template replaced from the directory is replaced as a whole (meta.json
// and both locales), so a template never mixes files of two origins.
// Everything is parsed and rendered with its sample data at Load: a broken
// template stops the service from starting rather than failing mid-campaign.
package templates

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	"github.com/oshirase/oshirase/notice"
)

//go:embed card-reissue password-reset incident-update
var embedded embed.FS

// Locales every template provides, in display order.
var Locales = []string{notice.LocaleJA, notice.LocaleEN}

// Field kinds.
const (
	KindString = "string" // a string, or {"ja": "...", "en": "..."}
	KindList   = "list"   // a list of strings, or {"ja": [...], "en": [...]}
	KindDate   = "date"   // "2019-05-28"
	KindURL    = "url"    // a string (or one per locale) that is an https URL without user:password@
	KindEmail  = "email"  // a string (or one per locale) that is a bare address: no name, no ?query
)

// ErrUnknownTemplate is returned (wrapped) for a template name the Set lacks.
var ErrUnknownTemplate = errors.New("unknown template")

// Input is everything a template sees: .Data (campaign incident data),
// .Recipient, .Paragraphs, .Date and .Locale.
type Input struct {
	Locale     string           // "ja" or "en"
	Data       map[string]any   // campaign data, as decoded from JSON (lists are []any of string)
	Recipient  notice.Recipient // Name, Email, CardBrand, CardLast4, CustomerID, Extra
	Paragraphs []string         // campaign's extra paragraphs: plain text, escaped in HTML, placed before the contact section
	Date       time.Time        // the notice date shown at the end; zero means now
}

// Rendered is one notice ready to be put into a message. Subject is one
// line; Text uses LF line endings, no line over MaxLineOctets octets.
type Rendered struct{ Subject, Text, HTML string }

// Info describes a template for the API and the CLI.
type Info struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Locales     []string       `json:"locales"`
	Fields      []Field        `json:"fields"`
	Sample      map[string]any `json:"sample,omitempty"`
}

// Field is one campaign data field a template uses.
type Field struct {
	Name        string `json:"name"`
	Required    bool   `json:"required"`
	Kind        string `json:"kind"` // KindString, KindList, KindDate, KindURL or KindEmail
	Description string `json:"description"`
	// Why a required field is required, added to the error when it is
	// missing: "APPI … requires a notice to state the cause".
	Why string `json:"why,omitempty"`
}

// meta is the content of meta.json.
type meta struct {
	Description string         `json:"description"`
	Fields      []Field        `json:"fields"`
	Sample      map[string]any `json:"sample"`
}

// Set is a loaded, validated set of templates. It is safe for concurrent use.
type Set struct {
	byName map[string]*tmpl
}

type tmpl struct {
	info    Info
	locales map[string]*localized
}

type localized struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template

	// How Prepared may pre-render (see analyse.go); plan is nil and
	// noPlan says why when it may not.
	plan   *plan
	noPlan error
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	fieldRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// Load returns the embedded templates, with the templates found in dir (if
// dir != "") replacing embedded ones of the same name or adding new ones.
// Every template is parsed and rendered with its sample data in both
// locales; an error names the file and, where there is one, the line.
func Load(dir string) (*Set, error) {
	s := &Set{byName: make(map[string]*tmpl)}
	if err := s.addFS(embedded, "templates"); err != nil {
		return nil, fmt.Errorf("embedded templates: %w", err)
	}
	if dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("template dir: %w", err)
		}
		if err := s.addFS(os.DirFS(dir), dir); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// addFS loads every template directory at the root of fsys. label is how
// errors name fsys's root.
func (s *Set) addFS(fsys fs.FS, label string) error {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	for _, e := range entries {
		name := e.Name()
		// Skip files (a README), hidden directories and Go test data, so
		// the package's own source directory works as an override dir.
		if !e.IsDir() || strings.HasPrefix(name, ".") || name == "testdata" {
			continue
		}
		if !nameRE.MatchString(name) {
			return fmt.Errorf("%s: template name %q: use lower-case letters, digits and '-'", join(label, name), name)
		}
		t, err := load(fsys, label, name)
		if err != nil {
			return err
		}
		s.byName[name] = t
	}
	return nil
}

func join(label string, elem ...string) string {
	if label == "templates" { // the embedded tree, named as in the repository
		return path.Join(append([]string{label}, elem...)...)
	}
	return filepath.Join(append([]string{label}, elem...)...)
}

func load(fsys fs.FS, label, name string) (*tmpl, error) {
	metaPath := join(label, name, "meta.json")
	raw, err := fs.ReadFile(fsys, path.Join(name, "meta.json"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", metaPath, err)
	}
	var m meta
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", metaPath, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", metaPath, err)
	}
	t := &tmpl{
		info: Info{
			Name:        name,
			Description: m.Description,
			Locales:     slices.Clone(Locales),
			Fields:      m.Fields,
			Sample:      m.Sample,
		},
		locales: make(map[string]*localized),
	}
	if err := t.check(m.Sample); err != nil {
		return nil, fmt.Errorf("%s: sample: %w", metaPath, err)
	}

	entries, err := fs.ReadDir(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", join(label, name), err)
	}
	for _, e := range entries {
		if e.IsDir() && !notice.ValidLocale(e.Name()) && !strings.HasPrefix(e.Name(), ".") {
			return nil, fmt.Errorf("%s: unsupported locale %q (want %s)", join(label, name, e.Name()), e.Name(), strings.Join(Locales, " or "))
		}
	}
	declared := make(map[string]bool, len(m.Fields))
	for _, f := range m.Fields {
		declared[f.Name] = true
	}
	for _, loc := range Locales {
		lt := &localized{}
		read := func(file string) (string, string, error) {
			p := join(label, name, loc, file)
			b, err := fs.ReadFile(fsys, path.Join(name, loc, file))
			if err != nil {
				return "", p, fmt.Errorf("%s: %w", p, err)
			}
			return string(b), p, nil
		}
		funcs := funcMap(loc)
		for _, file := range []string{"subject.tmpl", "text.tmpl"} {
			src, p, err := read(file)
			if err != nil {
				return nil, err
			}
			tt, err := texttemplate.New(p).Funcs(funcs).Option("missingkey=error").Parse(src)
			if err != nil {
				return nil, fileError(p, err)
			}
			if err := checkDataFields(tt.Tree, declared); err != nil {
				return nil, err
			}
			if file == "subject.tmpl" {
				lt.subject = tt
			} else {
				lt.text = tt
			}
		}
		src, p, err := read("html.tmpl")
		if err != nil {
			return nil, err
		}
		ht, err := htmltemplate.New(p).Funcs(htmltemplate.FuncMap(funcs)).Option("missingkey=error").Parse(src)
		if err != nil {
			return nil, fileError(p, err)
		}
		if err := checkDataFields(ht.Tree, declared); err != nil {
			return nil, err
		}
		lt.html = ht
		t.locales[loc] = lt
	}

	// Render both ways a campaign can look: every field and a named
	// recipient with a card; required fields only and an anonymous recipient.
	required := make(map[string]any)
	for _, f := range m.Fields {
		if f.Required {
			required[f.Name] = m.Sample[f.Name]
		}
	}
	for _, loc := range Locales {
		for _, in := range []Input{
			{Locale: loc, Data: m.Sample, Recipient: SampleRecipient(loc), Paragraphs: []string{"sample paragraph"}},
			{Locale: loc, Data: required},
		} {
			in.Date = time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC)
			if _, err := t.render(in); err != nil {
				if strings.Contains(err.Error(), ".Recipient.Extra.") && strings.Contains(err.Error(), "map has no entry for key") {
					// The natural spelling fails: not every upload has every column.
					return nil, fmt.Errorf(`%w (an extra column may be missing for a recipient: write index .Recipient.Extra "column", which gives "" then)`, err)
				}
				return nil, err
			}
		}
	}
	// After rendering: the HTML templates are escaped now.
	for _, lt := range t.locales {
		lt.plan, lt.noPlan = planFor(lt)
	}
	return t, nil
}

func (m *meta) check() error {
	if strings.TrimSpace(m.Description) == "" {
		return errors.New("description is empty")
	}
	if len(m.Fields) == 0 {
		return errors.New("no fields")
	}
	seen := make(map[string]bool)
	for i, f := range m.Fields {
		if !fieldRE.MatchString(f.Name) {
			return fmt.Errorf("fields[%d]: name %q: use lower-case letters, digits and '_' (a template reads it as .Data.%s)", i, f.Name, f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("fields[%d]: duplicate field %q", i, f.Name)
		}
		seen[f.Name] = true
		switch f.Kind {
		case KindString, KindList, KindDate, KindURL, KindEmail:
		default:
			return fmt.Errorf("field %q: unknown kind %q (want %s, %s, %s, %s or %s)", f.Name, f.Kind, KindString, KindList, KindDate, KindURL, KindEmail)
		}
	}
	if m.Sample == nil {
		return errors.New("no sample data")
	}
	return nil
}

// SampleRecipient is the recipient templates are tried with at Load and in
// Validate, and that previews show.
func SampleRecipient(locale string) notice.Recipient {
	r := notice.Recipient{
		Email:      "taro.yamada@example.com",
		CustomerID: "C-0001234",
		CardBrand:  "VISA",
		CardLast4:  "1234",
		Locale:     locale,
	}
	if locale == notice.LocaleJA {
		r.Name = "山田 太郎"
	} else {
		r.Name = "Taro Yamada"
	}
	return r
}

// Has reports whether the set has a template called name.
func (s *Set) Has(name string) bool {
	_, ok := s.byName[name]
	return ok
}

// List describes every template, sorted by name.
func (s *Set) List() []Info {
	out := make([]Info, 0, len(s.byName))
	for _, t := range s.byName {
		out = append(out, t.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Set) get(name string) (*tmpl, error) {
	t, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTemplate, name)
	}
	return t, nil
}

// Sample returns the input a preview of template name in locale uses: its
// sample data and SampleRecipient, dated now.
func (s *Set) Sample(name, locale string) (Input, error) {
	t, err := s.get(name)
	if err != nil {
		return Input{}, err
	}
	return Input{Locale: locale, Data: t.info.Sample, Recipient: SampleRecipient(locale), Date: time.Now().In(notice.Zone(""))}, nil
}

// Validate checks a campaign's data against template name: every required
// field present and not empty, every value of its field's kind, no unknown
// field. A *DataError lists the fields. It then renders every locale with
// SampleRecipient to prove the data works in the template.
func (s *Set) Validate(name string, data map[string]any) error {
	t, err := s.get(name)
	if err != nil {
		return err
	}
	if err := t.check(data); err != nil {
		return err
	}
	for _, loc := range Locales {
		if _, err := t.render(Input{Locale: loc, Data: data, Recipient: SampleRecipient(loc)}); err != nil {
			return fmt.Errorf("template %q, locale %s: %w", name, loc, err)
		}
	}
	return nil
}

// ValidateCampaign is Validate plus what else about a campaign the
// templates can judge before its first message: the default locale, and,
// for an ISO-2022-JP campaign, that its data and paragraphs use only
// characters the charset carries (a *CharsetError).
func (s *Set) ValidateCampaign(c *notice.Campaign) error {
	if err := s.Validate(c.Template, c.Data); err != nil {
		return err
	}
	if c.DefaultLocale != "" && !notice.ValidLocale(c.DefaultLocale) {
		return fmt.Errorf("default locale %q: want %s", c.DefaultLocale, strings.Join(Locales, " or "))
	}
	for _, loc := range Locales {
		r, err := s.Render(c.Template, Input{Locale: loc, Data: c.Data, Recipient: SampleRecipient(loc), Paragraphs: c.Paragraphs, Date: time.Now().In(c.Zone())})
		if err != nil {
			return fmt.Errorf("template %q, locale %s: %w", c.Template, loc, err)
		}
		if err := CheckCharset(r, c.Charset); err != nil {
			return fmt.Errorf("locale %s: %w", loc, err)
		}
	}
	return nil
}

// Render renders template name for one recipient.
func (s *Set) Render(name string, in Input) (*Rendered, error) {
	t, err := s.get(name)
	if err != nil {
		return nil, err
	}
	r, err := t.render(in)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	return r, nil
}

func (t *tmpl) render(in Input) (*Rendered, error) {
	lt, view, err := t.view(in)
	if err != nil {
		return nil, err
	}
	view.Recipient = cleanRecipient(in.Recipient)
	return lt.execute(view)
}

// view returns in's locale and what its templates see of in, except the
// recipient: everything that is the same for every notice of a campaign.
func (t *tmpl) view(in Input) (*localized, Input, error) {
	lt, ok := t.locales[in.Locale]
	if !ok {
		return nil, Input{}, fmt.Errorf("unsupported locale %q", in.Locale)
	}
	data, err := t.resolve(in.Data, in.Locale)
	if err != nil {
		return nil, Input{}, err
	}
	view := Input{
		Locale:     in.Locale,
		Data:       data,
		Paragraphs: cleanParagraphs(in.Paragraphs),
		Date:       in.Date,
	}
	if view.Date.IsZero() {
		view.Date = time.Now().In(notice.Zone(""))
	}
	return lt, view, nil
}

// execute renders view, whose Recipient has been through cleanRecipient.
func (lt *localized) execute(view Input) (*Rendered, error) {
	var b strings.Builder
	if err := lt.subject.Execute(&b, view); err != nil {
		return nil, fileError(lt.subject.Name(), err)
	}
	subject, err := lt.finishSubject(b.String())
	if err != nil {
		return nil, err
	}
	b.Reset()
	if err := lt.text.Execute(&b, view); err != nil {
		return nil, fileError(lt.text.Name(), err)
	}
	text := finishText(b.String(), view.Locale)
	b.Reset()
	if err := lt.html.Execute(&b, view); err != nil {
		return nil, fileError(lt.html.Name(), err)
	}
	return &Rendered{Subject: subject, Text: text, HTML: b.String()}, nil
}

// finishSubject turns what subject.tmpl printed into the Subject.
func (lt *localized) finishSubject(s string) (string, error) {
	s = oneLine(s)
	if s == "" {
		return "", fmt.Errorf("%s: subject is empty", lt.subject.Name())
	}
	return s, nil
}

// finishText turns what text.tmpl printed into the Text.
func finishText(s, locale string) string { return Wrap(tidyText(s), locale) }

// oneLine makes s fit a header: every run of white space and control
// characters (CR and LF above all: header injection) becomes one space.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == ' ' || r == '\u2028' || r == '\u2029'
	}), " ")
}

// tidyText normalises line ends, drops trailing blanks, squeezes runs of
// blank lines that template conditionals leave, and ends with one newline.
func tidyText(s string) string { return strings.Join(tidyLines(s), "\n") + "\n" }

// tidyLines is tidyText's lines, without their newlines.
func tidyLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	lines := strings.Split(s, "\n")
	out := lines[:0]
	blank := true // also drops leading blank lines
	for _, l := range lines {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			if blank {
				continue
			}
			blank = true
		} else {
			blank = false
		}
		out = append(out, l)
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// cleanRecipient keeps what templates show of a recipient safe to show:
// single-line names, and of a card never more than its last four digits,
// whatever was uploaded.
func cleanRecipient(r notice.Recipient) notice.Recipient {
	r.Name = oneLine(r.Name)
	r.CardBrand = oneLine(r.CardBrand)
	r.CustomerID = oneLine(r.CustomerID)
	r.CardLast4 = last4(r.CardLast4)
	r.Delivery = notice.Delivery{}
	return r
}

func cleanParagraphs(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		p = strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(p, "\r\n", "\n"), "\r", "\n"))
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// last4 is the last four digits of s, or "" if s has fewer than four.
func last4(s string) string {
	digits := make([]byte, 0, 4)
	for i := len(s) - 1; i >= 0 && len(digits) < 4; i-- {
		if s[i] >= '0' && s[i] <= '9' {
			digits = append(digits, s[i])
		}
	}
	if len(digits) < 4 {
		return ""
	}
	slices.Reverse(digits)
	return string(digits)
}
