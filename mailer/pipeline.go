package mailer

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/wneessen/go-mail/smtp"

	"github.com/oshirase/oshirase/bounce"
)

// bufPool recycles message buffers: a notice is 10–20 KB and thousands
// leave per second.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// errNoPipelining says the server does not offer PIPELINING; the caller
// falls back to go-mail's own transaction.
var errNoPipelining = errors.New("server does not offer PIPELINING")

// sendPipelined runs one SMTP transaction with PIPELINING (RFC 2920) on a
// connection go-mail dialled, greeted and authenticated: MAIL, RCPT and DATA
// go out in one write, the dot-stuffed message and its end in a second. That
// is two round trips where go-mail's Send takes five (MAIL, RCPT, DATA, the
// message, RSET), and the message is written in one piece instead of byte by
// byte through a dot-writer. The MIME message itself is still go-mail's.
//
// delivered is true once the server accepted the message: an error after
// that (a broken connection) must not make the caller send it again.
//
// m.Guard is asked before anything is written and again before the end of
// the message; m.Slow hears of a reply to the end slower than Timeout.
func (p *Pool) sendPipelined(c *conn, env envelope, raw []byte, m *Message) (delivered bool, broken bool, err error) {
	sc := c.c
	if ok, _ := sc.Extension("PIPELINING"); !ok || p.o.noPipelining {
		return false, false, errNoPipelining
	}
	// build checked both addresses, but a command line is the one place a
	// CR or LF would turn into a second command: refuse, never strip.
	if strings.ContainsAny(env.to, "\r\n<>") || strings.ContainsAny(env.from, "\r\n<>") {
		return false, false, fmt.Errorf("envelope address with a line break or bracket")
	}

	if err := guard(m); err != nil {
		return false, false, err
	}
	if err := sc.UpdateDeadline(p.o.Timeout); err != nil {
		return false, true, err
	}
	t := sc.Text
	mailParams, rcptParams := dsnParams(sc, env)
	if _, err := fmt.Fprintf(t.W, "MAIL FROM:<%s>%s\r\nRCPT TO:<%s>%s\r\nDATA\r\n", env.from, mailParams, env.to, rcptParams); err != nil {
		return false, true, errEarly{err}
	}
	if err := t.W.Flush(); err != nil {
		return false, true, errEarly{err}
	}
	_, _, mailErr := t.ReadResponse(250)
	if mailErr != nil && Classify(mailErr).Code == 0 {
		// No reply at all: the server had closed the connection. The
		// message body was never sent.
		return false, true, errEarly{mailErr}
	}
	_, _, rcptErr := t.ReadResponse(25)
	_, _, dataErr := t.ReadResponse(354)
	if err := firstErr(mailErr, rcptErr, dataErr); err != nil {
		if dataErr == nil {
			// The server wants the message although an earlier command
			// failed: the connection's state is unknown. Drop it.
			return false, true, stage(err, mailErr, rcptErr)
		}
		if !isReply(dataErr) {
			return false, true, err
		}
		// Back to a clean state for the next message on this connection.
		if rerr := sc.Reset(); rerr != nil {
			return false, true, stage(err, mailErr, rcptErr)
		}
		return false, false, stage(err, mailErr, rcptErr)
	}
	// The message, then the guard, then its last line "." — what the
	// buffered writer still holds goes out with that line, so the common
	// case is still about one write. A guard that says no drops the
	// connection before the server has the end: it discards the message.
	body := dotStuff(raw)
	end := len(body) - len(".\r\n")
	if _, err := t.W.Write(body[:end]); err != nil {
		return false, true, err
	}
	if err := guard(m); err != nil {
		return false, true, err
	}
	if _, err := t.W.Write(body[end:]); err != nil {
		return false, true, err
	}
	// The reply to the end of DATA has its own, longer timeout.
	if err := sc.UpdateDeadline(p.o.DataTimeout); err != nil {
		return false, true, err
	}
	if err := t.W.Flush(); err != nil {
		return false, true, err
	}
	stop := p.slowAfter(m)
	_, msg, err := t.ReadResponse(250)
	stop()
	if err != nil {
		return false, !isReply(err), atStage(StageData, err)
	}
	c.accepted = parseAccepted(msg)
	return true, false, nil
}

// dsnParams are the RFC 3461 parameters of MAIL and RCPT for a notice with
// a bounce token, when the server offers DSN: only the headers come back
// (RET=HDRS: a bounce need not carry the notice again), ENVID is the token
// (Postfix copies it into its DSNs as Original-Envelope-Id), and failures
// and delays are reported with the address as we sent it (ORCPT). Without
// a token or without DSN: none, as before. go-mail has no ENVID or ORCPT,
// so both paths write them here.
func dsnParams(sc *smtp.Client, env envelope) (mailParams, rcptParams string) {
	if env.token == "" {
		return "", ""
	}
	if ok, _ := sc.Extension("DSN"); !ok {
		return "", ""
	}
	return " RET=HDRS ENVID=" + env.token, " NOTIFY=FAILURE,DELAY ORCPT=rfc822;" + bounce.XText(env.to)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// stage names the command whose reply failed, for the error text and for
// Classify's Error.Stage.
func stage(err, mailErr, rcptErr error) error {
	switch {
	case mailErr != nil:
		return atStage(StageMail, err)
	case rcptErr != nil:
		return atStage(StageRcpt, err)
	}
	return atStage(StageData, err)
}

// isReply reports whether err is a server reply (the connection is fine)
// rather than an I/O error.
func isReply(err error) bool {
	e := Classify(err)
	return e != nil && e.Code > 0 && e.Code != 421
}

// dotStuff returns b as an RFC 5321 DATA body: lines starting with "." get
// one more, and the body ends with CRLF "." CRLF. A message without such a
// line (nearly all: bodies are base64 or quoted-printable) is not copied:
// the end is appended in b's spare capacity, so body and end leave in one
// write. b itself (b[:len(b)]) is never changed.
func dotStuff(b []byte) []byte {
	end := "\r\n.\r\n"
	if bytes.HasSuffix(b, []byte("\r\n")) {
		end = ".\r\n"
	}
	if (len(b) == 0 || b[0] != '.') && !bytes.Contains(b, []byte("\n.")) {
		return append(b, end...)
	}
	out := make([]byte, 0, len(b)+len(b)/64+len(end)+1)
	if len(b) > 0 && b[0] == '.' {
		out = append(out, '.')
	}
	for {
		i := bytes.Index(b, []byte("\n."))
		if i < 0 {
			break
		}
		out = append(out, b[:i+2]...)
		out = append(out, '.')
		b = b[i+2:]
	}
	out = append(out, b...)
	return append(out, end...)
}

// Accepted is what an SMTP server said when it took a message, e.g.
// Enhanced "2.0.0", Text "Ok: queued as 4XyZ1": a relay's queue id is the
// proof that the notice was handed over, and where to look for it next.
type Accepted struct {
	Enhanced string
	Text     string
}

// parseAccepted splits a 250 reply's text into its enhanced status code
// (RFC 3463), when it starts with one, and the rest.
func parseAccepted(msg string) Accepted {
	msg = strings.TrimSpace(strings.ReplaceAll(msg, "\n", " "))
	if code, rest, ok := strings.Cut(msg, " "); ok && isEnhanced(code) {
		return Accepted{Enhanced: code, Text: rest}
	}
	if isEnhanced(msg) {
		return Accepted{Enhanced: msg}
	}
	return Accepted{Text: msg}
}

// isEnhanced reports whether s is an RFC 3463 status code,
// class.subject.detail ("2.0.0", "5.1.1"). By hand, not a regexp: it runs
// for every message sent.
func isEnhanced(s string) bool {
	if len(s) < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.' {
		return false
	}
	parts := strings.Split(s[2:], ".")
	if len(parts) != 2 {
		return false
	}
	for _, p := range parts {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}
