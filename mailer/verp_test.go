package mailer

import (
	"context"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/smtpsink"
)

// TestReturnPathAndDSN: a notice with a bounce token leaves with the
// per-recipient return path as envelope sender, the token in a header and,
// where the relay offers DSN, RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT —
// on the pipelined path and command by command. Without DSN no parameter
// is sent (a server without the extension would refuse it); without a
// token, the envelope sender is From's address as before.
func TestReturnPathAndDSN(t *testing.T) {
	const rp, tok = "b-abc-1-0-mac@bounces.example.jp", "abc-1-0-mac"
	for _, tc := range []struct {
		name       string
		dsn, plain bool
		token      bool
	}{
		{"pipelined dsn", true, false, true},
		{"plain dsn", true, true, true},
		{"pipelined no dsn", false, false, true},
		{"plain no dsn", false, true, true},
		{"no token", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSink(t, smtpsink.Options{Keep: true, DSN: tc.dsn})
			p := newPool(t, Options{URL: s.URL(), noPipelining: tc.plain})
			m := testMessage("a+b=c@example.com")
			if tc.token {
				m.ReturnPath, m.Token = rp, tok
			}
			if err := p.Send(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			got := s.Messages()[0]
			hdr := string(got.Data[:strings.Index(string(got.Data), "\r\n\r\n")])
			if !tc.token {
				if got.From != "notice@example.jp" || got.EnvID != "" || strings.Contains(hdr, TokenHeader) {
					t.Fatalf("no token: from %q envid %q header %v", got.From, got.EnvID, strings.Contains(hdr, TokenHeader))
				}
				return
			}
			if got.From != rp {
				t.Errorf("MAIL FROM %q, want %q", got.From, rp)
			}
			if !strings.Contains(hdr, "\r\n"+TokenHeader+": "+tok+"\r\n") {
				t.Errorf("no %s header in\n%s", TokenHeader, hdr)
			}
			want := smtpsink.Message{}
			if tc.dsn {
				want = smtpsink.Message{Ret: "HDRS", EnvID: tok, Notify: "FAILURE,DELAY", ORcpt: "RFC822;a+b=c@example.com"}
			}
			if got.Ret != want.Ret || got.EnvID != want.EnvID || got.Notify != want.Notify || !strings.EqualFold(got.ORcpt, want.ORcpt) {
				t.Errorf("DSN parameters ret=%q envid=%q notify=%q orcpt=%q, want %+v", got.Ret, got.EnvID, got.Notify, got.ORcpt, want)
			}
		})
	}
}

func TestReturnPathChecked(t *testing.T) {
	for _, m := range []*Message{
		{ReturnPath: "b-x@bounces.example.jp", Token: "Bad Token"},
		{ReturnPath: "b-x@bounces.example.jp\r\nRCPT TO:<x@y>", Token: "x"},
		{ReturnPath: "", Token: "x"},
	} {
		base := testMessage("taro@example.com")
		base.ReturnPath, base.Token = m.ReturnPath, m.Token
		if _, err := Build(base, nil); err == nil {
			t.Errorf("Build accepted return path %q token %q", m.ReturnPath, m.Token)
		}
	}
}
