package bounce

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorpus: bounce formats written from their documented shapes
// (testdata/corpus), each with the classification it must get — the kind,
// whether it is a hard bounce (suppressed), the status and the token the
// returned headers carry.
func TestCorpus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, kind    string
		hard          bool
		status, token string
		diag          string // a part of the diagnostic
	}{
		{"qmail-no-mailbox.eml", "bounced", true, "5.1.1", "c7kq2x4m3ab5e-2n-0-aaaaaaaaaaaaaaaa", "no mailbox here"},
		{"qmail-remote-said.eml", "bounced", false, "5.2.2", "abc-1-0-mac", "Remote host said: 552 5.2.2 Mailbox full"},
		{"exim-550.eml", "bounced", false, "5.0.0", "abc-1-0-mac", "550 5.1.1"},
		{"sendmail-user-unknown.eml", "bounced", true, "5.1.1", "abc-1-0-mac", "User unknown"},
		{"exchange-online.eml", "bounced", true, "5.1.10", "abc-1-0-mac", "RecipientNotFound"},
		{"gmail-over-quota.eml", "bounced", false, "5.2.2", "abc-1-0-mac", "out of storage"},
		{"yahoo-arf.eml", "complained", false, "", "abc-2-0-mac", ""},
		{"outlook-arf-redacted.eml", "complained", false, "", "abc-2-0-mac", ""},
		{"vacation-ja.eml", "auto-reply", false, "", "", ""},
		{"vacation-en.eml", "auto-reply", false, "", "", ""},
		{"headers-only.eml", "bounced", true, "5.1.2", "abc-3-1-mac", ""},
		// Parsed as what it claims; its token fails the HMAC below, so it
		// marks nobody.
		{"forged-token.eml", "bounced", true, "5.1.1", "c7kq2x4m3ab5e-2n-0-0000000000000000", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "corpus", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := Parse(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Kind) != tc.kind || r.Hard() != tc.hard || r.Status != tc.status || r.HeaderToken != tc.token || !strings.Contains(r.Diagnostic, tc.diag) {
				t.Errorf("kind %q hard %v status %q token %q diag %q; want %q %v %q %q %q", r.Kind, r.Hard(), r.Status, r.HeaderToken, r.Diagnostic,
					tc.kind, tc.hard, tc.status, tc.token, tc.diag)
			}
		})
	}
	// The forged token does not decode under the real secret.
	c, err := New("bounces.example.jp", "corpus-test-secret-0123")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode("c7kq2x4m3ab5e-2n-0-0000000000000000"); err == nil {
		t.Error("forged token decodes")
	}
}
