package worker

import (
	"strings"
	"testing"

	"github.com/oshirase/oshirase/mailer"
)

// TestRelaySignature: two refusals are the same answer whatever address
// they name, in whatever case and spacing; the pause reason made of them
// never holds an address.
func TestRelaySignature(t *testing.T) {
	a := &mailer.Error{Code: 554, Enhanced: "5.7.1", Stage: mailer.StageRcpt, Text: "<taro@example.jp>: Relay access denied"}
	b := &mailer.Error{Code: 554, Enhanced: "5.7.1", Stage: mailer.StageRcpt, Text: "<Hanako.Y@mail.example.com>:  relay ACCESS denied"}
	c := &mailer.Error{Code: 554, Enhanced: "5.7.1", Stage: mailer.StageData, Text: "<taro@example.jp>: Relay access denied"}
	d := &mailer.Error{Code: 550, Enhanced: "5.7.1", Stage: mailer.StageRcpt, Text: "Relay access denied for taro@example.jp"}
	if relaySignature(a) != relaySignature(b) {
		t.Errorf("%q != %q", relaySignature(a), relaySignature(b))
	}
	if relaySignature(a) == relaySignature(c) || relaySignature(a) == relaySignature(d) {
		t.Error("another stage or code made the same signature")
	}
	for _, e := range []*mailer.Error{a, b, c, d} {
		if r := replyText(e); strings.Contains(r, "@") || !strings.Contains(strings.ToLower(r), "relay access denied") {
			t.Errorf("replyText(%q) = %q", e.Text, r)
		}
	}
	if got := replyText(a); got != "554 5.7.1 Relay access denied" {
		t.Errorf("replyText = %q", got)
	}
}
