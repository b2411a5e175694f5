package inbound_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

const domain = "bounces.oshirase.test"

func dsn(envid, action, status, headerTok string) string {
	return strings.ReplaceAll(`From: MAILER-DAEMON@relay.oshirase.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Sorry.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.oshirase.test
Original-Envelope-Id: `+envid+`

Final-Recipient: rfc822; bad@dest.test
Action: `+action+`
Status: `+status+`
Diagnostic-Code: smtp; 550 5.1.1 <bad@dest.test>: User unknown

--B
Content-Type: text/rfc822-headers

From: notice@example.jp
X-Oshirase-Token: `+headerTok+`

--B--
`, "\n", "\r\n")
}

// arf is an RFC 5965 complaint whose feedback loop redacted the recipient:
// only the returned notice's header names it.
func arf(tok string) string {
	return strings.ReplaceAll(`From: fbl@isp.example
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A"

--A
Content-Type: text/plain

This is an abuse report.

--A
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: FBL/1.0
Version: 1
Original-Rcpt-To: redacted@isp.example

--A
Content-Type: message/rfc822

From: notice@example.jp
X-Oshirase-Token: `+tok+`
Subject: notice

body
--A--
`, "\n", "\r\n")
}

type fixture struct {
	st    *store.Store
	codec *bounce.Codec
	srv   *inbound.Server
	cid   string
	log   *testenv.LogBuffer // the receiver's log
}

func setup(t *testing.T, lmtp bool, maxBytes int) *fixture {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBInbound)
	st := store.New(rdb, "in")
	codec, err := bounce.New(domain, "test-secret-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "smtp"
	if lmtp {
		scheme = "lmtp"
	}
	logs := &testenv.LogBuffer{}
	srv, err := inbound.Listen(inbound.Config{URL: scheme + "://127.0.0.1:0", MaxBytes: maxBytes, Codec: codec, Store: st,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	cid := sentCampaign(t, st, "u", 5)
	return &fixture{st: st, codec: codec, srv: srv, cid: cid, log: logs}
}

// sentCampaign creates a campaign of n recipients <local><i>@dest.test
// (i from 1), all sent.
func sentCampaign(t *testing.T, st *store.Store, local string, n int) string {
	t.Helper()
	return campaignIn(t, st, local, n, notice.StatusSent)
}

// campaignIn creates a started campaign of n recipients <local><i>@dest.test
// (i from 1), all moved from pending to status.
func campaignIn(t *testing.T, st *store.Store, local string, n int, status notice.Status) string {
	t.Helper()
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := st.CreateCampaign(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rs []notice.Recipient
	for i := 1; i <= n; i++ {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("%s%d@dest.test", local, i), Locale: "ja"})
	}
	added, err := st.AddRecipients(ctx, c.ID, rs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Mark(ctx, c.ID, added.IDs, []notice.Status{notice.StatusPending}, status); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func (f *fixture) rp(t *testing.T, rid int64) (string, string) {
	a, tok, err := f.codec.ReturnPath(bounce.Ref{Campaign: f.cid, Recipient: rid})
	if err != nil {
		t.Fatal(err)
	}
	return a, tok
}

// send delivers msg to rcpt over LMTP (or SMTP) and returns the reply to
// RCPT or to the end of data.
func send(t *testing.T, addr string, lmtp bool, rcpt, msg string) error {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var c *smtp.Client
	if lmtp {
		c = smtp.NewClientLMTP(conn)
	} else {
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	if err := c.Hello("relay.oshirase.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	var le smtp.LMTPDataError
	if errors.As(err, &le) {
		for _, e := range le {
			return e.Code
		}
	}
	if err != nil {
		return -1
	}
	return 250
}

// TestReceiver: over LMTP and SMTP, a 5.1.1 DSN to a recipient's return
// path makes it bounced and suppressed, once however often it comes; a
// delayed DSN tied by ENVID only is an event; a vacation reply is an
// event; a forged token and a token-less message change nothing (250: the
// relay need not keep them); mail for another domain is refused (550),
// an oversized message too (552).
func TestReceiver(t *testing.T) {
	for _, lmtp := range []bool{true, false} {
		t.Run(map[bool]string{true: "lmtp", false: "smtp"}[lmtp], func(t *testing.T) {
			f := setup(t, lmtp, 8<<10)
			ctx := context.Background()
			rp1, tok1 := f.rp(t, 1)
			_, tok2 := f.rp(t, 2)
			rp3, _ := f.rp(t, 3)
			_, tok4 := f.rp(t, 4)
			_, tok5 := f.rp(t, 5)
			steps := []struct {
				name, rcpt, msg string
				code            int
			}{
				{"hard bounce", rp1, dsn(tok1, "failed", "5.1.1", tok1), 250},
				{"same DSN again", rp1, dsn(tok1, "failed", "5.1.1", tok1), 250},
				{"delayed, by ENVID", "postmaster@" + domain, dsn(tok2, "delayed", "4.2.0", ""), 250},
				{"vacation", rp3, "From: u3@dest.test\r\nAuto-Submitted: auto-replied\r\nSubject: 不在\r\n\r\naway\r\n", 250},
				{"forged token", "b-" + f.cid + "-4-0-aaaaaaaaaaaaaaaa@" + domain, dsn("", "failed", "5.1.1", ""), 250},
				{"altered header token only", "postmaster@" + domain, dsn("", "failed", "5.1.1", altered(tok4)), 250},
				{"complaint, recipient redacted: by the returned header", "fbl@" + domain, arf(tok5), 250},
				{"other domain", "someone@example.com", dsn(tok4, "failed", "5.1.1", tok4), 550},
				{"oversized", rp3, dsn(tok4, "failed", "5.1.1", tok4) + strings.Repeat("0123456789abcdef\r\n", 600), 552},
			}
			for _, s := range steps {
				if err := send(t, f.srv.Addr(), lmtp, s.rcpt, s.msg); code(err) != s.code {
					t.Errorf("%s: reply %d (%v), want %d", s.name, code(err), err, s.code)
				}
			}
			want := map[int64]struct {
				st    notice.Status
				kinds string
			}{1: {notice.StatusBounced, "bounced"}, 2: {notice.StatusSent, "delayed"}, 3: {notice.StatusSent, "auto-reply"}, 4: {notice.StatusSent, ""}, 5: {notice.StatusComplained, "complained"}}
			for rid, w := range want {
				r, err := f.st.Recipient(ctx, f.cid, rid)
				if err != nil {
					t.Fatal(err)
				}
				var kinds []string
				for _, e := range r.Returned {
					kinds = append(kinds, e.Kind)
				}
				if r.Status != w.st || strings.Join(kinds, ",") != w.kinds {
					t.Errorf("recipient %d: %s %v, want %s %s", rid, r.Status, kinds, w.st, w.kinds)
				}
			}
			if sup, err := f.st.Suppression(ctx, "u1@dest.test"); err != nil || sup == nil || !strings.HasPrefix(sup.Reason, "bounced: 5.1.1") || strings.Contains(sup.Reason, "bad@dest.test") {
				t.Errorf("u1 suppression: %+v %v", sup, err)
			}
			if sup, err := f.st.Suppression(ctx, "u5@dest.test"); err != nil || sup.Reason != "complained: abuse" {
				t.Errorf("u5 suppression after a complaint: %+v %v", sup, err)
			}
			if sup, _ := f.st.Suppression(ctx, "u4@dest.test"); sup != nil {
				t.Errorf("u4 suppressed by a forged bounce: %+v", sup)
			}
			audit, _, err := f.st.AuditLog(ctx, store.AuditQuery{CampaignID: f.cid})
			var acts []string
			for _, e := range audit {
				acts = append(acts, fmt.Sprintf("%s %s %d", e.Actor, e.Action, e.Recipient))
			}
			if err != nil || strings.Join(acts, ",") != "inbound recipient.complained 5,inbound recipient.bounced 1" {
				t.Errorf("audit log %v %v, want the bounce of 1 and the complaint of 5, once each", acts, err)
			}
			if um, err := f.st.Unmatched(ctx); err != nil || len(um) != 2 || !strings.Contains(um[0], `"why":"bad_token"`) {
				t.Errorf("kept unmatched: %d %v, want the forged and the altered one", len(um), err)
			}
			cp, _ := f.st.Campaign(ctx, f.cid)
			if cp.Counts.Bounced != 1 || cp.Counts.Complained != 1 || cp.Counts.Sent != 3 {
				t.Errorf("counts %+v", cp.Counts)
			}
		})
	}
}

// altered changes a token's last character, to another one whatever it was
// (a fixed replacement is the same character one time in 36).
func altered(tok string) string {
	last := "x"
	if strings.HasSuffix(tok, "x") {
		last = "y"
	}
	return tok[:len(tok)-1] + last
}
