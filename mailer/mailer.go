// Package mailer turns a rendered notice into a MIME message and sends it
// over persistent, pooled SMTP connections (go-mail has no pool of its own).
// It classifies every failure as temporary (retry later) or permanent.
package mailer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail"
)

// Message is one notice to one recipient. The SMTP envelope is From's
// address and To, never anything taken from a header: a display name or a
// subject cannot add a recipient.
type Message struct {
	From, ReplyTo       string // RFC 5322 address, may carry a display name
	To, ToName          string
	Subject, Text, HTML string
	MessageID           string // left@right, without angle brackets; empty: random in From's domain
	Charset             string // "utf-8" (default) or "iso-2022-jp"

	// ReturnPath, when set, is the envelope sender (MAIL FROM) instead of
	// From's address: the per-recipient b-<token>@BOUNCE_DOMAIN that
	// brings this notice's bounces back to us. Token is that token; it
	// also goes in the X-Oshirase-Token header (for bounces that lose the
	// envelope) and, where the relay offers DSN (RFC 3461), in ENVID, with
	// RET=HDRS and NOTIFY=FAILURE,DELAY ORCPT=rfc822;<To>.
	ReturnPath, Token string

	// Guard, when set, is asked right before MAIL FROM and right before the
	// end of DATA whether the message may still go out (the worker checks
	// that its claim on the recipient is still its own: a process frozen
	// past its claim must not send what another has sent since). An error
	// aborts: before MAIL nothing was sent and the connection stays
	// pooled; before the end of DATA the connection is dropped, so the
	// server discards the unfinished message. The error wraps ErrAborted.
	Guard func() error
	// Slow, when set, is called once, from another goroutine, when the
	// server's reply to the end of DATA has not come within Timeout; the
	// send goes on waiting for it up to DataTimeout. Deliver returns only
	// after Slow has.
	Slow func()
}

// ErrAborted marks a transaction that Message.Guard stopped: the message
// was not sent.
var ErrAborted = errors.New("message not sent: the sender's guard stopped it")

// DKIMOptions is one signing key: d=Domain, s=Selector, the private key
// in KeyFile.
type DKIMOptions struct{ Domain, Selector, KeyFile string }

// ParseDKIMKeys reads DKIM_KEYS: "domain:selector:file" entries separated
// by commas, at most one per domain. The file may itself hold a colon
// (C:\keys\a.pem); the domain and the selector cannot.
func ParseDKIMKeys(s string) ([]DKIMOptions, error) {
	var out []DKIMOptions
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		parts := strings.SplitN(e, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("DKIM_KEYS: %q is not domain:selector:file", e)
		}
		k := DKIMOptions{Domain: strings.ToLower(strings.TrimSuffix(parts[0], ".")), Selector: parts[1], KeyFile: parts[2]}
		for _, o := range out {
			if o.Domain == k.Domain {
				return nil, fmt.Errorf("DKIM_KEYS: two keys for %s: give one per domain", k.Domain)
			}
		}
		out = append(out, k)
	}
	return out, nil
}

// Aligned reports whether a message From fromDomain and signed d=dkimDomain
// passes DMARC's relaxed alignment as far as we judge it without the
// public suffix list: the same domain, or From at a subdomain of d=
// (notice.example.jp signed by example.jp).
func Aligned(fromDomain, dkimDomain string) bool {
	f := strings.ToLower(strings.TrimSuffix(fromDomain, "."))
	d := strings.ToLower(strings.TrimSuffix(dkimDomain, "."))
	return d != "" && (f == d || strings.HasSuffix(f, "."+d))
}

// signingKey is the key a message From fromDomain is signed with: the
// DKIM_KEYS entry aligned with it (the longest domain, should several be),
// else the DKIM_DOMAIN key aligned with it, else — for a campaign made
// before the API refused unaligned senders — the DKIM_DOMAIN key as before.
// nil: signing is off.
func (o *Options) signingKey(fromDomain string) *DKIMOptions {
	if o == nil {
		return nil
	}
	var best *DKIMOptions
	for i := range o.DKIMKeys {
		k := &o.DKIMKeys[i]
		if Aligned(fromDomain, k.Domain) && (best == nil || len(k.Domain) > len(best.Domain)) {
			best = k
		}
	}
	if best != nil {
		return best
	}
	return o.DKIM
}

// DKIMDomains lists the domains o signs for.
func (o *Options) DKIMDomains() []string {
	var out []string
	if o.DKIM != nil {
		out = append(out, o.DKIM.Domain)
	}
	for _, k := range o.DKIMKeys {
		if !slices.Contains(out, k.Domain) {
			out = append(out, k.Domain)
		}
	}
	return out
}

// CheckDKIM loads every key of o, so that a missing or bad key file stops
// the service at start rather than failing every message.
func CheckDKIM(o *Options) error {
	if o.DKIM != nil {
		if _, err := loadDKIM(o.DKIM); err != nil {
			return err
		}
	}
	for i := range o.DKIMKeys {
		if _, err := loadDKIM(&o.DKIMKeys[i]); err != nil {
			return fmt.Errorf("DKIM_KEYS %s: %w", o.DKIMKeys[i].Domain, err)
		}
	}
	return nil
}

// Options configures building and sending.
type Options struct {
	URL      string
	PoolSize int
	Timeout  time.Duration // dial and per command
	// DataTimeout is how long the reply to the end of DATA may take
	// (default 10 minutes, as RFC 5321 §4.5.3.2.6 asks): the server may
	// be scanning or relaying the message, and giving up would have it
	// sent twice.
	DataTimeout     time.Duration
	IdleTimeout     time.Duration
	MaxPerConn      int
	DKIM            *DKIMOptions  // DKIM_DOMAIN, DKIM_SELECTOR, DKIM_KEY_FILE
	DKIMKeys        []DKIMOptions // DKIM_KEYS: one key per From domain
	ListUnsubscribe string
	// SendGridSMTPAPI (SENDGRID_SMTPAPI): the relay is SendGrid's; a
	// notice with a bounce token carries it in X-SMTPAPI's unique_args,
	// the only way over SMTP to have SendGrid's events name the notice
	// (SendGrid rewrites the envelope sender and removes the header).
	SendGridSMTPAPI bool
	// Log hears "SMTP relay down" once when connections to the relay start
	// failing and "SMTP relay back" once when one succeeds again (default:
	// slog.Default()).
	Log *slog.Logger

	noPipelining bool // tests: take the command-by-command path
}

// Endpoint is a parsed SMTP_URL.
type Endpoint struct {
	Host, Username, Password, Helo string
	Port                           int
	TLS                            string // "opportunistic", "required", "none", "implicit"
	InsecureSkipVerify             bool
}

// ParseURL reads smtp://[user:pass@]host:port[?tls=none|required|opportunistic]
// and smtps://host:port (implicit TLS).
func ParseURL(raw string) (*Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: %w", err)
	}
	e := &Endpoint{Host: u.Hostname(), TLS: "opportunistic"}
	switch u.Scheme {
	case "smtp":
		e.Port = 25
	case "smtps":
		e.Port, e.TLS = 465, "implicit"
	default:
		return nil, fmt.Errorf("SMTP_URL: scheme %q is not smtp or smtps", u.Scheme)
	}
	if e.Host == "" {
		return nil, errors.New("SMTP_URL: no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("SMTP_URL: port %q is not 1-65535", p)
		}
		e.Port = n
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
	}
	q := u.Query()
	switch t := q.Get("tls"); t {
	case "":
	case "none", "required", "opportunistic":
		if e.TLS == "implicit" {
			return nil, errors.New("SMTP_URL: smtps:// is always TLS; drop ?tls=")
		}
		e.TLS = t
	default:
		return nil, fmt.Errorf("SMTP_URL: tls=%q: want none, required or opportunistic", t)
	}
	e.InsecureSkipVerify = q.Get("insecure_skip_verify") == "1" || q.Get("insecure_skip_verify") == "true"
	e.Helo = q.Get("helo")
	return e, nil
}

// Error is a classified send failure.
type Error struct {
	Code      int    // SMTP reply code, 0 when there was none
	Enhanced  string // e.g. "5.1.1"
	Text      string // the server's reply text, or the error
	Temporary bool
	Stage     string // the step that failed: one of the Stage constants ("" when unknown)
	Err       error
}

// The steps of sending a message, as Error.Stage names them. Whether the
// relay or the recipient is the problem depends on the step: a refusal
// before RCPT cannot be about the recipient.
const (
	StageBuild   = "build"   // building the MIME message (our side)
	StageConnect = "connect" // dial, greeting, EHLO, STARTTLS
	StageAuth    = "auth"    // SMTP AUTH
	StageMail    = "mail"    // MAIL FROM
	StageRcpt    = "rcpt"    // RCPT TO
	StageData    = "data"    // DATA, the message and its final reply
)

// stageError names the step an error happened at, for Classify.
type stageError struct {
	stage string
	err   error
}

func (e stageError) Error() string {
	return map[string]string{StageMail: "MAIL FROM", StageRcpt: "RCPT TO", StageData: "DATA"}[e.stage] + ": " + e.err.Error()
}
func (e stageError) Unwrap() error { return e.err }

// atStage wraps err (nil stays nil) with the step it happened at.
func atStage(stage string, err error) error {
	if err == nil {
		return nil
	}
	return stageError{stage, err}
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Code > 0 {
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(' ')
	}
	if e.Enhanced != "" {
		b.WriteString(e.Enhanced)
		b.WriteByte(' ')
	}
	b.WriteString(e.Text)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Classify turns any send error into an *Error. Anything without an SMTP
// code — a refused connection, a timeout, EOF — is temporary: the message may
// well be deliverable later.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	out := &Error{Temporary: true, Err: err, Text: err.Error()}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		out.Code, out.Text = tp.Code, tp.Msg
	}
	var se *mail.SendError
	if errors.As(err, &se) {
		if out.Code == 0 {
			out.Code = se.ErrorCode()
		}
		out.Enhanced = se.EnhancedStatusCode()
		out.Stage = se.Reason.String()
	}
	var st stageError
	if errors.As(err, &st) {
		out.Stage = st.stage
	}
	if out.Code > 0 {
		out.Text = strings.TrimSpace(out.Text)
		if out.Enhanced == "" {
			out.Enhanced = leadingEnhanced(out.Text)
		}
		if out.Enhanced != "" {
			out.Text = strings.TrimSpace(strings.TrimPrefix(out.Text, out.Enhanced))
		}
		out.Temporary = out.Code < 500
	}
	return out
}

func leadingEnhanced(s string) string {
	f, _, _ := strings.Cut(s, " ")
	p := strings.Split(f, ".")
	if len(p) != 3 || (p[0] != "2" && p[0] != "4" && p[0] != "5") {
		return ""
	}
	for _, x := range p[1:] {
		if _, err := strconv.Atoi(x); err != nil {
			return ""
		}
	}
	return f
}
