// Package inbound is the bounce receiver: an LMTP or SMTP listener
// (emersion/go-smtp) for BOUNCE_DOMAIN that reads what comes back to the
// notices' return paths — DSNs, complaints, auto-replies — ties each to its
// recipient and delivery by the signed token (package bounce) and records it
// (store.RecordReturned). It takes mail for BOUNCE_DOMAIN only and never
// relays anything.
package inbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// Config configures a Server.
type Config struct {
	URL      string // INBOUND_URL: lmtp://host:port or smtp://host:port
	MaxBytes int    // INBOUND_MAX_BYTES (default 1 MiB)
	Codec    *bounce.Codec
	Store    *store.Store
	Log      *slog.Logger
	Now      func() time.Time
	// Events, when set, gets recipient.bounced, recipient.complained and
	// recipient.delayed for the status webhooks (nil-safe).
	Events *webhooks.Emitter
}

// returnedEvents are the status webhook events of what comes back: a
// bounce or complaint that changed the recipient's status, and a delay.
var returnedEvents = map[bounce.Kind]string{
	bounce.KindBounce:    webhooks.RecipientBounced,
	bounce.KindComplaint: webhooks.RecipientComplained,
	bounce.KindDelayed:   webhooks.RecipientDelayed,
}

// Server is a running receiver.
type Server struct {
	cfg Config
	srv *smtp.Server
	ln  net.Listener
}

// ParseURL reads INBOUND_URL: whether it speaks LMTP, and host:port.
func ParseURL(raw string) (lmtp bool, addr string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return false, "", fmt.Errorf("INBOUND_URL: %w", err)
	}
	switch u.Scheme {
	case "lmtp":
		lmtp = true
	case "smtp":
	default:
		return false, "", fmt.Errorf("INBOUND_URL: scheme %q is not lmtp or smtp", u.Scheme)
	}
	if u.Port() == "" {
		return false, "", fmt.Errorf("INBOUND_URL: %q has no port", raw)
	}
	return lmtp, u.Host, nil
}

// Listen binds INBOUND_URL's address; Serve then takes mail.
func Listen(cfg Config) (*Server, error) {
	if cfg.Codec == nil {
		return nil, errors.New("the bounce receiver needs BOUNCE_DOMAIN and BOUNCE_SECRET")
	}
	lmtp, addr, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("INBOUND_URL: listen on %s: %w", addr, err)
	}
	s := &Server{cfg: cfg, ln: ln}
	srv := smtp.NewServer(backend{s})
	srv.LMTP = lmtp
	srv.Domain = cfg.Codec.Domain()
	srv.MaxMessageBytes = int64(cfg.MaxBytes)
	srv.MaxRecipients = 50
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up are normal
	s.srv = srv
	return s, nil
}

// Addr is the address the receiver listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve takes mail until Close.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops listening and closes open sessions.
func (s *Server) Close() error { return s.srv.Close() }

type backend struct{ s *Server }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: b.s}, nil }

type session struct {
	s  *Server
	to []string
}

var errRelay = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relay access denied: this server takes mail for its bounce domain only"}

func (x *session) Reset()                               { x.to = nil }
func (x *session) Logout() error                        { return nil }
func (x *session) Mail(string, *smtp.MailOptions) error { return nil } // DSNs come from <>
func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !x.s.cfg.Codec.InDomain(to) {
		return errRelay
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) read(r io.Reader) ([]byte, error) {
	// go-smtp stops at MaxMessageBytes with a 552 of its own: the relay
	// returns the message to its (empty) sender, so it goes nowhere; the
	// log says why it never came in.
	raw, err := io.ReadAll(r)
	if errors.Is(err, smtp.ErrDataTooLarge) {
		metrics.Returned.WithLabelValues("", "too_large").Inc()
		x.s.cfg.Log.Warn("returned message larger than INBOUND_MAX_BYTES refused (552): nothing recorded",
			"max_bytes", x.s.cfg.MaxBytes, "recipients", len(x.to))
	}
	return raw, err
}

// Data handles SMTP: one answer for every recipient, the worst.
func (x *session) Data(r io.Reader) error {
	raw, err := x.read(r)
	if err != nil {
		return err
	}
	var last error
	for _, to := range x.to {
		if err := x.s.Handle(context.Background(), to, raw); err != nil {
			last = err
		}
	}
	return last
}

// LMTPData answers per recipient (RFC 2033).
func (x *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	raw, err := x.read(r)
	if err != nil {
		return err
	}
	for _, to := range x.to {
		status.SetStatus(to, x.s.Handle(context.Background(), to, raw))
	}
	return nil
}

var (
	errTemp      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot record it now, try again later"}
	errEarlySMTP = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "the notice's sending is not recorded yet, try again later"}
)

// Handle reads one message that came back to rcpt and records it. It
// returns an error only when the sender should try again later (our
// storage failed, or the bounce came before the worker recorded the
// relay's 250): a message we cannot use is taken (250) and logged, so it
// does not sit in the relay's queue.
func (s *Server) Handle(ctx context.Context, rcpt string, raw []byte) error {
	rep, perr := bounce.Parse(bytes.NewReader(raw))
	kind := string(rep.Kind)
	ref, how, err := s.token(rcpt, rep)
	if err != nil {
		outcome := "no_token"
		if errors.Is(err, bounce.ErrToken) && how != "" {
			outcome = "bad_token"
		}
		if kerr := s.rec().unmatched(ctx, kind, outcome, how, raw, err, "parse_err", errString(perr)); kerr != nil {
			return errTemp
		}
		return nil
	}
	if err := s.rec().record(ctx, outcome{ref: ref, how: how, rep: rep, hard: rep.Hard(), raw: raw, via: "mail"}); err != nil {
		if errors.Is(err, errEarly) {
			return errEarlySMTP
		}
		return errTemp
	}
	return nil
}

// token finds the notice a returned message is about: the RCPT address
// (our return path, the surest: Postfix xtext-encodes ORCPT, but the
// address it delivers to is ours), else the DSN's ENVID, else the token
// header of the returned notice. how says where it was found.
func (s *Server) token(rcpt string, rep *bounce.Report) (bounce.Ref, string, error) {
	c := s.cfg.Codec
	ref, _, err := c.FromAddress(rcpt)
	if err == nil {
		return ref, "rcpt", nil
	}
	firstErr, how := err, "rcpt"
	for _, t := range []struct{ how, tok string }{{"envid", rep.EnvID}, {"header", rep.HeaderToken}} {
		if t.tok == "" {
			continue
		}
		if ref, err := c.Decode(t.tok); err == nil {
			return ref, t.how, nil
		}
	}
	local := strings.ToLower(rcpt)
	if !strings.HasPrefix(local, "b-") && rep.EnvID == "" && rep.HeaderToken == "" {
		how = ""
	}
	return bounce.Ref{}, how, firstErr
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}

// errString is err for a log line, addresses masked: a parse error may
// quote a header.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return notice.MaskAddresses(err.Error())
}
