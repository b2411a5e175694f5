package mailer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestRelayFault: each failure says at which step it happened, and whether
// it shows the relay (not the recipient) is the problem — certain when the
// relay refused before any recipient was named or asked for
// authentication, only suspect for a policy refusal at RCPT or DATA, never
// for a refusal about the recipient (no such user, however phrased; a full
// mailbox) or for what a retry may cure (4xx, a server down).
func TestRelayFault(t *testing.T) {
	type reply = smtp.SMTPError
	enh := func(a, b, c int) smtp.EnhancedCode { return smtp.EnhancedCode{a, b, c} }
	for _, tt := range []struct {
		name    string
		stage   smtpsink.Stage
		reply   reply
		want    string // Error.Stage
		kind    string
		certain bool
	}{
		{"554 5.7.1 relay denied at RCPT", smtpsink.StageRcpt, reply{Code: 554, EnhancedCode: enh(5, 7, 1), Message: "<bad@example.com>: Relay access denied"}, StageRcpt, RelayPolicy, false},
		{"554 relay denied, no enhanced code", smtpsink.StageRcpt, reply{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "Relay access denied"}, StageRcpt, RelayPolicy, false},
		{"550 5.1.1 no such user", smtpsink.StageRcpt, reply{Code: 550, EnhancedCode: enh(5, 1, 1), Message: "<bad@example.com>: User unknown"}, StageRcpt, "", false},
		{"550 no such user, no enhanced code", smtpsink.StageRcpt, reply{Code: 550, EnhancedCode: smtp.NoEnhancedCode, Message: "User unknown"}, StageRcpt, "", false},
		{"552 5.2.2 mailbox full", smtpsink.StageRcpt, reply{Code: 552, EnhancedCode: enh(5, 2, 2), Message: "Mailbox full"}, StageRcpt, "", false},
		{"451 4.7.1 greylisted", smtpsink.StageRcpt, reply{Code: 451, EnhancedCode: enh(4, 7, 1), Message: "Greylisted"}, StageRcpt, "", false},
		{"530 5.7.0 at RCPT", smtpsink.StageRcpt, reply{Code: 530, EnhancedCode: enh(5, 7, 0), Message: "Authentication required"}, StageRcpt, RelayAuth, true},
		{"530 5.7.0 at MAIL", smtpsink.StageMail, reply{Code: 530, EnhancedCode: enh(5, 7, 0), Message: "Authentication required"}, StageMail, RelayAuth, true},
		{"550 5.7.1 at MAIL", smtpsink.StageMail, reply{Code: 550, EnhancedCode: enh(5, 7, 1), Message: "Sender address rejected"}, StageMail, RelaySender, true},
		{"451 at MAIL", smtpsink.StageMail, reply{Code: 451, EnhancedCode: enh(4, 3, 0), Message: "Local error"}, StageMail, "", false},
		{"554 5.7.1 at DATA", smtpsink.StageData, reply{Code: 554, EnhancedCode: enh(5, 7, 1), Message: "Rejected by DMARC policy"}, StageData, RelayPolicy, false},
		{"552 5.3.4 at DATA", smtpsink.StageData, reply{Code: 552, EnhancedCode: enh(5, 3, 4), Message: "Message too big"}, StageData, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sink := startSink(t, smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, n int) *smtp.SMTPError {
				if st == tt.stage {
					r := tt.reply
					return &r
				}
				return nil
			}})
			p := newPool(t, Options{URL: sink.URL(), PoolSize: 1})
			e := relayErr(t, p.Send(context.Background(), testMessage("bad@example.com")))
			if e.Stage != tt.want {
				t.Errorf("stage %q, want %q", e.Stage, tt.want)
			}
			if kind, certain := e.Relay(); kind != tt.kind || certain != tt.certain {
				t.Errorf("Relay() = %q, %v; want %q, %v (error %v)", kind, certain, tt.kind, tt.certain, e)
			}
		})
	}

	setup := []struct {
		name    string
		url     func(t *testing.T) string
		want    string
		kind    string
		certain bool
	}{
		{"server down", func(t *testing.T) string {
			return fmt.Sprintf("smtp://127.0.0.1:%d?tls=none", testenv.FreePort(t))
		}, StageConnect, "", false},
		{"554 at the greeting", greeting554, StageConnect, RelayConnect, true},
		{"STARTTLS required, not offered", func(t *testing.T) string {
			return "smtp://" + startSink(t, smtpsink.Options{}).Addr() + "?tls=required"
		}, StageConnect, RelayConnect, true},
		{"certificate not trusted", func(t *testing.T) string {
			addr, _ := tlsServer(t, false)
			return "smtp://" + addr + "?tls=required"
		}, StageConnect, RelayConnect, true},
		{"535 at AUTH", func(t *testing.T) string {
			tc, err := smtpsink.SelfSigned()
			if err != nil {
				t.Fatal(err)
			}
			sink := startSink(t, smtpsink.Options{TLS: tc, Auth: func(user, pass string) *smtp.SMTPError {
				return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
			}})
			return "smtp://user:wrong@" + sink.Addr() + "?tls=required&insecure_skip_verify=1"
		}, StageAuth, RelayAuth, true},
	}
	for _, tt := range setup {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, Options{URL: tt.url(t), PoolSize: 1})
			e := relayErr(t, p.Send(context.Background(), testMessage("a@example.com")))
			if e.Stage != tt.want {
				t.Errorf("stage %q, want %q (error %v)", e.Stage, tt.want, e)
			}
			if kind, certain := e.Relay(); kind != tt.kind || certain != tt.certain {
				t.Errorf("Relay() = %q, %v; want %q, %v (error %v)", kind, certain, tt.kind, tt.certain, e)
			}
		})
	}
}

func relayErr(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	return e
}

// greeting554 is a server that refuses every connection with its greeting,
// as a relay does to clients it does not serve (RFC 5321 3.1), and returns
// its SMTP_URL.
func greeting554(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "554 5.7.1 No SMTP service here for you\r\n")
			c.Close()
		}
	}()
	return "smtp://" + ln.Addr().String() + "?tls=none"
}
