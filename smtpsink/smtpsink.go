// Package smtpsink is an in-process SMTP server that accepts mail and keeps
// it: in memory, as .eml files in a folder, or only as counts. The demo sends
// to it when no SMTP server is configured, and tests inject 4xx/5xx answers
// and outages through it. It is built on emersion/go-smtp, a real SMTP server,
// so everything oshirase sends crosses a real SMTP conversation.
package smtpsink

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Stage is the SMTP command a Reply hook is asked about.
type Stage int

const (
	StageMail Stage = iota // MAIL FROM
	StageRcpt              // RCPT TO
	StageData              // end of DATA
)

func (s Stage) String() string { return [...]string{"MAIL", "RCPT", "DATA"}[s] }

// Options configures a Sink.
type Options struct {
	Addr string // listen address; default "127.0.0.1:0"
	Dir  string // write each message to <Dir>/<n>-<recipient>.eml
	Keep bool   // keep messages in memory (Messages)
	// Reply injects faults: a non-nil error is the server's answer at that
	// stage. n counts how often rcpt has been seen at that stage (from 1);
	// at StageMail rcpt is not known yet and is "", so n counts MAIL
	// commands. At StageData rcpt is the first recipient. An SMTPError with
	// code 421 also closes the connection, as a server going away does.
	Reply func(stage Stage, from, rcpt string, n int) *smtp.SMTPError
	Delay time.Duration // pause before answering DATA (a slow server)
	// TLS, when set, is offered through STARTTLS, or with ImplicitTLS
	// spoken from the first byte (smtps, port 465 style).
	TLS         *tls.Config
	ImplicitTLS bool
	// Auth, when set, offers AUTH PLAIN and checks each login with it: a
	// non-nil error is the server's answer (535, say). Clients must then
	// log in before MAIL (530 otherwise), as a submission relay asks.
	Auth func(user, pass string) *smtp.SMTPError
	// DSN offers the DSN extension (RFC 3461); kept messages record the
	// parameters MAIL and RCPT carried.
	DSN bool
}

// Message is one received message.
type Message struct {
	From     string
	To       []string
	Data     []byte
	Received time.Time
	Helo     string // the name the client gave in HELO/EHLO: which sender it was
	// With Options.DSN: MAIL's RET= and ENVID=, and the first RCPT's
	// NOTIFY= (comma-joined) and ORCPT= (type;address, decoded).
	Ret, EnvID, Notify, ORcpt string
}

// Sink is a running SMTP server.
type Sink struct {
	opts     Options
	addr     string
	mu       sync.Mutex
	srv      *smtp.Server
	ln       net.Listener
	msgs     []Message
	perRcpt  map[string]int
	seen     map[string]int // (stage, rcpt) → times seen, for Reply's n
	count    atomic.Int64
	sessions atomic.Int64
	closed   bool
}

// Start listens and serves until Close.
func Start(o Options) (*Sink, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.ImplicitTLS && o.TLS == nil {
		return nil, fmt.Errorf("smtpsink: ImplicitTLS needs a TLS config")
	}
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("smtpsink: %w", err)
		}
	}
	s := &Sink{opts: o, perRcpt: map[string]int{}, seen: map[string]int{}}
	if err := s.listen(o.Addr); err != nil {
		return nil, err
	}
	s.addr = s.ln.Addr().String()
	return s, nil
}

func (s *Sink) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smtpsink: listen: %w", err)
	}
	srv := smtp.NewServer(backend{s})
	if s.opts.TLS != nil {
		srv.TLSConfig = s.opts.TLS
		if s.opts.ImplicitTLS {
			ln = tls.NewListener(ln, s.opts.TLS)
		}
	}
	// Clients that hang up without QUIT (a pool closing, a test ending)
	// are normal here, not worth a line on stderr.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.Domain = "sink.localhost"
	srv.AllowInsecureAuth = true
	srv.EnableDSN = s.opts.DSN
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go srv.Serve(ln)
	return nil
}

// Addr is host:port.
func (s *Sink) Addr() string { return s.addr }

// URL is an SMTP_URL for oshirase: plain SMTP, or with ImplicitTLS smtps://
// that skips certificate verification (a test certificate).
func (s *Sink) URL() string {
	if s.opts.ImplicitTLS {
		return "smtps://" + s.addr + "?insecure_skip_verify=1"
	}
	return "smtp://" + s.addr + "?tls=none"
}

// Count is how many messages were accepted.
func (s *Sink) Count() int64 { return s.count.Load() }

// Sessions is how many connections were accepted.
func (s *Sink) Sessions() int64 { return s.sessions.Load() }

// CountFor is how many messages rcpt received.
func (s *Sink) CountFor(rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perRcpt[strings.ToLower(rcpt)]
}

// PerRecipient returns a copy of the per-recipient counts.
func (s *Sink) PerRecipient() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.perRcpt))
	for k, v := range s.perRcpt {
		out[k] = v
	}
	return out
}

// Messages returns the messages kept so far (Options.Keep).
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Down closes the listener and every open connection: an outage. Up
// listens again on the same address.
func (s *Sink) Down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Up ends an outage started by Down; it does nothing while the sink is up.
func (s *Sink) Up() error {
	s.mu.Lock()
	up, closed := s.srv != nil, s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("smtpsink: closed")
	}
	if up {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after Close
		if err = s.listen(s.addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the server for good.
func (s *Sink) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Down()
	return nil
}

func (s *Sink) reply(stage Stage, from, rcpt string) error {
	if s.opts.Reply == nil {
		return nil
	}
	key := fmt.Sprintf("%d|%s", stage, strings.ToLower(rcpt))
	s.mu.Lock()
	s.seen[key]++
	n := s.seen[key]
	s.mu.Unlock()
	if e := s.opts.Reply(stage, from, rcpt, n); e != nil {
		return e
	}
	return nil
}

type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.sessions.Add(1)
	x := &session{s: b.s, conn: c}
	if b.s.opts.Auth != nil {
		return &authSession{x}, nil
	}
	return x, nil
}

type session struct {
	s      *Sink
	conn   *smtp.Conn
	from   string
	to     []string
	authed bool
	dsn    Message // DSN parameters of the transaction
}

// authSession is a session of a sink with Options.Auth: it offers AUTH.
type authSession struct{ *session }

func (x *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *authSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if e := x.s.opts.Auth(user, pass); e != nil {
			return e
		}
		x.authed = true
		return nil
	}), nil
}

func (x *authSession) Mail(from string, o *smtp.MailOptions) error {
	if !x.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return x.session.Mail(from, o)
}

func (x *session) Reset()        { x.from, x.to, x.dsn = "", x.to[:0], Message{} }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, o *smtp.MailOptions) error {
	if err := x.fault(StageMail, from, ""); err != nil {
		return err
	}
	x.from = from
	if o != nil {
		x.dsn.Ret, x.dsn.EnvID = string(o.Return), o.EnvelopeID
	}
	return nil
}

func (x *session) Rcpt(to string, o *smtp.RcptOptions) error {
	if err := x.fault(StageRcpt, x.from, to); err != nil {
		return err
	}
	if o != nil && len(x.to) == 0 {
		var n []string
		for _, v := range o.Notify {
			n = append(n, string(v))
		}
		x.dsn.Notify = strings.Join(n, ",")
		if o.OriginalRecipientType != "" {
			x.dsn.ORcpt = string(o.OriginalRecipientType) + ";" + o.OriginalRecipient
		}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	keep := x.s.opts.Keep || x.s.opts.Dir != ""
	if keep {
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
	} else if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if x.s.opts.Delay > 0 {
		time.Sleep(x.s.opts.Delay)
	}
	rcpt := ""
	if len(x.to) > 0 {
		rcpt = x.to[0]
	}
	if err := x.fault(StageData, x.from, rcpt); err != nil {
		return err
	}
	n := x.s.count.Add(1)
	x.s.mu.Lock()
	for _, t := range x.to {
		x.s.perRcpt[strings.ToLower(t)]++
	}
	if x.s.opts.Keep {
		x.s.msgs = append(x.s.msgs, Message{From: x.from, To: append([]string(nil), x.to...), Data: buf.Bytes(), Received: time.Now(), Helo: x.conn.Hostname(),
			Ret: x.dsn.Ret, EnvID: x.dsn.EnvID, Notify: x.dsn.Notify, ORcpt: x.dsn.ORcpt})
	}
	x.s.mu.Unlock()
	if x.s.opts.Dir != "" {
		name := fmt.Sprintf("%07d-%s.eml", n, sanitize(rcpt))
		if err := os.WriteFile(filepath.Join(x.s.opts.Dir, name), buf.Bytes(), 0o644); err != nil {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot store message"}
		}
	}
	return nil
}

// fault asks the Reply hook; a 421 also drops the connection, as a server
// shutting down does.
func (x *session) fault(stage Stage, from, rcpt string) error {
	err := x.s.reply(stage, from, rcpt)
	if err == nil {
		return nil
	}
	if se, ok := err.(*smtp.SMTPError); ok && se.Code == 421 {
		go func() {
			time.Sleep(10 * time.Millisecond)
			x.conn.Close()
		}()
	}
	return err
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '@', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// SelfSigned returns a server TLS config with a fresh self-signed ECDSA
// certificate for 127.0.0.1, localhost and hosts: enough for STARTTLS and
// smtps tests, where the client skips verification.
func SelfSigned(hosts ...string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smtpsink"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     append([]string{"localhost"}, hosts...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}, nil
}
