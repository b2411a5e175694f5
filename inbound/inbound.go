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
	"encoding/json"
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
	errTemp  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot record it now, try again later"}
	errEarly = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "the notice's sending is not recorded yet, try again later"}
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
		metrics.Returned.WithLabelValues(kind, outcome).Inc()
		s.cfg.Log.Warn("returned message tied to no notice: kept aside, no recipient changed", "kind", kind, "outcome", outcome,
			"token_from", how, "bytes", len(raw), "parse_err", errString(perr), "err", notice.MaskAddresses(err.Error()))
		if kerr := s.cfg.Store.KeepUnmatched(ctx, s.cfg.Now().UTC(), kind, outcome, raw); kerr != nil {
			s.cfg.Log.Error("returned message tied to no notice: keep", "err", kerr)
			return errTemp
		}
		return nil
	}
	ev := notice.Returned{
		At: s.cfg.Now().UTC(), Kind: kind, Delivery: ref.Delivery, Action: rep.Action, Status: rep.Status,
		Diagnostic: rep.Diagnostic, ReportingMTA: rep.ReportingMTA, FeedbackType: rep.FeedbackType,
	}
	var set notice.Status
	switch rep.Kind {
	case bounce.KindBounce:
		set = notice.StatusBounced
	case bounce.KindComplaint:
		set = notice.StatusComplained
	}
	r, err := s.cfg.Store.Recipient(ctx, ref.Campaign, ref.Recipient)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.cfg.Log.Error("returned message: read recipient", "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
		metrics.Returned.WithLabelValues(kind, "error").Inc()
		return errTemp
	}
	if r != nil && ref.Delivery < len(r.Resends) {
		// A later resend is what counts now (perhaps to a corrected
		// address): an old delivery's bounce is history, not the status.
		set = ""
	}
	if set != "" && r != nil && ref.Delivery == 0 && r.Status == notice.StatusSending {
		// The relay bounced the notice before its worker recorded the
		// relay's 250: recorded now, the bounce would be overwritten by
		// "sent" a moment later (and a second copy of the DSN would be a
		// duplicate). The relay keeps the DSN and tries again.
		metrics.Returned.WithLabelValues(kind, "early").Inc()
		s.cfg.Log.Info("returned message for a notice whose sending is not recorded yet: asked to try again later", "campaign", ref.Campaign,
			"recipient", ref.Recipient, "kind", kind)
		return errEarly
	}
	out, err := s.cfg.Store.RecordReturned(ctx, ref.Campaign, ref.Recipient, ev, set, raw)
	switch {
	case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrPurged):
		metrics.Returned.WithLabelValues(kind, "gone").Inc()
		s.cfg.Log.Warn("returned message for a campaign or recipient that is gone: not recorded", "campaign", ref.Campaign,
			"recipient", ref.Recipient, "kind", kind, "err", err)
		return nil
	case err != nil:
		metrics.Returned.WithLabelValues(kind, "error").Inc()
		s.cfg.Log.Error("returned message: record", "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
		return errTemp
	case out.Duplicate:
		metrics.Returned.WithLabelValues(kind, "duplicate").Inc()
		return nil
	}
	metrics.Returned.WithLabelValues(kind, "recorded").Inc()
	s.cfg.Log.Info("returned message recorded", "campaign", ref.Campaign, "recipient", ref.Recipient, "delivery", ref.Delivery,
		"kind", kind, "status", rep.Status, "token_from", how, "before", out.Before, "after", out.After, "bytes", len(raw), "parse_err", errString(perr))
	suppress := out.After != out.Before && r != nil && (rep.Hard() || rep.Kind == bounce.KindComplaint)
	if typ := returnedEvents[rep.Kind]; typ != "" && (out.After != out.Before || rep.Kind == bounce.KindDelayed) {
		s.cfg.Events.Emit(webhooks.Event{Type: typ, Data: webhooks.Data{CampaignID: ref.Campaign, RecipientID: ref.Recipient,
			Status: string(out.After), EnhancedCode: rep.Status, Resend: ref.Delivery}})
	}
	if out.After != out.Before {
		// Delivery outcomes by campaign count the bounces and complaints
		// too, next to the worker's sent and failed.
		label := ref.Campaign
		if c, err := s.cfg.Store.Campaign(ctx, ref.Campaign); err == nil {
			label = c.MetricLabel()
		}
		metrics.Messages.WithLabelValues(label, string(out.After)).Inc()
		// The proof of notification changed: audited like any other
		// change of a recipient's outcome (no address: the ids say who).
		details, _ := json.Marshal(map[string]any{"delivery": ref.Delivery, "action": rep.Action, "status": rep.Status,
			"reporting_mta": rep.ReportingMTA, "feedback_type": rep.FeedbackType, "suppressed": suppress, "token_from": how})
		if err := s.cfg.Store.Audit(ctx, store.AuditEntry{Actor: "inbound", Action: "recipient." + string(out.After),
			CampaignID: ref.Campaign, Recipient: ref.Recipient, Details: details}); err != nil {
			s.cfg.Log.Error("audit log write failed", "action", "recipient."+string(out.After), "err", err)
		}
	}
	if suppress {
		addr := r.Email
		if ref.Delivery > 0 && ref.Delivery <= len(r.Resends) && r.Resends[ref.Delivery-1].Email != "" {
			addr = r.Resends[ref.Delivery-1].Email
		}
		sup := store.Suppression{Email: addr, CampaignID: ref.Campaign, Enhanced: rep.Status,
			Reason: "bounced: " + rep.Status + " " + notice.MaskAddresses(rep.Diagnostic)}
		if rep.Kind == bounce.KindComplaint {
			sup.Reason = "complained: " + firstNonEmpty(rep.FeedbackType, "abuse")
		}
		if err := s.cfg.Store.Suppress(ctx, sup); err != nil {
			// The status is recorded; the suppression is what a retry of
			// this message would add, so ask for one.
			s.cfg.Log.Error("returned message: suppress address", "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
			return errTemp
		}
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
