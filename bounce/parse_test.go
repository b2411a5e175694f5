package bounce

import (
	"strings"
	"testing"
)

// dsn is a Postfix-shaped DSN (bounce(8)): the report, the returned headers.
func dsn(action, status, extraTop, ctype string) string {
	if ctype == "" {
		ctype = "message/delivery-status"
	}
	return strings.ReplaceAll(`From: MAILER-DAEMON@relay.example.jp (Mail Delivery System)
To: b-tok@bounces.example.jp
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
`+extraTop+`MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--B1
Content-Description: Delivery report
Content-Type: `+ctype+`

Reporting-MTA: dns; relay.example.jp
X-Postfix-Queue-ID: 4XyZ1
Original-Envelope-Id: abc-1-0-mac
Arrival-Date: Tue,  1 Dec 2026 20:00:00 +0000 (UTC)

Final-Recipient: rfc822; bad@dest.test
Original-Recipient: rfc822;bad+2Bx@dest.test
Action: `+action+`
Status: `+status+`
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: smtp; 550 5.1.1 User
    unknown

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Example <notice@example.jp>
To: bad@dest.test
Subject: notice
X-Oshirase-Token: abc-1-0-mac

--B1--
`, "\n", "\r\n")
}

const arf = `From: fbl@mail.example.com
To: b-tok@bounces.example.jp
Subject: FW: notice
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A"

--A
Content-Type: text/plain

This is an email abuse report.

--A
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeFBL/1.0
Version: 1
Original-Rcpt-To: <redacted>

--A
Content-Type: message/rfc822

From: Example <notice@example.jp>
X-Oshirase-Token: abc-2-0-mac
Subject: notice

body
--A--
`

const vacationJA = "From: taro@example.com\r\nTo: b-tok@bounces.example.jp\r\nAuto-Submitted: auto-replied\r\n" +
	"Subject: =?UTF-8?B?5LiN5Zyo44Gu44GK55+l44KJ44Gb?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
	"12月5日まで不在です。\r\n"

const vacationEN = "From: jane@example.com\r\nTo: b-tok@bounces.example.jp\r\nX-Autoreply: yes\r\n" +
	"Subject: Out of office\r\nContent-Type: text/plain\r\n\r\nI am away.\r\n"

const plain = "From: someone@example.com\r\nTo: b-tok@bounces.example.jp\r\nSubject: hello\r\n\r\nwhat is this?\r\n"

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		msg       string
		kind      Kind
		hard      bool
		status    string
		headerTok string
	}{
		{"postfix 5.1.1", dsn("failed", "5.1.1", "", ""), KindBounce, true, "5.1.1", "abc-1-0-mac"},
		{"postfix queue expired: failed with 4.x.x is final", dsn("failed", "4.4.1", "", ""), KindBounce, false, "4.4.1", "abc-1-0-mac"},
		{"delayed", dsn("delayed", "4.2.0", "", ""), KindDelayed, false, "4.2.0", "abc-1-0-mac"},
		{"relayed", dsn("relayed", "2.0.0", "", ""), KindDelivered, false, "2.0.0", "abc-1-0-mac"},
		{"no action: status decides", dsn("", "5.2.2 (mailbox full)", "", ""), KindBounce, false, "5.2.2", "abc-1-0-mac"},
		{"global delivery status", dsn("failed", "5.1.1", "", "message/global-delivery-status"), KindBounce, true, "5.1.1", "abc-1-0-mac"},
		{"arf complaint", arf, KindComplaint, false, "", "abc-2-0-mac"},
		{"vacation ja", vacationJA, KindAutoReply, false, "", ""},
		{"vacation en", vacationEN, KindAutoReply, false, "", ""},
		{"plain mail", plain, KindUnknown, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tc.kind || r.Hard() != tc.hard || r.Status != tc.status || r.HeaderToken != tc.headerTok {
				t.Fatalf("got kind %q hard %v status %q token %q, want %q %v %q %q", r.Kind, r.Hard(), r.Status, r.HeaderToken, tc.kind, tc.hard, tc.status, tc.headerTok)
			}
			if tc.status != "" && (r.EnvID != "abc-1-0-mac" || r.ReportingMTA != "relay.example.jp" ||
				r.FinalRecipient != "bad@dest.test" || r.OriginalRecipient != "bad+x@dest.test" || r.Diagnostic != "smtp; 550 5.1.1 User unknown") {
				t.Errorf("fields: %+v", r)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	for _, m := range []string{
		"Content-Type: multipart/report; report-type=delivery-status; boundary=X\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n--X--\r\n",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=X\r\n\r\n--X\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n--X--\r\n",
		"\x00\x01 not a message",
	} {
		r, err := Parse(strings.NewReader(m))
		if err == nil && r.Kind != KindUnknown {
			t.Errorf("Parse(%q) = %+v, want an error or unrecognised", m, r)
		}
	}
}
