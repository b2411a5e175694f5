package mailer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
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
