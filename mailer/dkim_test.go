package mailer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestDKIM sends signed messages through the Pool to a real SMTP server and
// verifies what arrived with an independent verifier (emersion/go-msgauth)
// against the public key; a changed body or header must fail.
func TestDKIM(t *testing.T) {
	for _, kind := range []string{"rsa-pkcs1", "rsa-pkcs8", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			file, txt := testenv.DKIMKey(t, kind)
			lookup := func(domain string) ([]string, error) {
				if domain != "sel2019._domainkey.example.jp" {
					return nil, errors.New("no such record: " + domain)
				}
				return []string{txt}, nil
			}
			sink := startSink(t, smtpsink.Options{Keep: true})
			p := newPool(t, Options{URL: sink.URL(), PoolSize: 1,
				DKIM: &DKIMOptions{Domain: "example.jp", Selector: "sel2019", KeyFile: file}})
			msgs := []*Message{
				testMessage("en@example.com"),
				{From: "株式会社サンプル <notice@example.jp>", ReplyTo: "support@example.jp", To: "ja@example.com", ToName: "山田 太郎",
					Subject: "【重要】クレジットカード情報流出のお詫び", Text: strings.Repeat("カードの再発行をお願いいたします。\n", 30),
					HTML: "<html><head></head><body><p>再発行</p></body></html>", MessageID: "ja.1@example.jp"},
			}
			iso := *msgs[1]
			iso.Charset, iso.To, iso.MessageID = "iso-2022-jp", "iso@example.com", "iso.1@example.jp"
			msgs = append(msgs, &iso)
			for _, m := range msgs {
				if err := p.Send(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
			got := sink.Messages()
			if len(got) != len(msgs) {
				t.Fatalf("sink has %d messages, want %d", len(got), len(msgs))
			}
			for _, m := range got {
				verify := func(raw []byte) error {
					vs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookup})
					if err != nil {
						return err
					}
					if len(vs) != 1 {
						return errors.New("want exactly one signature")
					}
					if vs[0].Domain != "example.jp" {
						return errors.New("signed for " + vs[0].Domain)
					}
					return vs[0].Err
				}
				if err := verify(m.Data); err != nil {
					t.Errorf("%s: signature does not verify: %v\n%.800s", m.To[0], err, m.Data)
					continue
				}
				hdr, body, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
				for name, tampered := range map[string][]byte{
					"body":           append(append(append([]byte{}, hdr...), "\r\n\r\n"...), bytes.Replace(body, []byte("Content-Type"), []byte("Content-Typf"), 1)...),
					"added line":     append(append([]byte{}, m.Data...), "PS: call 0120-999-999\r\n"...),
					"second subject": append([]byte("Subject: Please send your card number\r\n"), m.Data...),
					"reply-to":       append([]byte("Reply-To: phish@example.net\r\n"), m.Data...),
				} {
					if err := verify(tampered); err == nil {
						t.Errorf("%s: signature still verifies after a change (%s)", m.To[0], name)
					}
				}
			}
		})
	}
}

func TestDKIMKeyErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	for _, tt := range []struct {
		name string
		o    DKIMOptions
		want string
	}{
		{"missing file", DKIMOptions{Domain: "example.jp", Selector: "s", KeyFile: filepath.Join(dir, "none.pem")}, "DKIM_KEY_FILE"},
		{"not PEM", DKIMOptions{Domain: "example.jp", Selector: "s", KeyFile: bad}, "PEM"},
		{"no selector", DKIMOptions{Domain: "example.jp", KeyFile: bad}, "DKIM_SELECTOR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPool(Options{URL: "smtp://127.0.0.1:25", DKIM: &tt.o})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %s", err, tt.want)
			}
		})
	}
}

// TestDKIMSignsDateAndMIMEHeaders: Date (RFC 6376 5.4 recommends it),
// MIME-Version and Auto-Submitted are signed, so none can be changed or
// replayed with another date without breaking the signature.
func TestDKIMSignsDateAndMIMEHeaders(t *testing.T) {
	file, txt := testenv.DKIMKey(t, "rsa-pkcs8")
	lookup := func(string) ([]string, error) { return []string{txt}, nil }
	msg, err := Build(testMessage("a@example.com"), &Options{DKIM: &DKIMOptions{Domain: "example.jp", Selector: "sel", KeyFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(buf.Bytes()), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verify: %v %+v\n%.1200s", err, vs, buf.Bytes())
	}
	signed := strings.ToLower(strings.Join(vs[0].HeaderKeys, ":"))
	for _, h := range []string{"date", "mime-version", "auto-submitted", "from", "subject", "message-id", "content-type"} {
		if !strings.Contains(":"+signed+":", ":"+h+":") {
			t.Errorf("%s is not signed (h=%s)", h, signed)
		}
	}
	for name, re := range map[string]*regexp.Regexp{
		"date":           regexp.MustCompile(`(?m)^Date: .*$`),
		"mime-version":   regexp.MustCompile(`(?m)^MIME-Version: 1.0`),
		"auto-submitted": regexp.MustCompile(`(?m)^Auto-Submitted: auto-generated`),
	} {
		changed := re.ReplaceAll(buf.Bytes(), []byte(map[string]string{
			"date": "Date: Sat, 01 Jun 2019 00:00:00 +0000", "mime-version": "MIME-Version: 1.1", "auto-submitted": "Auto-Submitted: no",
		}[name]))
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(changed), &dkim.VerifyOptions{LookupTXT: lookup})
		if err == nil && len(vs) == 1 && vs[0].Err == nil {
			t.Errorf("signature still verifies with %s changed", name)
		}
	}
}

// TestDKIMKeyPerDomain: with several keys (DKIM_KEYS), a message is signed
// with the key of its From domain, so DMARC's alignment holds; a subdomain
// uses its parent's key; an unknown domain falls back to DKIM_DOMAIN's.
func TestDKIMKeyPerDomain(t *testing.T) {
	jpFile, jpTXT := testenv.DKIMKey(t, "ed25519")
	comFile, comTXT := testenv.DKIMKey(t, "rsa-pkcs1")
	records := map[string]string{"jp._domainkey.example.jp": jpTXT, "com._domainkey.example.com": comTXT}
	lookup := func(d string) ([]string, error) {
		if r, ok := records[d]; ok {
			return []string{r}, nil
		}
		return nil, errors.New("no record " + d)
	}
	keys, err := ParseDKIMKeys("example.com:com:" + comFile)
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{DKIM: &DKIMOptions{Domain: "example.jp", Selector: "jp", KeyFile: jpFile}, DKIMKeys: keys}
	if err := CheckDKIM(o); err != nil {
		t.Fatal(err)
	}
	if got := o.DKIMDomains(); strings.Join(got, ",") != "example.jp,example.com" {
		t.Errorf("DKIMDomains = %v", got)
	}
	for _, tt := range []struct{ from, wantD string }{
		{"Sample <notice@example.jp>", "example.jp"},
		{"Sample <notice@example.com>", "example.com"},
		{"Sample <notice@mail.example.com>", "example.com"},
		{"Sample <notice@example.org>", "example.jp"},
	} {
		m := testMessage("a@example.net")
		m.From, m.ReplyTo, m.MessageID = tt.from, "", ""
		msg, err := Build(m, o)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		msg.WriteTo(&buf)
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(buf.Bytes()), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("%s: verify: %v %+v", tt.from, err, vs)
		}
		if vs[0].Domain != tt.wantD {
			t.Errorf("%s: signed d=%s, want %s", tt.from, vs[0].Domain, tt.wantD)
		}
	}
}

func TestParseDKIMKeys(t *testing.T) {
	got, err := ParseDKIMKeys(" Example.COM.:s1:/k/a.pem , example.jp:s2:C:\\keys\\b.pem,")
	if err != nil {
		t.Fatal(err)
	}
	want := []DKIMOptions{{"example.com", "s1", "/k/a.pem"}, {"example.jp", "s2", `C:\keys\b.pem`}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"example.com:s1", "example.com::f", "a.jp:s:f,A.jp:t:g"} {
		if _, err := ParseDKIMKeys(bad); err == nil || !strings.Contains(err.Error(), "DKIM_KEYS") {
			t.Errorf("ParseDKIMKeys(%q) = %v, want an error naming DKIM_KEYS", bad, err)
		}
	}
	if k, err := ParseDKIMKeys(""); err != nil || k != nil {
		t.Errorf("empty: %v %v", k, err)
	}
}

func TestAligned(t *testing.T) {
	for _, tt := range []struct {
		from, d string
		want    bool
	}{
		{"example.jp", "example.jp", true},
		{"Example.JP", "example.jp.", true},
		{"mail.example.jp", "example.jp", true},
		{"example.jp", "mail.example.jp", false},
		{"badexample.jp", "example.jp", false},
		{"example.com", "example.jp", false},
		{"example.jp", "", false},
	} {
		if got := Aligned(tt.from, tt.d); got != tt.want {
			t.Errorf("Aligned(%q, %q) = %v", tt.from, tt.d, got)
		}
	}
}
