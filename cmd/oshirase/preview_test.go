package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/mimetest"
	"github.com/oshirase/oshirase/internal/testenv"
)

const incidentJSON = `{"company":{"ja":"株式会社テスト","en":"Test Co."},"service":"テスト通販","discovered_on":"2019-05-28","cause":"第三者による不正アクセスが原因です。","secondary_harm":"不正利用の報告は受けておりません。",
"period_start":"2009-05-01","period_end":"2019-05-27","leaked_items":["カード番号","有効期限"],
"actions_taken":["カード決済を停止"],"hotline":"0120-000-000","hotline_hours":"9時から18時","contact_email":"support@example.jp"}`

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPreviewCommand renders a notice as a person checking it before the
// send would, and reads the .eml it writes back with net/mail.
func TestPreviewCommand(t *testing.T) {
	t.Setenv("TEMPLATES_DIR", "")
	data := writeFile(t, "incident.json", incidentJSON)
	rcpt := writeFile(t, "r.json", `{"email":"hanako@example.jp","name":"佐藤　花子","card_brand":"JCB","card_last4":"9876"}`)
	for _, cs := range []string{"utf-8", "iso-2022-jp"} {
		t.Run(cs, func(t *testing.T) {
			eml := filepath.Join(t.TempDir(), "out.eml")
			var out, errb bytes.Buffer
			code := run([]string{"preview", "--template", "card-reissue", "--locale", "ja", "--data", data,
				"--recipient", rcpt, "--charset", cs, "--eml", eml}, &out, &errb)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			s := out.String()
			for _, want := range []string{"Subject: 【重要】", "株式会社テスト", "9876", "再発行", "----- text/html -----", "佐藤　花子"} {
				if !strings.Contains(s, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			raw, err := os.ReadFile(eml)
			if err != nil {
				t.Fatal(err)
			}
			m, err := mimetest.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(m.Subject, "【重要】") || !strings.Contains(m.Text, "9876") || !strings.Contains(m.HTML, "株式会社テスト") {
				t.Errorf(".eml decodes to subject %q and bodies without the data", m.Subject)
			}
			if m.To != "佐藤　花子 <hanako@example.jp>" {
				t.Errorf("To decodes to %q", m.To)
			}
			if len(m.Parts) != 2 || m.Parts[0] != "text/plain" || m.Parts[1] != "text/html" {
				t.Errorf("parts %v", m.Parts)
			}
			if !bytes.Contains(bytes.ToLower(raw), []byte("charset="+cs)) {
				t.Errorf(".eml is not in %s", cs)
			}
		})
	}
	t.Run("part subject, english", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"preview", "--template", "password-reset", "--locale", "en", "--part", "subject"}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if s := strings.TrimSpace(out.String()); !strings.HasPrefix(s, "[Important]") || strings.Contains(s, "\n") {
			t.Errorf("subject only: %q", s)
		}
	})
}

func TestPreviewCommandErrors(t *testing.T) {
	t.Setenv("TEMPLATES_DIR", "")
	circled := writeFile(t, "circled.json", strings.Replace(incidentJSON, `"9時から18時"`, `"①平日9時から18時"`, 1))
	missing := writeFile(t, "missing.json", `{"company":"X"}`)
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"iso-2022-jp cannot carry ①", []string{"--data", circled, "--charset", "iso-2022-jp", "--eml", filepath.Join(t.TempDir(), "x.eml")}, []string{"①", "U+2460", "iso-2022-jp"}},
		{"missing fields", []string{"--data", missing}, []string{"missing.json", "hotline"}},
		{"unknown template", []string{"--template", "nope"}, []string{"unknown template"}},
		{"bad locale", []string{"--locale", "fr"}, []string{"fr"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append([]string{"preview"}, tt.args...), &out, &errb); code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q: %s", w, errb.String())
				}
			}
			for _, a := range tt.args {
				if strings.HasSuffix(a, ".eml") {
					if _, err := os.Stat(a); err == nil {
						t.Errorf(".eml written for a notice that cannot be sent")
					}
				}
			}
		})
	}
}

// copyTemplate copies the embedded card-reissue template from the source
// tree into dir/name, to be broken by the test.
func copyTemplate(t *testing.T, dir, name string) {
	t.Helper()
	src := filepath.Join("..", "..", "templates", "card-reissue")
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, name, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestServeRefusesBrokenOverride: a broken template in TEMPLATES_DIR stops
// `oshirase serve` (service.New) before it takes any work, naming the
// file, the line and the reason.
func TestServeRefusesBrokenOverride(t *testing.T) {
	for _, tt := range []struct {
		name   string
		file   string
		break_ func(src string) string
		want   []string
	}{
		{"stray end", "ja/text.tmpl", func(s string) string { return "一行目\n二行目\n{{end}}\n" + s },
			[]string{filepath.Join("card-reissue", "ja", "text.tmpl") + ":3", "unexpected {{end}}"}},
		{"unknown field", "en/html.tmpl", func(s string) string { return "<!-- x -->\n{{.Data.no_such_field}}\n" + s },
			[]string{filepath.Join("card-reissue", "en", "html.tmpl") + ":2", "no_such_field"}},
		{"unknown function", "ja/subject.tmpl", func(s string) string { return "{{shout .Data.company}}" + s },
			[]string{filepath.Join("card-reissue", "ja", "subject.tmpl") + ":1", "shout"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			copyTemplate(t, dir, "card-reissue")
			p := filepath.Join(dir, "card-reissue", tt.file)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tt.break_(string(b))), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Setenv("TEMPLATES_DIR", dir)
			t.Setenv("REDIS_URL", "redis://"+testenv.Addr()+"/15")
			t.Setenv("SMTP_URL", "smtp://127.0.0.1:1?tls=none")
			t.Setenv("OSHIRASE_API_KEYS", testenv.APIKeys)
			t.Setenv("LISTEN_ADDR", "127.0.0.1:0")
			var out, errb bytes.Buffer
			if code := run([]string{"serve"}, &out, &errb); code != 1 {
				t.Fatalf("serve exited %d with a broken template: %s", code, errb.String())
			}
			for _, w := range append(tt.want, "templates") {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("error lacks %q: %s", w, errb.String())
				}
			}
		})
	}
	// The same directory unbroken is accepted by preview (Load is shared).
	dir := t.TempDir()
	copyTemplate(t, dir, "card-reissue")
	t.Setenv("TEMPLATES_DIR", dir)
	var out, errb bytes.Buffer
	if code := run([]string{"preview", "--part", "subject"}, &out, &errb); code != 0 {
		t.Fatalf("valid override dir refused: %s", errb.String())
	}
}
