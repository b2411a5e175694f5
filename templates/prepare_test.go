package templates

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/oshirase/oshirase/notice"

	"github.com/oshirase/oshirase/internal/testenv"
)

// nasty are field values that have broken renderers: markup, entities,
// characters html/template escapes, Japanese with ideographic spaces, very
// long names (wrapping, and a token longer than a line may be), emoji,
// things that look like Prepared's markers, controls. (Not invalid UTF-8:
// ingest refuses it.)
var nasty = []string{
	"山田 太郎",
	"山田　花子",
	"　田中　一郎　",
	"Taro Yamada",
	"O'Brien & <Sons>",
	"<script>alert(1)</script>",
	"&amp;",
	`"'+`,
	`a"b'c+d<e>f&g`,
	"🎉👩‍👩‍👧 Family",
	strings.Repeat("寿限無寿限無五劫の擦り切れ", 12),
	strings.Repeat("Wolfeschlegelsteinhausenbergerdorff ", 9),
	strings.Repeat("x", 1200),
	"「括弧」、。ー",
	"・list-like",
	"1. numbered",
	"\ue000\ue001",
	"\ue001",
	"\U000f0000\U000f0002",
	"\U00100000\U00100001",
	"\ufffd",
	"nul\x00byte",
	"line\r\nbreak",
	"tab\there",
	"\u2028\u2029",
	"   ",
	" \t\r\n",
	" leading and trailing ",
}

var cards = []string{"1234", "4111 1111 1111 1111", "4111-1111-1111-0000", "12", "abcd", "１２３４", "\ue0019876", "0000"}

// recipients returns n recipients, deterministic: the first 32 go through
// every combination of empty and non-empty fields, the rest at random.
func recipients(n int) []notice.Recipient {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	out := make([]notice.Recipient, n)
	for i := range out {
		var set [numFields]bool
		for f := range set {
			if i < 32 {
				set[f] = i&(1<<f) != 0
			} else {
				set[f] = rng.IntN(3) > 0
			}
		}
		r := notice.Recipient{ID: int64(i + 1), Locale: pick([]string{"", "ja", "en"})}
		if set[fieldName] {
			r.Name = pick(nasty)
		}
		if set[fieldEmail] {
			r.Email = pick(append([]string{"taro@example.com", "a+b@example.jp"}, nasty...))
		}
		if set[fieldCustomerID] {
			r.CustomerID = pick(append([]string{"C-0001234"}, nasty...))
		}
		if set[fieldCardBrand] {
			r.CardBrand = pick(append([]string{"VISA", "JCB", "Master&Card"}, nasty...))
		}
		if set[fieldCardLast4] {
			r.CardLast4 = pick(cards)
		}
		switch rng.IntN(4) {
		case 0:
			r.Extra = map[string]string{"plan": pick(nasty)}
		case 1:
			r.Extra = map[string]string{"plan": pick(nasty), "order-no": pick(append([]string{"A-0001", ""}, nasty...)), "other": "x"}
		}
		out[i] = r
	}
	return out
}

// writeEverything writes a template that shows every recipient field, and
// two extra columns, in every way the fast path takes: at the top, in a
// range with $, in nested {{with}}, {{else with}} and {{if}}, in the
// subject. Its subject can come out empty (an Email of spaces), an error
// both ways must agree on.
func writeEverything(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "everything", "meta.json"), `{
  "description": "Every recipient field.",
  "fields": [
    {"name": "company", "kind": "string", "required": true, "description": "Sender."},
    {"name": "items", "kind": "list", "required": true, "description": "Items."},
    {"name": "note", "kind": "string", "required": false, "description": "A note."}
  ],
  "sample": {"company": "Sample", "items": ["one", "two"], "note": "n"}
}`)
	for _, loc := range Locales {
		writeFile(t, filepath.Join(dir, "everything", loc, "subject.tmpl"),
			"{{with .Recipient.Email}}{{.}}{{else}}{{.Data.company}}{{end}} {{.Recipient.Name}}\n")
		writeFile(t, filepath.Join(dir, "everything", loc, "text.tmpl"), `{{with .Recipient.Name}}{{.}} 様{{else with .Recipient.CustomerID}}Customer {{.}}{{else}}Customer{{end}}
{{if .Recipient.Email}}Mail: {{.Recipient.Email}}{{end}}
{{range $i, $x := .Data.items}}{{$i}}. {{$x}} for {{$.Recipient.Name}} {{with $.Recipient.CardLast4}}card {{with $.Recipient.CardBrand}}{{.}} {{end}}{{.}}{{if $.Recipient.Name}}!{{end}}{{end}}
{{end}}
{{with .Data.note}}{{.}}{{end}}
{{range .Paragraphs}}{{.}}

{{end}}
{{.Recipient.Name}}{{.Recipient.Name}}{{.Recipient.CustomerID}}{{.Recipient.CardBrand}}
{{with index .Recipient.Extra "plan"}}Plan: {{.}}{{else}}No plan{{end}} order {{index $.Recipient.Extra "order-no"}}
`)
		writeFile(t, filepath.Join(dir, "everything", loc, "html.tmpl"), `<!DOCTYPE html>
<html lang="`+loc+`"><body>
<p>{{with .Recipient.Name}}{{.}} 様{{else}}Customer{{end}}</p>
<p>{{.Recipient.Email}}</p>
<ul>{{range .Data.items}}<li>{{.}} {{$.Recipient.CustomerID}}</li>{{end}}</ul>
{{with .Recipient.CardLast4}}<p>{{with $.Recipient.CardBrand}}<b>{{.}}</b> {{end}}{{.}}</p>{{end}}
<p>{{index .Recipient.Extra "plan"}}{{if index .Recipient.Extra "order-no"}} #{{index .Recipient.Extra "order-no"}}{{end}}</p>
{{range .Paragraphs}}<p>{{.}}</p>{{end}}
</body></html>
`)
	}
}

// sameResult fails t unless the two renderings are equal, errors included.
func sameResult(t *testing.T, what string, got *Rendered, gotErr error, want *Rendered, wantErr error) {
	t.Helper()
	switch {
	case gotErr != nil || wantErr != nil:
		if gotErr == nil || wantErr == nil || gotErr.Error() != wantErr.Error() {
			t.Fatalf("%s: error %v, want %v", what, gotErr, wantErr)
		}
	case got.Subject != want.Subject:
		t.Fatalf("%s: subject\n%q\nwant\n%q", what, got.Subject, want.Subject)
	case got.Text != want.Text:
		t.Fatalf("%s: text\n%q\nwant\n%q", what, got.Text, want.Text)
	case got.HTML != want.HTML:
		t.Fatalf("%s: html\n%q\nwant\n%q", what, got.HTML, want.HTML)
	}
}

// nastify puts markup and a marker's first rune (Prepare must pick
// another) into a string field's value, or each locale's.
func nastify(v any) any {
	switch v := v.(type) {
	case string:
		return `Evil "Co" <b> & + ` + v + "\ue000"
	case map[string]any:
		out := map[string]any{}
		for loc, lv := range v {
			out[loc] = nastify(lv)
		}
		return out
	}
	return v
}

// TestPreparedEqualsRender is the fast path's contract: for every template,
// locale, kind of campaign data and recipient, Prepared.Render returns what
// Set.Render returns, byte for byte.
func TestPreparedEqualsRender(t *testing.T) {
	testenv.Slow(t, "compares every template shape with a full render")
	t.Parallel()
	dir := t.TempDir()
	writeEverything(t, dir)
	s := mustLoad(t, dir)
	rcpts := recipients(2000)
	for _, name := range append(names, "everything") {
		for _, loc := range Locales {
			sample := sampleInput(t, s, name, loc).Data
			required := map[string]any{}
			nastyData := map[string]any{}
			for _, f := range s.byName[name].info.Fields {
				if f.Required {
					required[f.Name] = sample[f.Name]
				}
				nastyData[f.Name] = sample[f.Name]
				if f.Kind == KindString {
					nastyData[f.Name] = nastify(sample[f.Name])
				}
			}
			allLeads := map[string]any{}
			for k, v := range required {
				allLeads[k] = v
			}
			allLeads["company"] = string(markerLeads)
			variants := []struct {
				name       string
				data       map[string]any
				paragraphs []string
				fast       bool // the fast path must be on
			}{
				{"sample", sample, []string{"追加のお知らせです。\n二行目です。", "<script>alert(1)</script> &amp; \"'+", strings.Repeat("長い段落です。", 40)}, true},
				{"required", required, nil, true},
				{"nasty", nastyData, []string{"\ue001 looks like a marker's second half"}, true},
				{"every lead taken", allLeads, nil, false},
			}
			for _, v := range variants {
				t.Run(name+"/"+loc+"/"+v.name, func(t *testing.T) {
					in := Input{Locale: loc, Data: v.data, Paragraphs: v.paragraphs, Date: fixedDate}
					p, err := s.Prepare(name, in)
					if err != nil {
						t.Fatal(err)
					}
					if fast := p.plan != nil; fast != v.fast {
						t.Fatalf("fast path %v, want %v (%v)", fast, v.fast, p.lt.noPlan)
					}
					n := len(rcpts)
					if !v.fast {
						n = 50
					}
					for i, r := range rcpts[:n] {
						in.Recipient = r
						want, wantErr := s.Render(name, in)
						got, gotErr := p.Render(r)
						sameResult(t, fmt.Sprintf("recipient %d", i), got, gotErr, want, wantErr)
					}
					if p.off.Load() {
						t.Fatal("the fast path was turned off by a mismatch")
					}
					if v.fast {
						p.shapes.Range(func(shape, sk any) bool {
							if sk := sk.(*skeleton); sk.full || !sk.checked.Load() {
								t.Errorf("shape %016b: full %v, checked %v", shape, sk.full, sk.checked.Load())
							}
							return true
						})
					}
				})
			}
		}
	}
}

// TestPreparedUnsafe checks that a template using the recipient in a way
// the fast path cannot replay is always rendered in full, and that templates
// using it in ways it can are not.
func TestPreparedUnsafe(t *testing.T) {
	t.Parallel()
	const (
		text = "text.tmpl"
		html = "html.tmpl"
		subj = "subject.tmpl"
	)
	tests := []struct {
		name   string
		file   string
		body   string
		safe   bool
		rcpt   notice.Recipient // must render with want in its text or html
		want   string
		inHTML bool
	}{
		{name: "eq", file: text, body: "{{if eq .Recipient.CardBrand \"JCB\"}}JCB member{{else}}other{{end}}\n",
			rcpt: notice.Recipient{CardBrand: "JCB"}, want: "JCB member"},
		{name: "attribute", file: html, body: `<p><a title="{{.Recipient.Name}}">x</a></p>`,
			rcpt: notice.Recipient{Name: `"><b>`}, want: `title="&#34;&gt;&lt;b&gt;"`, inHTML: true},
		{name: "printf", file: text, body: `{{printf "%s" .Recipient.Name}}` + "\n",
			rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "piped", file: text, body: `{{.Recipient.Name | printf "<%s>"}}` + "\n",
			rcpt: notice.Recipient{Name: "Ann"}, want: "<Ann>"},
		{name: "printf in with", file: subj, body: `Hi {{with .Recipient.Name}}{{printf "%q" .}}{{end}}`,
			rcpt: notice.Recipient{Name: "Ann"}, want: ""},
		{name: "len", file: text, body: `{{len .Recipient.CardLast4}}` + "\n", rcpt: notice.Recipient{CardLast4: "1234"}, want: "4"},
		{name: "and", file: text, body: `{{if and .Recipient.Name .Recipient.Email}}both{{end}}` + "\n",
			rcpt: notice.Recipient{Name: "A", Email: "a@example.com"}, want: "both"},
		{name: "not", file: text, body: `{{if not .Recipient.Name}}nameless{{end}}` + "\n", rcpt: notice.Recipient{}, want: "nameless"},
		{name: "variable", file: text, body: `{{$n := .Recipient.Name}}{{$n}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "variable from dot", file: text, body: `{{with .Recipient.Name}}{{$n := .}}{{$n}}{{end}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "whole recipient", file: text, body: `{{.Recipient}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "whole input", file: text, body: `{{printf "%v" .}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "with dot", file: text, body: `{{with .}}{{.Recipient.Name}}{{end}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "recipient locale", file: text, body: `{{.Recipient.Locale}}` + "\n", rcpt: notice.Recipient{Locale: "en"}, want: "en"},
		{name: "extra map", file: text, body: `{{range $k, $v := .Recipient.Extra}}{{$k}}={{$v}}{{end}}` + "\n", rcpt: notice.Recipient{Extra: map[string]string{"plan": "gold"}}, want: "plan=gold"},
		{name: "extra printed whole", file: text, body: `{{.Recipient.Extra}}` + "\n", rcpt: notice.Recipient{Extra: map[string]string{"plan": "gold"}}, want: "gold"},
		{name: "extra key from data", file: text, body: `{{index .Recipient.Extra .Data.company}}` + "\n", rcpt: notice.Recipient{Extra: map[string]string{"Sample": "gold"}}, want: "gold"},
		{name: "extra len", file: text, body: `{{len (index .Recipient.Extra "plan")}}` + "\n", rcpt: notice.Recipient{Extra: map[string]string{"plan": "gold"}}, want: "4"},
		{name: "extra in with", file: text, body: `{{with .Recipient.Extra}}{{.plan}}{{end}}` + "\n", rcpt: notice.Recipient{Extra: map[string]string{"plan": "gold"}}, want: "gold"},
		{name: "assign $", file: text, body: `{{$ = .Data}}{{.Recipient.Name}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "template call", file: text, body: `{{define "n"}}{{.Recipient.Name}}{{end}}{{template "n" .}}` + "\n", rcpt: notice.Recipient{Name: "Ann"}, want: "Ann"},
		{name: "rcdata", file: html, body: `<title>{{.Recipient.Name}}</title>`, rcpt: notice.Recipient{Name: "A&B"}, want: "A&amp;B", inHTML: true},
		{name: "url", file: html, body: `<a href="https://example.com/c/{{.Recipient.CustomerID}}">x</a>`, rcpt: notice.Recipient{CustomerID: "a b"}, want: "/c/a%20b", inHTML: true},
		{name: "script", file: html, body: `<script>var n = {{.Recipient.Name}};</script>`, rcpt: notice.Recipient{Name: "Ann"}, want: `"Ann"`, inHTML: true},
		{name: "html predefined escaper", file: html, body: `<p>{{.Recipient.Name | html}}</p>`, rcpt: notice.Recipient{Name: "<b>"}, want: "&lt;b&gt;", inHTML: true},

		{name: "dollar in range", file: text, body: "{{range .Data.items}}{{.}} {{$.Recipient.Name}}\n{{end}}", safe: true,
			rcpt: notice.Recipient{Name: "Ann"}, want: "b Ann"},
		{name: "else with", file: text, body: "{{with .Recipient.Name}}{{.}}{{else with .Recipient.Email}}{{.}}{{else}}none{{end}}\n", safe: true,
			rcpt: notice.Recipient{Email: "a@example.com"}, want: "a@example.com"},
		{name: "if", file: text, body: "{{if .Recipient.CardLast4}}card {{.Recipient.CardLast4}}{{end}}\n", safe: true,
			rcpt: notice.Recipient{CardLast4: "5555"}, want: "card 5555"},
		{name: "html text", file: html, body: `<p>{{.Recipient.Email}}</p>{{with .Recipient.Name}}<p>{{.}}</p>{{end}}`, safe: true,
			rcpt: notice.Recipient{Email: "a+b@example.com"}, want: "a&#43;b@example.com", inHTML: true},
		{name: "data in with", file: text, body: "{{with .Recipient.Name}}{{with $.Data.company}}{{.}}{{end}} {{.}}{{end}}\n", safe: true,
			rcpt: notice.Recipient{Name: "Ann"}, want: "Sample Ann"},
		{name: "extra", file: text, body: `{{index .Recipient.Extra "plan"}} {{index $.Recipient.Extra "order-no"}}` + "\n", safe: true,
			rcpt: notice.Recipient{Extra: map[string]string{"plan": "gold", "order-no": "A-1"}}, want: "gold A-1"},
		{name: "extra in with and range", file: text, body: "{{with index .Recipient.Extra \"plan\"}}plan {{.}}{{else}}no plan{{end}}\n{{range .Data.items}}{{.}} {{index $.Recipient.Extra \"order-no\"}}\n{{end}}", safe: true,
			rcpt: notice.Recipient{Extra: map[string]string{"plan": "", "order-no": "A-1"}}, want: "no plan\na A-1"},
		{name: "extra in html", file: html, body: `<p>{{index .Recipient.Extra "plan"}}</p>{{if index .Recipient.Extra "order-no"}}<p>{{.Recipient.Name}}</p>{{end}}`, safe: true,
			rcpt: notice.Recipient{Name: "Ann", Extra: map[string]string{"plan": "<gold>", "order-no": "1"}}, want: "<p>&lt;gold&gt;</p><p>Ann</p>", inHTML: true},
	}
	others := []notice.Recipient{{}, {Name: "Taro", CardBrand: "VISA", CardLast4: "1234"}, {Name: `"><script>`, CardBrand: "JCB", Email: "x@example.com"}, {Name: "   "},
		{Name: "Jo", Extra: map[string]string{"plan": "silver & <b>", "order-no": ""}}, {Extra: map[string]string{"plan": "x"}}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeMinimal(t, dir, "hello")
			writeFile(t, filepath.Join(dir, "hello", "meta.json"), `{
  "description": "A short hello.",
  "fields": [
    {"name": "company", "kind": "string", "required": true, "description": "Sender."},
    {"name": "items", "kind": "list", "required": false, "description": "Items."},
    {"name": "when", "kind": "date", "required": false, "description": "A date."}
  ],
  "sample": {"company": "Sample", "items": ["a", "b"], "when": "2019-05-28"}
}`)
			for _, loc := range Locales {
				body := tt.body
				if tt.file == html {
					body = "<!DOCTYPE html>\n<html><body>" + body + "</body></html>\n"
				}
				writeFile(t, filepath.Join(dir, "hello", loc, tt.file), body)
			}
			s := mustLoad(t, dir)
			for _, loc := range Locales {
				lt := s.byName["hello"].locales[loc]
				if safe := lt.plan != nil; safe != tt.safe {
					t.Fatalf("%s: fast path %v, want %v (%v)", loc, safe, tt.safe, lt.noPlan)
				}
				if testing.Verbose() {
					t.Logf("%s: %v", loc, lt.noPlan)
				}
				in := Input{Locale: loc, Data: map[string]any{"company": "Sample", "items": []any{"a", "b"}}, Date: fixedDate}
				p, err := s.Prepare("hello", in)
				if err != nil {
					t.Fatal(err)
				}
				for i, r := range append([]notice.Recipient{tt.rcpt}, others...) {
					in.Recipient = r
					want, wantErr := s.Render("hello", in)
					got, gotErr := p.Render(r)
					sameResult(t, loc, got, gotErr, want, wantErr)
					if i == 0 {
						body := got.Text
						if tt.inHTML {
							body = got.HTML
						}
						if !strings.Contains(body, tt.want) {
							t.Errorf("%s: %q lacks %q", loc, body, tt.want)
						}
					}
				}
				if p.off.Load() {
					t.Errorf("%s: the fast path was turned off by a mismatch", loc)
				}
			}
		})
	}
}

// TestPreparedMismatchTurnsFastPathOff fakes a wrong skeleton: the notice
// must still be the full rendering, and so must every later one.
func TestPreparedMismatchTurnsFastPathOff(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	in := sampleInput(t, s, "card-reissue", "ja")
	p, err := s.Prepare("card-reissue", in)
	if err != nil {
		t.Fatal(err)
	}
	r := SampleRecipient("ja")
	vals := fieldValues(nil, &r, p.plan.extra)
	var shape uint32
	for i, v := range vals {
		if v != "" && p.plan.uses&(1<<i) != 0 {
			shape |= 1 << i
		}
	}
	sk := p.build(shape)
	sk.html.lits[0] = "<p>wrong</p>" + sk.html.lits[0]
	p.shapes.Store(shape, sk)

	for i, r := range []notice.Recipient{r, r, {Name: "Other", CardLast4: "9999"}} {
		in.Recipient = r
		want := render(t, s, "card-reissue", in)
		got, err := p.Render(r)
		sameResult(t, fmt.Sprintf("render %d", i), got, err, want, nil)
		if !p.off.Load() {
			t.Fatal("fast path still on")
		}
	}
}

func TestPrepareErrors(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	if _, err := s.Prepare("nope", Input{Locale: "ja"}); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Prepare(nope): %v, want ErrUnknownTemplate", err)
	}
	in := sampleInput(t, s, "card-reissue", "ja")
	bad := in
	bad.Locale = "fr"
	_, perr := s.Prepare("card-reissue", bad)
	_, rerr := s.Render("card-reissue", bad)
	if perr == nil || rerr == nil || perr.Error() != rerr.Error() {
		t.Errorf("locale fr: Prepare %v, Render %v", perr, rerr)
	}
	bad = in
	bad.Data = map[string]any{"company": "x"}
	_, perr = s.Prepare("card-reissue", bad)
	_, rerr = s.Render("card-reissue", bad)
	var de *DataError
	if !errors.As(perr, &de) || perr.Error() != rerr.Error() {
		t.Errorf("bad data: Prepare %v, Render %v", perr, rerr)
	}
}

// TestEscapeHTMLText compares escapeHTMLText with html/template itself.
func TestEscapeHTMLText(t *testing.T) {
	t.Parallel()
	tmpl := htmltemplate.Must(htmltemplate.New("").Parse("<p>{{.}}</p>"))
	var in []string
	for b := range 256 {
		in = append(in, string([]byte{byte(b)}), "a"+string([]byte{byte(b)})+"z")
	}
	for r := rune(0); r < 0x3100; r++ {
		in = append(in, string(r))
	}
	in = append(in, nasty...)
	in = append(in, "bad\xff\xfeutf8", "\xe3\x81", "\xe3<\x81", "\xf0\x9f\x8e", "\xed\xa0\x80&", string(utf8.RuneError)+"+", "\U0010ffff\ufdd0\ufffe")
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("\x00\"&'+<>a \xe3\x81\x82\xff\x80\n")
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		in = append(in, string(b))
	}
	for _, s := range in {
		var b strings.Builder
		if err := tmpl.Execute(&b, s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(strings.TrimPrefix(b.String(), "<p>"), "</p>")
		if got := escapeHTMLText(s); got != want {
			t.Errorf("escapeHTMLText(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestPreparedConcurrent renders many shapes from many goroutines at once,
// as the worker does; run with -race.
func TestPreparedConcurrent(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	in := sampleInput(t, s, "card-reissue", "en")
	p, err := s.Prepare("card-reissue", in)
	if err != nil {
		t.Fatal(err)
	}
	rcpts := recipients(400)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < len(rcpts); i += 3 {
				in := in
				in.Recipient = rcpts[i]
				want, _ := s.Render("card-reissue", in)
				got, err := p.Render(rcpts[i])
				if err != nil || *got != *want {
					errs <- errors.New("a notice differs from Set.Render")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p.off.Load() {
		t.Error("the fast path was turned off by a mismatch")
	}
}

// BenchmarkRender is the cost of one notice of a campaign, Set.Render
// against Prepared.Render, over recipients that differ as a real list's do.
func BenchmarkRender(b *testing.B) {
	// card-reissue as embedded, and a copy that also shows an extra column
	// of the upload (an order number) in its text and HTML.
	dir := b.TempDir()
	copyTemplate(b, dir, "card-reissue")
	for _, loc := range Locales {
		for file, edit := range map[string]func(string) string{
			"text.tmpl": func(s string) string { return s + "\nOrder: {{index .Recipient.Extra \"order_no\"}}\n" },
			"html.tmpl": func(s string) string {
				return strings.Replace(s, "</body>", "<p>Order: {{index .Recipient.Extra \"order_no\"}}</p></body>", 1)
			},
		} {
			path := filepath.Join(dir, "card-reissue", loc, file)
			src, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			writeFile(b, path, edit(string(src)))
		}
	}
	embedded, err := Load("")
	if err != nil {
		b.Fatal(err)
	}
	withExtra, err := Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, set := range []struct {
		name string
		s    *Set
	}{{"card-reissue", embedded}, {"with-extra-column", withExtra}} {
		s := set.s
		for _, loc := range Locales {
			in, _ := s.Sample("card-reissue", loc)
			in.Date = fixedDate
			in.Paragraphs = []string{"Our phone lines are very busy. If you cannot get through, please email us instead."}
			rcpts := make([]notice.Recipient, 256)
			for i := range rcpts {
				r := SampleRecipient(loc)
				r.Name += " " + strings.Repeat("x", i%7) + string(rune('A'+i%26))
				r.CardLast4 = []string{"1234", "9876", "5555", "0000"}[i%4]
				if i%5 == 0 {
					r.CardBrand = ""
				}
				if i%11 == 0 {
					r.Name = ""
				}
				r.Extra = map[string]string{"order_no": fmt.Sprintf("A-%06d", i)}
				rcpts[i] = r
			}
			b.Run(set.name+"/"+loc+"/Set", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					in.Recipient = rcpts[i%len(rcpts)]
					i++
					if _, err := s.Render("card-reissue", in); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(set.name+"/"+loc+"/Prepared", func(b *testing.B) {
				p, err := s.Prepare("card-reissue", in)
				if err != nil {
					b.Fatal(err)
				}
				if p.plan == nil {
					b.Fatalf("no fast path: %v", p.lt.noPlan)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := p.Render(rcpts[i%len(rcpts)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// TestMarkerLeadAvoidsTemplateText checks that markers never start with a
// rune the templates print themselves, in text or in a string constant.
func TestMarkerLeadAvoidsTemplateText(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeMinimal(t, dir, "hello")
	for _, loc := range Locales {
		writeFile(t, filepath.Join(dir, "hello", loc, "subject.tmpl"), "Hello \ue000\ue001 {{.Recipient.Name}}\n")
		writeFile(t, filepath.Join(dir, "hello", loc, "text.tmpl"), `{{with .Recipient.Name}}{{.}}{{"\U000f0000\U000f0001"}}{{end}}`+"\n")
	}
	s := mustLoad(t, dir)
	for _, loc := range Locales {
		lt := s.byName["hello"].locales[loc]
		if lt.plan == nil || len(lt.plan.leads) != 1 || lt.plan.leads[0] != markerLeads[2] {
			t.Fatalf("%s: plan %+v (%v), want the third lead only", loc, lt.plan, lt.noPlan)
		}
		in := Input{Locale: loc, Data: map[string]any{"company": "Sample"}, Date: fixedDate}
		p, err := s.Prepare("hello", in)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recipients(64) {
			in.Recipient = r
			want, wantErr := s.Render("hello", in)
			got, gotErr := p.Render(r)
			sameResult(t, loc, got, gotErr, want, wantErr)
		}
		if p.off.Load() {
			t.Errorf("%s: the fast path was turned off by a mismatch", loc)
		}
	}
}
