package mailer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/oshirase/oshirase/metrics"
)

// Pool sends over up to PoolSize persistent SMTP connections.
type Pool struct {
	o      Options
	host   string // host:port of SMTP_URL, for the log (never its credentials)
	client *mail.Client
	slots  chan struct{}
	mu     sync.Mutex
	idle   []*conn
	closed bool

	lastOK atomic.Int64 // unix nanoseconds of the last message the server took

	relay relayState // whether the relay takes connections, for its down/back log lines
}

// relayState is whether connections to the relay fail, so that an outage
// is logged twice — when it begins and when it ends — however many
// messages meet it.
type relayState struct {
	mu       sync.Mutex
	down     bool
	since    time.Time
	failures int
}

// dialed records the outcome of opening a connection to the relay.
func (p *Pool) dialed(err error) {
	if err != nil {
		metrics.SMTPDialErrors.Inc()
	}
	r := &p.relay
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && !r.down:
		r.down, r.since, r.failures = true, time.Now(), 1
		p.log().Warn("SMTP relay down: cannot open a connection; messages wait and retry", "relay", p.host, "err", err.Error())
	case err != nil:
		r.failures++
	case r.down:
		p.log().Info("SMTP relay back: connections open again", "relay", p.host,
			"down_for", time.Since(r.since).Round(time.Millisecond).String(), "failed_connections", r.failures)
		r.down, r.failures = false, 0
	}
}

func (p *Pool) log() *slog.Logger {
	if p.o.Log != nil {
		return p.o.Log
	}
	return slog.Default()
}

// Stats says how many connections are in use and idle now.
func (p *Pool) Stats() metrics.PoolStats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	return metrics.PoolStats{InUse: len(p.slots), Idle: idle}
}

type conn struct {
	c        *smtp.Client
	used     int
	since    time.Time
	accepted Accepted // the reply to the last message this connection delivered
}

// errEarly marks an I/O failure before any of the message reached the
// server: the transaction can be tried again on a new connection without
// any risk of a second copy.
type errEarly struct{ error }

func (e errEarly) Unwrap() error { return e.error }

// NewPool checks the options; it dials lazily.
func NewPool(o Options) (*Pool, error) {
	e, err := ParseURL(o.URL)
	if err != nil {
		return nil, err
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Minute
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = 10 * time.Minute
	}
	// The end of DATA never gets less time than any other reply.
	o.DataTimeout = max(o.DataTimeout, o.Timeout)
	copts := []mail.Option{mail.WithPort(e.Port), mail.WithTimeout(o.Timeout), mail.WithoutNoop()}
	tc := &tls.Config{ServerName: e.Host, InsecureSkipVerify: e.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	copts = append(copts, mail.WithTLSConfig(tc))
	switch e.TLS {
	case "implicit":
		copts = append(copts, mail.WithSSL())
	case "required":
		copts = append(copts, mail.WithTLSPolicy(mail.TLSMandatory))
	case "none":
		copts = append(copts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		copts = append(copts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	}
	if e.Username != "" {
		copts = append(copts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(e.Username), mail.WithPassword(e.Password))
	}
	if e.Helo != "" {
		copts = append(copts, mail.WithHELO(e.Helo))
	}
	client, err := mail.NewClient(e.Host, copts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client: %w", err)
	}
	if o.DKIM != nil {
		if _, err := loadDKIM(o.DKIM); err != nil {
			return nil, err
		}
	}
	return &Pool{o: o, host: fmt.Sprintf("%s:%d", e.Host, e.Port), client: client, slots: make(chan struct{}, o.PoolSize)}, nil
}

// get takes a slot and a connection: an idle one unless fresh is set, else
// a new one. reused says the connection had carried mail before, so a
// failure on it may only mean the server dropped it while it sat idle.
func (p *Pool) get(ctx context.Context, fresh bool) (c *conn, reused bool, err error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	var stale []*conn
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, false, errors.New("smtp pool is closed")
	}
	for !fresh && len(p.idle) > 0 {
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(ic.since) < p.o.IdleTimeout {
			c = ic
			break
		}
		stale = append(stale, ic)
	}
	p.mu.Unlock()
	for _, s := range stale {
		// QUIT outside the lock: a server that went away must not stall
		// every other sender for a timeout.
		go p.client.CloseWithSMTPClient(s.c)
	}
	if c != nil {
		return c, true, nil
	}
	dctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	sc, err := p.client.DialToSMTPClientWithContext(dctx)
	p.dialed(err)
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	return &conn{c: sc, since: time.Now()}, false, nil
}

func (p *Pool) put(c *conn, broken bool) {
	defer func() { <-p.slots }()
	if broken || (p.o.MaxPerConn > 0 && c.used >= p.o.MaxPerConn) {
		go p.client.CloseWithSMTPClient(c.c)
		return
	}
	c.since = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.client.CloseWithSMTPClient(c.c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Send delivers one message over a pooled connection. The envelope is
// m.From's address and m.To, nothing else: headers never add recipients.
func (p *Pool) Send(ctx context.Context, m *Message) error {
	_, err := p.Deliver(ctx, m)
	return err
}

// Deliver is Send, and also returns what the server said when it took the
// message.
func (p *Pool) Deliver(ctx context.Context, m *Message) (Accepted, error) {
	msg, env, err := build(m, &p.o)
	if err != nil {
		return Accepted{}, &Error{Text: "build message: " + err.Error(), Stage: StageBuild, Err: err}
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if _, err := msg.WriteTo(buf); err != nil {
		return Accepted{}, &Error{Text: "write message: " + err.Error(), Stage: StageBuild, Err: err}
	}
	var c *conn
	var delivered, broken bool
	for fresh := false; ; fresh = true {
		var reused bool
		c, reused, err = p.get(ctx, fresh)
		if err != nil {
			return Accepted{}, setupError(err)
		}
		c.used++
		c.accepted = Accepted{}
		delivered, broken, err = p.sendPipelined(c, env, buf.Bytes(), m)
		if errors.Is(err, errNoPipelining) {
			// The server cannot pipeline: one command at a time.
			delivered, broken, err = p.sendPlain(c, env, buf.Bytes(), m)
		}
		var early errEarly
		if reused && !fresh && errors.As(err, &early) {
			// An idle connection the server closed (a restart, an idle
			// timeout): nothing of this message went out, so try once on
			// a new connection instead of failing the attempt.
			p.put(c, true)
			continue
		}
		break
	}
	if delivered {
		acc := c.accepted
		p.lastOK.Store(time.Now().UnixNano())
		// The server took the message. An error after that (the
		// connection broke) must not make anyone send it again.
		p.put(c, broken || err != nil)
		return acc, nil
	}
	if err == nil {
		p.put(c, broken)
		return Accepted{}, nil
	}
	if errors.Is(err, ErrAborted) {
		if broken {
			// Stopped inside DATA: close at once, without QUIT (which
			// would only become part of the message), so the server
			// never sees the end and discards what it got.
			c.c.Close()
			<-p.slots
			return Accepted{}, err
		}
		p.put(c, false) // stopped before MAIL: the connection is as good as before
		return Accepted{}, err
	}
	e := Classify(err)
	// A reply without a code (I/O error) or 421 means the connection is gone.
	p.put(c, broken || e.Code == 0 || e.Code == 421)
	return Accepted{}, e
}

// sendPlain runs one transaction command by command, for servers without
// PIPELINING.
func (p *Pool) sendPlain(c *conn, env envelope, raw []byte, m *Message) (delivered, broken bool, err error) {
	sc := c.c
	if err := guard(m); err != nil {
		return false, false, err
	}
	if err := sc.UpdateDeadline(p.o.Timeout); err != nil {
		return false, true, err
	}
	fail := func(stage string, err error) (bool, bool, error) {
		if !isReply(err) {
			return false, true, err
		}
		if rerr := sc.Reset(); rerr != nil {
			return false, true, atStage(stage, err)
		}
		return false, false, atStage(stage, err)
	}
	mailParams, rcptParams := dsnParams(sc, env)
	if err := sc.Mail("<" + env.from + ">" + mailParams); err != nil {
		if !isReply(err) {
			return false, true, errEarly{err}
		}
		return fail(StageMail, err)
	}
	if err := sc.Rcpt("<" + env.to + ">" + rcptParams); err != nil {
		return fail(StageRcpt, err)
	}
	w, err := sc.Data()
	if err != nil {
		return fail(StageData, err)
	}
	if _, err := w.Write(raw); err != nil {
		return false, true, err
	}
	// The dot-writer holds the end of the message until Close: a guard
	// that says no here drops the connection before the server has it all.
	if err := guard(m); err != nil {
		return false, true, err
	}
	if err := sc.UpdateDeadline(p.o.DataTimeout); err != nil {
		return false, true, err
	}
	stop := p.slowAfter(m)
	err = w.Close() // writes the end of DATA and reads the reply
	stop()
	if err != nil {
		if !isReply(err) {
			return false, true, err
		}
		return false, false, atStage(StageData, err)
	}
	return true, false, nil
}

// guard asks m's Guard, if any, whether the message may still go out.
func guard(m *Message) error {
	if m.Guard == nil {
		return nil
	}
	if err := m.Guard(); err != nil {
		return fmt.Errorf("%w: %w", ErrAborted, err)
	}
	return nil
}

// slowAfter calls m.Slow if the reply to the end of DATA takes longer than
// Timeout; the returned func, called when the reply is in, stops it, or
// waits for a Slow already running to return.
func (p *Pool) slowAfter(m *Message) (stop func()) {
	if m.Slow == nil {
		return func() {}
	}
	done := make(chan struct{})
	t := time.AfterFunc(p.o.Timeout, func() { defer close(done); m.Slow() })
	return func() {
		if !t.Stop() {
			<-done // Slow has started: Deliver returns after it
		}
	}
}

// Ping checks that the server answers, for readiness checks. It never
// waits for a pooled connection: while every one is busy sending, a message
// taken in the last 10 s is answer enough, and otherwise it dials a
// connection of its own. So /readyz stays quick and true at full speed.
func (p *Pool) Ping(ctx context.Context) error {
	if len(p.slots) == cap(p.slots) {
		if time.Since(time.Unix(0, p.lastOK.Load())) < 10*time.Second {
			return nil
		}
		dctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
		defer cancel()
		sc, err := p.client.DialToSMTPClientWithContext(dctx)
		p.dialed(err)
		if err != nil {
			return err
		}
		defer p.client.CloseWithSMTPClient(sc)
		return sc.Noop()
	}
	c, _, err := p.get(ctx, false)
	if err != nil {
		return err
	}
	if err := c.c.Noop(); err != nil {
		p.put(c, true)
		return err
	}
	p.put(c, false)
	return nil
}

// Close closes idle connections; connections in use close when returned.
func (p *Pool) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		p.client.CloseWithSMTPClient(c.c)
	}
	return nil
}

// setupError classifies a failure to get a connection: the dial, the
// greeting, EHLO, STARTTLS or AUTH. go-mail does not say which step failed;
// its AUTH errors all name "SMTP AUTH" (or "support AUTH", "auth
// mechanism"): a bare "auth" would match "unknown authority".
func setupError(err error) *Error {
	e := *Classify(err)
	e.Stage = StageConnect
	t := strings.ToLower(err.Error())
	for _, s := range []string{"smtp auth", "support auth", "auth mechanism"} {
		if strings.Contains(t, s) {
			e.Stage = StageAuth
		}
	}
	return &e
}
