package templates

import (
	"fmt"
	"maps"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"text/template/parse"
	"time"
	"unicode"
)

// dateLayout is how campaign data writes dates.
const dateLayout = "2006-01-02"

// FieldError is one problem with one campaign data field.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e FieldError) Error() string { return fmt.Sprintf("field %q: %s", e.Field, e.Reason) }

// DataError lists every problem found in a campaign's data, sorted by field.
type DataError struct {
	Template string       `json:"template"`
	Fields   []FieldError `json:"fields"`
}

func (e *DataError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "template %q: ", e.Template)
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	return b.String()
}

// check validates campaign data against the template's fields. A string or
// list may be given per locale ({"ja": ..., "en": ...}), so that a Japanese
// and an English notice each get data in their own language; then every
// locale must be there.
func (t *tmpl) check(data map[string]any) error {
	var probs []FieldError
	for _, f := range t.info.Fields {
		v, ok := data[f.Name]
		if !ok || v == nil {
			if f.Required {
				probs = append(probs, FieldError{f.Name, withWhy("is required", f)})
			}
			continue
		}
		if m, ok := v.(map[string]any); ok && f.Kind != KindDate {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				if !slices.Contains(Locales, k) {
					probs = append(probs, FieldError{f.Name, fmt.Sprintf("unknown locale %q (a value per locale is keyed %s)", k, strings.Join(Locales, " and "))})
				}
			}
			for _, loc := range Locales {
				lv, ok := m[loc]
				if !ok {
					probs = append(probs, FieldError{f.Name, fmt.Sprintf("has no %q value", loc)})
					continue
				}
				if reason := checkValue(f, lv); reason != "" {
					probs = append(probs, FieldError{f.Name, loc + " value " + reason})
				}
			}
			continue
		}
		if reason := checkValue(f, v); reason != "" {
			probs = append(probs, FieldError{f.Name, reason})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if !slices.ContainsFunc(t.info.Fields, func(f Field) bool { return f.Name == k }) {
			probs = append(probs, FieldError{k, "is not a field of this template"})
		}
	}
	probs = append(probs, t.checkPeriods(data)...)
	if len(probs) == 0 {
		return nil
	}
	slices.SortStableFunc(probs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
	return &DataError{Template: t.info.Name, Fields: probs}
}

// checkValue returns why v is not a valid value of f, or "".
func checkValue(f Field, v any) string {
	switch f.Kind {
	case KindString:
		s, ok := v.(string)
		if !ok {
			return fmt.Sprintf("must be a string, not %s", jsonType(v))
		}
		if f.Required && strings.TrimSpace(s) == "" {
			return withWhy("must not be empty", f)
		}
	case KindURL:
		s, ok := v.(string)
		if !ok {
			return fmt.Sprintf("must be a URL string, not %s", jsonType(v))
		}
		if f.Required || s != "" {
			return checkURL(s)
		}
	case KindEmail:
		s, ok := v.(string)
		if !ok {
			return fmt.Sprintf("must be an email address string, not %s", jsonType(v))
		}
		if f.Required || s != "" {
			return checkEmail(s)
		}
	case KindList:
		l, ok := asList(v)
		if !ok {
			return fmt.Sprintf("must be a list of strings, not %s", jsonType(v))
		}
		if f.Required && len(l) == 0 {
			return "must not be empty"
		}
		for i, s := range l {
			if strings.TrimSpace(s) == "" {
				return fmt.Sprintf("item %d is empty", i)
			}
		}
	case KindDate:
		s, ok := v.(string)
		if !ok {
			return fmt.Sprintf("must be a date string like 2019-05-28, not %s", jsonType(v))
		}
		if _, err := time.Parse(dateLayout, s); err != nil {
			return fmt.Sprintf("must be a date like 2019-05-28, not %q", s)
		}
	}
	return ""
}

// withWhy adds to reason why f is required, when its meta.json says.
func withWhy(reason string, f Field) string {
	if f.Why == "" {
		return reason
	}
	return reason + ": " + f.Why
}

// checkURL returns why s is no link a notice may show, or "". A reader
// told to beware of phishing must see an address that is plainly the
// company's: https, a host, no user:password@ (which can make
// https://www.example.co.jp@evil.example/ look like the company's), no
// white space or control characters. javascript:, data: and http: are
// refused by the scheme.
func checkURL(s string) string {
	if strings.TrimSpace(s) == "" {
		return "must not be empty"
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("must be one https URL without spaces or control characters, not %q", s)
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("is not a URL: %q", s)
	}
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return fmt.Sprintf("must start with https:// (not %q): a notice links only to the company's own https pages", u.Scheme+":")
	case u.User != nil:
		return "must not hold a user name or password (user:password@): phishing hides the real host that way"
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("has no host: %q", s)
	}
	return ""
}

// checkEmail returns why s is not a bare address customers can write to,
// or "": no display name, no ?query (mailto:a@b?bcc=… would add
// recipients or a body to the reader's reply), nothing but printable ASCII.
func checkEmail(s string) string {
	if strings.TrimSpace(s) == "" {
		return "must not be empty"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("?&<>()[],;:\\\"%/", c) >= 0 {
			return fmt.Sprintf("must be a bare address like support@example.co.jp, without %q", string(c))
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		return fmt.Sprintf("must be an address like support@example.co.jp, not %q", s)
	}
	return ""
}

// checkPeriods refuses a period that ends before it starts: for every pair
// of date fields x_start and x_end given, x_start must not be after x_end.
func (t *tmpl) checkPeriods(data map[string]any) []FieldError {
	var probs []FieldError
	for _, f := range t.info.Fields {
		base, ok := strings.CutSuffix(f.Name, "_start")
		if !ok || f.Kind != KindDate {
			continue
		}
		end := base + "_end"
		if !slices.ContainsFunc(t.info.Fields, func(g Field) bool { return g.Name == end && g.Kind == KindDate }) {
			continue
		}
		s, _ := data[f.Name].(string)
		e, _ := data[end].(string)
		ts, err1 := time.Parse(dateLayout, s)
		te, err2 := time.Parse(dateLayout, e)
		if err1 != nil || err2 != nil {
			continue // absent or malformed: reported by checkValue
		}
		if ts.After(te) {
			probs = append(probs, FieldError{f.Name, fmt.Sprintf("%s is after %s %s: the period must not end before it starts", s, end, e)})
		}
	}
	return probs
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, int, int64, float32, int32:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// asList accepts a list as decoded from JSON ([]any of string) or built in
// Go ([]string).
func asList(v any) ([]string, bool) {
	switch l := v.(type) {
	case []string:
		return l, true
	case []any:
		out := make([]string, len(l))
		for i, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// resolve checks data and returns what templates see as .Data: values in
// locale's language, lists as []string, and every optional field that is
// absent present as "" or an empty list, so templates can test it with
// {{if}} while missingkey=error still catches a name no field declares.
func (t *tmpl) resolve(data map[string]any, locale string) (map[string]any, error) {
	if err := t.check(data); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(t.info.Fields))
	for _, f := range t.info.Fields {
		v := data[f.Name]
		if m, ok := v.(map[string]any); ok {
			v = m[locale]
		}
		switch f.Kind {
		case KindList:
			l, _ := asList(v)
			if l == nil {
				l = []string{}
			}
			out[f.Name] = l
		default:
			s, _ := v.(string)
			out[f.Name] = s
		}
	}
	return out, nil
}

// checkDataFields reports a .Data.x (or $.Data.x) anywhere in tree, in any
// branch, whose x is no declared field: rendering the sample data reaches
// only the branches the sample takes.
func checkDataFields(tree *parse.Tree, declared map[string]bool) error {
	var err error
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		if err != nil || n == nil {
			return
		}
		var ident []string
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.IfNode:
			walk(&n.BranchNode)
		case *parse.RangeNode:
			walk(&n.BranchNode)
		case *parse.WithNode:
			walk(&n.BranchNode)
		case *parse.BranchNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.ChainNode:
			walk(n.Node)
		case *parse.FieldNode:
			ident = n.Ident
		case *parse.VariableNode:
			if len(n.Ident) > 0 && n.Ident[0] == "$" {
				ident = n.Ident[1:]
			}
		}
		if len(ident) >= 2 && ident[0] == "Data" && !declared[ident[1]] {
			loc, _ := tree.ErrorContext(n)
			err = fmt.Errorf("%s: .Data.%s is not a field declared in meta.json", loc, ident[1])
		}
	}
	walk(tree.Root)
	return err
}

// fileError turns a text/template or html/template error into one that
// starts "file:line:", file being the template's path (its name).
type templateError struct {
	msg string
	err error
}

func (e *templateError) Error() string { return e.msg }
func (e *templateError) Unwrap() error { return e.err }

func fileError(file string, err error) error {
	msg := err.Error()
	for _, p := range []string{"template: ", "html/template:"} {
		if strings.HasPrefix(msg, p) {
			msg = msg[len(p):]
			break
		}
	}
	// Messages repeat the (long) name: `executing "templates/x/ja/text.tmpl" at <...>`.
	msg = strings.ReplaceAll(msg, `executing "`+file+`" `, "executing ")
	if !strings.HasPrefix(msg, file+":") {
		msg = file + ": " + msg
	}
	// Keep the original as the cause for errors.As (e.g. *htmltemplate.Error).
	return &templateError{msg: msg, err: err}
}
