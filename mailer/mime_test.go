package mailer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/mimetest"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/templates"

	"github.com/oshirase/oshirase/internal/testenv"
)

// pyParse is run by Python 3's email package — a MIME parser written by
// other people than go-mail's and Go's — on every file named on its command
// line. It prints what it decoded, and every defect it noticed, as JSON.
const pyParse = `
import email, email.policy, json, sys
out = []
for path in sys.argv[1:]:
    with open(path, 'rb') as f:
        m = email.message_from_binary_file(f, policy=email.policy.default)
    r = {"file": path, "defects": [repr(d) for d in m.defects], "headers": {}, "parts": []}
    for name in ("Subject", "From", "To", "Reply-To", "Message-ID", "Date", "MIME-Version", "Auto-Submitted", "List-Unsubscribe", "Bcc", "Cc"):
        vals = m.get_all(name) or []
        r["headers"][name] = [str(v) for v in vals]
        for v in vals:
            r["defects"] += [name + ": " + repr(d) for d in getattr(v, "defects", ())]
    for name in ("From", "To", "Reply-To"):
        v = m.get(name)
        if v is not None:
            r["headers"][name + ".addresses"] = [[a.display_name, a.addr_spec] for a in v.addresses]
    r["type"] = m.get_content_type()
    for p in m.iter_parts() if m.is_multipart() else []:
        r["defects"] += [repr(d) for d in p.defects]
        r["parts"].append({"type": p.get_content_type(), "charset": p.get_content_charset(),
                           "cte": p.get("Content-Transfer-Encoding", ""), "content": p.get_content()})
    out.append(r)
json.dump(out, sys.stdout, ensure_ascii=False)
`

type pyResult struct {
	File    string              `json:"file"`
	Defects []string            `json:"defects"`
	Headers map[string]any      `json:"headers"`
	Type    string              `json:"type"`
	Parts   []map[string]string `json:"parts"`
}

func python(t *testing.T) string {
	for _, p := range []string{"/root/.pyenv/shims/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			if exec.Command(path, "-c", "import email.policy").Run() == nil {
				return path
			}
		}
	}
	return ""
}

// pyParseAll parses raw messages with Python's email package.
func pyParseAll(t *testing.T, raws [][]byte) []pyResult {
	t.Helper()
	py := python(t)
	if py == "" {
		t.Skip("python3 with the email package not found")
	}
	dir := t.TempDir()
	args := []string{"-c", pyParse}
	for i, raw := range raws {
		p := filepath.Join(dir, fmt.Sprintf("%03d.eml", i))
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var res []pyResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python output: %v\n%.500s", err, out)
	}
	return res
}

func headerList(r pyResult, name string) []string {
	v, _ := r.Headers[name].([]any)
	out := make([]string, len(v))
	for i, x := range v {
		out[i], _ = x.(string)
	}
	return out
}

func addresses(r pyResult, name string) [][2]string {
	v, _ := r.Headers[name+".addresses"].([]any)
	var out [][2]string
	for _, a := range v {
		p, _ := a.([]any)
		if len(p) == 2 {
			n, _ := p[0].(string)
			s, _ := p[1].(string)
			out = append(out, [2]string{n, s})
		}
	}
	return out
}

// checkLines fails for a line over 998 octets (RFC 5322 2.1.1), a bare CR
// or LF, or a byte outside 7-bit ASCII (every part is QP or base64).
func checkLines(t *testing.T, name string, raw []byte) {
	t.Helper()
	for i, l := range bytes.Split(raw, []byte("\r\n")) {
		if len(l) > 998 {
			t.Errorf("%s: line %d is %d octets", name, i+1, len(l))
		}
		if bytes.ContainsAny(l, "\r\n") {
			t.Errorf("%s: line %d has a bare CR or LF", name, i+1)
		}
		for _, c := range l {
			if c >= 0x80 || c == 0 {
				t.Errorf("%s: line %d has byte %#x", name, i+1, c)
				break
			}
		}
	}
}

type built struct {
	name string
	m    *Message
	r    *templates.Rendered
	raw  []byte
}

// allNotices builds every embedded template × locale × charset for the
// sample recipient.
func allNotices(t *testing.T, o *Options) []built {
	t.Helper()
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	var out []built
	for _, info := range ts.List() {
		for _, loc := range info.Locales {
			in, err := ts.Sample(info.Name, loc)
			if err != nil {
				t.Fatal(err)
			}
			in.Date = time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC)
			in.Paragraphs = []string{"追記: <b>ご注意ください</b> & お問い合わせください。"}
			r, err := ts.Render(info.Name, in)
			if err != nil {
				t.Fatal(err)
			}
			for _, cs := range []string{"utf-8", "iso-2022-jp"} {
				from := "株式会社サンプル お客様相談室 <notice@example.jp>"
				if loc == "en" {
					from = "\"Sample Co., Ltd.\" <notice@example.jp>"
				}
				m := &Message{From: from, ReplyTo: "サポート窓口 <support@example.jp>", To: in.Recipient.Email, ToName: in.Recipient.Name,
					Subject: r.Subject, Text: r.Text, HTML: r.HTML, MessageID: fmt.Sprintf("%s.%s.%s@example.jp", info.Name, loc, cs), Charset: cs}
				msg, err := Build(m, o)
				if err != nil {
					t.Fatalf("%s/%s/%s: %v", info.Name, loc, cs, err)
				}
				var buf bytes.Buffer
				if _, err := msg.WriteTo(&buf); err != nil {
					t.Fatal(err)
				}
				out = append(out, built{name: info.Name + "/" + loc + "/" + cs, m: m, r: r, raw: buf.Bytes()})
			}
		}
	}
	return out
}

func lf(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

var metaRE = regexp.MustCompile(`(?i)<meta[^>]*charset=["']?([a-z0-9-]+)`)

// TestEveryNotice parses every template × locale × charset with two MIME
// parsers that are not go-mail — Go's net/mail + mime/multipart and
// Python's email package — and checks that everything decodes back to
// exactly what was rendered.
func TestEveryNotice(t *testing.T) {
	testenv.Slow(t, "renders every notice")
	notices := allNotices(t, &Options{})
	if len(notices) < 12 {
		t.Fatalf("only %d notices", len(notices))
	}
	raws := make([][]byte, len(notices))
	for i, n := range notices {
		raws[i] = n.raw
		checkLines(t, n.name, n.raw)

		// Go's parser.
		gm, err := mimetest.Parse(n.raw)
		if err != nil {
			t.Errorf("%s: net/mail: %v", n.name, err)
			continue
		}
		if gm.Subject != n.r.Subject {
			t.Errorf("%s: subject decodes to %q, want %q", n.name, gm.Subject, n.r.Subject)
		}
		if lf(gm.Text) != n.r.Text {
			t.Errorf("%s: text part does not decode back", n.name)
		}
		if len(gm.Parts) != 2 || gm.Parts[0] != "text/plain" || gm.Parts[1] != "text/html" {
			t.Errorf("%s: parts %v, want text/plain then text/html", n.name, gm.Parts)
		}
		cs := n.m.Charset
		if mm := metaRE.FindAllStringSubmatch(gm.HTML, -1); len(mm) != 1 || !strings.EqualFold(mm[0][1], cs) {
			t.Errorf("%s: HTML declares charset %v, want exactly one %s", n.name, mm, cs)
		}
		if got := strings.Replace(lf(gm.HTML), "\n"+`<meta http-equiv="Content-Type" content="text/html; charset=`+cs+`">`, "", 1); got != n.r.HTML {
			t.Errorf("%s: HTML part does not decode back", n.name)
		}
		for name, want := range map[string]string{
			"Message-Id":     "<" + n.m.MessageID + ">",
			"Mime-Version":   "1.0",
			"Auto-Submitted": "auto-generated",
		} {
			if got := gm.Header.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", n.name, name, got, want)
			}
		}
		if _, err := gm.Header.Date(); err != nil {
			t.Errorf("%s: Date: %v", n.name, err)
		}
		if gm.Header.Get("List-Unsubscribe") != "" {
			t.Errorf("%s: List-Unsubscribe without being configured", n.name)
		}
		if cs == "iso-2022-jp" && bytes.Contains(n.raw, []byte("UTF-8")) || bytes.Contains(n.raw, []byte("utf-8?")) && cs == "iso-2022-jp" {
			t.Errorf("%s: UTF-8 in an ISO-2022-JP message:\n%.1500s", n.name, n.raw)
		}
	}

	// Python's parser.
	for i, r := range pyParseAll(t, raws) {
		n := notices[i]
		if len(r.Defects) > 0 {
			t.Errorf("%s: python found defects: %v", n.name, r.Defects)
		}
		if got := headerList(r, "Subject"); len(got) != 1 || got[0] != n.r.Subject {
			t.Errorf("%s: python subject %q, want %q", n.name, got, n.r.Subject)
		}
		from, _ := parseMailbox(n.m.From)
		reply, _ := parseMailbox(n.m.ReplyTo)
		for _, h := range []struct {
			name string
			want [2]string
		}{{"From", [2]string{from.Name, from.Address}}, {"To", [2]string{n.m.ToName, n.m.To}}, {"Reply-To", [2]string{reply.Name, reply.Address}}} {
			if got := addresses(r, h.name); len(got) != 1 || got[0] != h.want {
				t.Errorf("%s: python %s = %q, want %q", n.name, h.name, got, h.want)
			}
		}
		if r.Type != "multipart/alternative" || len(r.Parts) != 2 || r.Parts[0]["type"] != "text/plain" || r.Parts[1]["type"] != "text/html" {
			t.Errorf("%s: python sees %s with parts %v", n.name, r.Type, r.Parts)
			continue
		}
		for _, p := range r.Parts {
			if p["charset"] != n.m.Charset {
				t.Errorf("%s: python: %s part charset %q", n.name, p["type"], p["charset"])
			}
		}
		if lf(r.Parts[0]["content"]) != n.r.Text {
			t.Errorf("%s: python: text part does not decode back", n.name)
		}
		if !strings.Contains(r.Parts[1]["content"], "<body") || !strings.Contains(r.Parts[1]["content"], "&lt;b&gt;ご注意ください&lt;/b&gt; &amp;") {
			t.Errorf("%s: python: HTML part lacks the escaped paragraph", n.name)
		}
		for _, h := range []string{"Message-ID", "Date", "MIME-Version", "Auto-Submitted"} {
			if len(headerList(r, h)) != 1 {
				t.Errorf("%s: python: %s appears %d times", n.name, h, len(headerList(r, h)))
			}
		}
	}
}

func TestListUnsubscribeWhenConfigured(t *testing.T) {
	msg, err := Build(testMessage("a@example.com"), &Options{ListUnsubscribe: "<mailto:unsubscribe@example.jp>"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	msg.WriteTo(&buf)
	m, err := mimetest.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("List-Unsubscribe"); got != "<mailto:unsubscribe@example.jp>" {
		t.Errorf("List-Unsubscribe = %q", got)
	}
}

// TestISO2022JPHeaders: display names, the subject and the bodies of an
// ISO-2022-JP message are ISO-2022-JP (never UTF-8 encoded-words) and
// decode back exactly, long names folded into several words.
func TestISO2022JPHeaders(t *testing.T) {
	testenv.Slow(t, "every notice in ISO-2022-JP")
	long := strings.Repeat("株式会社サンプル　", 8) + "お客様相談室"
	m := &Message{From: long + " <notice@example.jp>", ReplyTo: "\"Sample, Support\" <support@example.jp>", To: "taro@example.jp", ToName: "山田　太郎",
		Subject: "【重要】クレジットカード情報流出のお詫びとカード再発行のお願い – 株式会社サンプル", Text: "本文です。\n", HTML: "<html><head><meta charset=\"utf-8\"></head><body>本文</body></html>",
		MessageID: "1@example.jp", Charset: "ISO-2022-JP"}
	msg, err := Build(m, nil)
	if err != nil {
		// "–" (EN DASH) is not JIS X 0208: the error must name it.
		if !strings.Contains(err.Error(), "U+2013") || !strings.Contains(err.Error(), "subject") {
			t.Fatalf("error does not name the character and where: %v", err)
		}
		m.Subject = strings.Replace(m.Subject, "–", "―", 1)
		if msg, err = Build(m, nil); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Fatal("EN DASH accepted in ISO-2022-JP")
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	hdr, _, _ := strings.Cut(raw, "\r\n\r\n")
	if strings.Contains(strings.ToLower(hdr), "utf-8") {
		t.Errorf("UTF-8 in the header of an ISO-2022-JP message:\n%s", hdr)
	}
	checkLines(t, "iso", buf.Bytes())
	for _, l := range strings.Split(hdr, "\r\n") {
		if len(l) > 78 {
			t.Errorf("header line of %d characters: %q", len(l), l)
		}
	}
	gm, err := mimetest.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if gm.Subject != m.Subject {
		t.Errorf("subject %q", gm.Subject)
	}
	if !strings.Contains(gm.HTML, `<meta charset="iso-2022-jp">`) || strings.Contains(gm.HTML, "utf-8") {
		t.Errorf("HTML charset not rewritten: %q", gm.HTML)
	}
	res := pyParseAll(t, [][]byte{buf.Bytes()})[0]
	if len(res.Defects) > 0 {
		t.Errorf("python defects: %v", res.Defects)
	}
	// Go's decoder drops the space between two encoded-words (RFC 2047
	// 6.2); Python's keeps one inside an address, so the long name, which
	// needs several words, is compared without spaces there.
	nospace := strings.NewReplacer(" ", "", "\u3000", "").Replace
	if got := strings.TrimSuffix(gm.From, " <notice@example.jp>"); got != long {
		t.Errorf("net/mail From name %q, want %q", got, long)
	}
	for name, want := range map[string][2]string{
		"From":     {long, "notice@example.jp"},
		"To":       {"山田　太郎", "taro@example.jp"},
		"Reply-To": {"Sample, Support", "support@example.jp"},
	} {
		got := addresses(res, name)
		if name == "From" && len(got) == 1 {
			got[0][0], want[0] = nospace(got[0][0]), nospace(want[0])
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("python %s = %q, want %q", name, got, want)
		}
	}
	if got := headerList(res, "Subject"); len(got) != 1 || got[0] != m.Subject {
		t.Errorf("python subject %q", got)
	}
}

// TestISO2022JPRefuses: characters ISO-2022-JP cannot carry fail the build
// with an error naming them; nothing is replaced or dropped.
func TestISO2022JPRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, part string
		char       rune
		set        func(m *Message, s string)
	}{
		{"circled digit in subject", "subject", '①', func(m *Message, s string) { m.Subject += s }},
		{"㈱ in from name", "from name", '㈱', func(m *Message, s string) { m.From = s + "サンプル <notice@example.jp>" }},
		{"emoji in to name", "to name", '😀', func(m *Message, s string) { m.ToName += s }},
		{"half-width kana in text", "text", 'ｱ', func(m *Message, s string) { m.Text += s }},
		{"wave dash form in html", "html", '～', func(m *Message, s string) { m.HTML = "<p>9時" + s + "18時</p>" }},
		{"hangul in reply-to name", "reply-to name", '한', func(m *Message, s string) { m.ReplyTo = s + " <r@example.jp>" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := testMessage("a@example.com")
			m.Charset = "iso-2022-jp"
			tt.set(m, string(tt.char))
			_, err := Build(m, nil)
			var ce *templates.CharsetError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *templates.CharsetError", err)
			}
			if len(ce.Problems) != 1 || ce.Problems[0].Char != tt.char || ce.Problems[0].Part != tt.part {
				t.Errorf("problems %+v, want %q in %s", ce.Problems, tt.char, tt.part)
			}
			if !strings.Contains(err.Error(), string(tt.char)) {
				t.Errorf("error does not name the character: %v", err)
			}
			// UTF-8 carries it.
			m.Charset = "utf-8"
			if _, err := Build(m, nil); err != nil {
				t.Errorf("utf-8: %v", err)
			}
		})
	}
}

// TestHeaderInjection: CR, LF and "\r\nBcc:" in names, subjects, reply-to
// and other fields add no header and no recipient — neither in the message
// nor in the SMTP envelope the server sees.
func TestHeaderInjection(t *testing.T) {
	testenv.Slow(t, "one SMTP session per injection case and charset")
	const evil = "\r\nBcc: evil@example.com"
	for _, tt := range []struct {
		name    string
		set     func(m *Message)
		o       Options
		refused bool // the build must fail rather than send
	}{
		{name: "to name", set: func(m *Message) { m.ToName = "Taro" + evil }},
		{name: "to name LF", set: func(m *Message) { m.ToName = "Taro\nBcc: evil@example.com" }},
		{name: "to name CR", set: func(m *Message) { m.ToName = "Taro\rBcc: evil@example.com" }},
		{name: "subject", set: func(m *Message) { m.Subject = "Notice" + evil }},
		{name: "subject LF LF body", set: func(m *Message) { m.Subject = "Notice\n\nfake body" }},
		{name: "subject ja", set: func(m *Message) { m.Subject = "【重要】お知らせ" + evil }},
		{name: "from name", set: func(m *Message) { m.From = "\"Example" + evil + "\" <notice@example.jp>" }, refused: true},
		{name: "from after address", set: func(m *Message) { m.From = "notice@example.jp" + evil }, refused: true},
		{name: "reply-to", set: func(m *Message) { m.ReplyTo = "support@example.jp" + evil }, refused: true},
		{name: "reply-to list", set: func(m *Message) { m.ReplyTo = "support@example.jp, evil@example.com" }, refused: true},
		{name: "to address", set: func(m *Message) { m.To = "victim@example.com" + evil }, refused: true},
		{name: "to address list", set: func(m *Message) { m.To = "victim@example.com,evil@example.com" }, refused: true},
		{name: "to address brackets", set: func(m *Message) { m.To = "victim@example.com> <evil@example.com" }, refused: true},
		{name: "message-id", set: func(m *Message) { m.MessageID = "1@example.jp>" + evil }, refused: true},
		{name: "list-unsubscribe", set: func(*Message) {}, o: Options{ListUnsubscribe: "<mailto:u@example.jp>" + evil}},
		{name: "text body", set: func(m *Message) { m.Text = "Hi" + evil + "\r\n\r\n" }},
	} {
		for _, cs := range []string{"utf-8", "iso-2022-jp"} {
			t.Run(tt.name+"/"+cs, func(t *testing.T) {
				sink := startSink(t, smtpsink.Options{Keep: true})
				o := tt.o
				o.URL = sink.URL()
				p := newPool(t, o)
				m := testMessage("victim@example.com")
				m.Charset = cs
				tt.set(m)
				err := p.Send(context.Background(), m)
				if tt.refused {
					if err == nil {
						t.Fatalf("sent; want a refusal")
					}
					if e := Classify(err); e.Temporary {
						t.Errorf("refusal is temporary: %v", err)
					}
					if sink.Count() != 0 {
						t.Errorf("server received %d messages", sink.Count())
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got := sink.Messages()
				if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "victim@example.com" || got[0].From != "notice@example.jp" {
					t.Fatalf("envelope: %+v", got)
				}
				raw := got[0].Data
				checkLines(t, tt.name, raw)
				gm, err := mimetest.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range []string{"Bcc", "Cc"} {
					if v, ok := gm.Header[h]; ok {
						t.Errorf("%s header appeared: %q", h, v)
					}
				}
				for k, v := range gm.Header {
					if len(v) != 1 {
						t.Errorf("header %s appears %d times", k, len(v))
					}
				}
				// The text stays, on one line, in the header it was given for.
				for _, f := range []struct{ in, got string }{
					{m.ToName, gm.To}, {m.Subject, gm.Subject}, {o.ListUnsubscribe, gm.Header.Get("List-Unsubscribe")},
				} {
					if strings.Contains(f.in, "Bcc:") && !strings.Contains(f.got, "Bcc: evil@example.com") {
						t.Errorf("%q decodes to %q", f.in, f.got)
					}
				}
				res := pyParseAll(t, [][]byte{raw})[0]
				if b := headerList(res, "Bcc"); len(b) > 0 {
					t.Errorf("python sees Bcc %q", b)
				}
				if to := addresses(res, "To"); len(to) != 1 || to[0][1] != "victim@example.com" {
					t.Errorf("python sees To %q", to)
				}
				if len(res.Defects) > 0 {
					t.Errorf("python defects: %v", res.Defects)
				}
			})
		}
	}
}

// TestEncodedWordNameStaysText: a display name that is itself an RFC 2047
// encoded-word (issue 13) is sent so that a parser shows the literal text,
// never the address-looking string it would decode to. Uploads refuse such
// names; this holds for whatever reaches the mailer anyway.
func TestEncodedWordNameStaysText(t *testing.T) {
	testenv.Slow(t, "many encodings")
	const evil = "=?utf-8?q?evil=40attacker.com?="
	var raws [][]byte
	for _, cs := range []string{"utf-8", "iso-2022-jp"} {
		m := testMessage("victim@example.com")
		m.Charset = cs
		m.ToName = evil
		m.From = `"=?utf-8?q?security=40bank.example?=" <notice@example.jp>`
		msg, err := Build(m, nil)
		if err != nil {
			t.Fatalf("%s: %v", cs, err)
		}
		var buf bytes.Buffer
		if _, err := msg.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, buf.Bytes())
	}
	for i, r := range pyParseAll(t, raws) {
		for _, h := range []string{"To", "From"} {
			for _, a := range addresses(r, h) {
				if strings.Contains(a[0], "@") {
					t.Errorf("message %d: Python reads the %s display name as %q", i, h, a[0])
				}
			}
		}
		if to := addresses(r, "To"); len(to) != 1 || to[0][0] != evil || to[0][1] != "victim@example.com" {
			t.Errorf("message %d: To %v, want the literal name and victim@example.com", i, to)
		}
	}
}
