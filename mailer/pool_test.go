package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/smtpsink"
)

func startSink(t *testing.T, o smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	s, err := smtpsink.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newPool(t *testing.T, o Options) *Pool {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	p, err := NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testMessage(to string) *Message {
	return &Message{From: "Example <notice@example.jp>", To: to, ToName: "Taro", Subject: "[Important] notice",
		Text: "Please have your card reissued.\n", HTML: "<html><head></head><body><p>Please.</p></body></html>",
		MessageID: "t." + strings.ReplaceAll(to, "@", ".") + "@example.jp"}
}

// TestPoolReuse: 500 messages from 16 goroutines over a pool of 4 open at
// most 8 sessions (4, plus a few replaced after MaxPerConn), not 500.
func TestPoolReuse(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 4})
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := p.Send(context.Background(), testMessage(fmt.Sprintf("r%d@example.com", i))); err != nil {
					failed.Add(1)
					t.Error(err)
				}
			}
		}()
	}
	for i := 0; i < 500; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if got := sink.Count(); got != 500 || failed.Load() != 0 {
		t.Fatalf("sink got %d messages, %d failed; want 500, 0", got, failed.Load())
	}
	if s := sink.Sessions(); s > 8 {
		t.Errorf("%d SMTP sessions for 500 messages over a pool of 4; want ≤ 8", s)
	}
	for i := 0; i < 500; i++ {
		if n := sink.CountFor(fmt.Sprintf("r%d@example.com", i)); n != 1 {
			t.Fatalf("r%d received %d copies", i, n)
		}
	}
}

// TestPoolMaxPerConn: a connection is replaced after MaxPerConn messages.
func TestPoolMaxPerConn(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 1, MaxPerConn: 10})
	for i := 0; i < 30; i++ {
		if err := p.Send(context.Background(), testMessage(fmt.Sprintf("m%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	if s := sink.Sessions(); s != 3 {
		t.Errorf("%d sessions for 30 messages at 10 per connection; want 3", s)
	}
}

// TestPoolReplies: the server's answer becomes a classified *Error, and the
// connection survives answers that leave it usable.
func TestPoolReplies(t *testing.T) {
	for _, tt := range []struct {
		name     string
		stage    smtpsink.Stage
		reply    *smtp.SMTPError
		code     int
		enhanced string
		text     string
		temp     bool
		sessions int64 // after the failure and one good message
	}{
		{"451 at RCPT", smtpsink.StageRcpt, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}, 451, "4.7.1", "Greylisted, try later", true, 1},
		{"550 5.1.1 at RCPT", smtpsink.StageRcpt, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}, 550, "5.1.1", "No such user", false, 1},
		{"552 at DATA", smtpsink.StageData, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too big"}, 552, "5.3.4", "Message too big", false, 1},
		{"550 5.7.1 at MAIL", smtpsink.StageMail, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected"}, 550, "5.7.1", "Sender address rejected", false, 1},
		{"451 at MAIL", smtpsink.StageMail, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error"}, 451, "4.3.0", "Local error", true, 1},
		// 421 closes the connection: the next message needs a new one.
		{"421 at RCPT", smtpsink.StageRcpt, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down"}, 421, "4.3.2", "Shutting down", true, 2},
		{"421 at DATA", smtpsink.StageData, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down"}, 421, "4.3.2", "Shutting down", true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const bad = "bad@example.com"
			sink := startSink(t, smtpsink.Options{Reply: func(stage smtpsink.Stage, from, rcpt string, n int) *smtp.SMTPError {
				// MAIL has no recipient yet: fail the first one.
				if stage == tt.stage && (rcpt == bad || stage == smtpsink.StageMail && n == 1) {
					return tt.reply
				}
				return nil
			}})
			p := newPool(t, Options{URL: sink.URL(), PoolSize: 1})
			err := p.Send(context.Background(), testMessage(bad))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.Code != tt.code || e.Enhanced != tt.enhanced || e.Text != tt.text || e.Temporary != tt.temp {
				t.Errorf("got code %d enhanced %q text %q temporary %v; want %d %q %q %v",
					e.Code, e.Enhanced, e.Text, e.Temporary, tt.code, tt.enhanced, tt.text, tt.temp)
			}
			if sink.CountFor(bad) != 0 {
				t.Errorf("refused message was stored")
			}
			if err := p.Send(context.Background(), testMessage("good@example.com")); err != nil {
				t.Fatalf("next message: %v", err)
			}
			if sink.CountFor("good@example.com") != 1 {
				t.Errorf("next message not received")
			}
			if s := sink.Sessions(); s != tt.sessions {
				t.Errorf("%d sessions, want %d", s, tt.sessions)
			}
		})
	}
}

// TestPoolServerDown: a refused connection is temporary; after the outage
// the pool dials again.
func TestPoolServerDown(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 2, Timeout: 2 * time.Second})
	if err := p.Send(context.Background(), testMessage("a@example.com")); err != nil {
		t.Fatal(err)
	}
	sink.Down()
	err := p.Send(context.Background(), testMessage("b@example.com"))
	var e *Error
	if !errors.As(err, &e) || !e.Temporary || e.Code != 0 {
		t.Fatalf("send while down: %#v, want a temporary *Error without code", err)
	}
	if err := sink.Up(); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(context.Background(), testMessage("c@example.com")); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if sink.CountFor("c@example.com") != 1 || sink.CountFor("b@example.com") != 0 {
		t.Errorf("counts: %v", sink.PerRecipient())
	}
}

// TestPoolRestartedServer: the server restarts while a connection sits
// idle in the pool. The next message must not fail on the dead connection:
// nothing of it was sent, so the pool dials again and delivers it once.
func TestPoolRestartedServer(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 1})
	for _, to := range []string{"a@example.com", "b@example.com"} {
		if err := p.Send(context.Background(), testMessage(to)); err != nil {
			t.Fatal(err)
		}
		sink.Down()
		if err := sink.Up(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Send(context.Background(), testMessage("c@example.com")); err != nil {
		t.Fatalf("first message after a restart: %v", err)
	}
	for _, to := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		if n := sink.CountFor(to); n != 1 {
			t.Errorf("%s received %d times, want 1", to, n)
		}
	}
}

// TestPoolClosed: a closed pool refuses to send instead of dialling.
func TestPoolClosed(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	p := newPool(t, Options{URL: sink.URL()})
	p.Close()
	if err := p.Send(context.Background(), testMessage("a@example.com")); err == nil {
		t.Fatal("send on a closed pool succeeded")
	}
	if sink.Sessions() != 0 {
		t.Errorf("a closed pool dialled %d sessions", sink.Sessions())
	}
}

// TestPoolContextWhileWaiting: a sender waiting for a free connection gives
// up when its context ends.
func TestPoolContextWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	sink := startSink(t, smtpsink.Options{Reply: func(stage smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt && rcpt == "slow@example.com" {
			<-release
		}
		return nil
	}})
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 1})
	done := make(chan error, 1)
	go func() { done <- p.Send(context.Background(), testMessage("slow@example.com")) }()
	for deadline := time.Now().Add(5 * time.Second); len(p.slots) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("first send never took the connection")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Send(ctx, testMessage("waiting@example.com"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if e := Classify(err); !e.Temporary {
		t.Errorf("a cancelled wait must be temporary: %+v", e)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("waited %v", d)
	}
	once.Do(func() { close(release) })
	if err := <-done; err != nil {
		t.Fatalf("first send: %v", err)
	}
	if sink.CountFor("waiting@example.com") != 0 {
		t.Error("the cancelled message was sent")
	}
}

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Endpoint
		err  string
	}{
		{in: "smtp://mail.example.jp", want: Endpoint{Host: "mail.example.jp", Port: 25, TLS: "opportunistic"}},
		{in: "smtp://127.0.0.1:2525?tls=none", want: Endpoint{Host: "127.0.0.1", Port: 2525, TLS: "none"}},
		{in: "smtp://u%40x:p%3Aw@mail.example.jp:587?tls=required&helo=me.example.jp", want: Endpoint{Host: "mail.example.jp", Port: 587, TLS: "required", Username: "u@x", Password: "p:w", Helo: "me.example.jp"}},
		{in: "smtp://h:25?tls=opportunistic&insecure_skip_verify=1", want: Endpoint{Host: "h", Port: 25, TLS: "opportunistic", InsecureSkipVerify: true}},
		{in: "smtps://mail.example.jp", want: Endpoint{Host: "mail.example.jp", Port: 465, TLS: "implicit"}},
		{in: "smtps://mail.example.jp:1465?insecure_skip_verify=true", want: Endpoint{Host: "mail.example.jp", Port: 1465, TLS: "implicit", InsecureSkipVerify: true}},
		{in: "smtp://[::1]:2525", want: Endpoint{Host: "::1", Port: 2525, TLS: "opportunistic"}},
		{in: "smtps://h?tls=none", err: "always TLS"},
		{in: "smtp://h?tls=maybe", err: "tls=\"maybe\""},
		{in: "http://h", err: "scheme"},
		{in: "smtp://:25", err: "no host"},
		{in: "smtp://h:0", err: "port"},
		{in: "smtp://h:70000", err: "port"},
		{in: "smtp://h:x", err: "port"},
		{in: "::", err: "SMTP_URL"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURL(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	if Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
	e := Classify(io.EOF)
	if !e.Temporary || e.Code != 0 || !errors.Is(e, io.EOF) {
		t.Errorf("EOF: %+v", e)
	}
	e = Classify(fmt.Errorf("RCPT TO: %w", &smtpErr{}))
	if e.Temporary != true {
		t.Errorf("unknown error type must be temporary: %+v", e)
	}
	if s := (&Error{Code: 550, Enhanced: "5.1.1", Text: "No such user"}).Error(); s != "550 5.1.1 No such user" {
		t.Errorf("Error() = %q", s)
	}
}

type smtpErr struct{}

func (smtpErr) Error() string { return "something odd" }

// tlsServer is a go-smtp server with a certificate from a private CA, with
// implicit TLS or STARTTLS.
func tlsServer(t *testing.T, implicit bool) (addr string, got *atomic.Int64) {
	t.Helper()
	tc := testenv.NewTLSFiles(t).Server
	var err error
	got = new(atomic.Int64)
	srv := smtp.NewServer(countBackend{got})
	srv.Domain = "tls.localhost"
	srv.TLSConfig = tc
	var ln net.Listener
	if implicit {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", tc)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), got
}

type countBackend struct{ n *atomic.Int64 }

func (b countBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &countSession{b: b, c: c}, nil
}

type countSession struct {
	b countBackend
	c *smtp.Conn
}

func (s *countSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *countSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *countSession) Reset()                               {}
func (s *countSession) Logout() error                        { return nil }
func (s *countSession) Data(r io.Reader) error {
	if _, ok := s.c.TLSConnectionState(); !ok {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "TLS required by the test"}
	}
	io.Copy(io.Discard, r)
	s.b.n.Add(1)
	return nil
}

func TestPoolTLS(t *testing.T) {
	t.Run("smtps", func(t *testing.T) {
		addr, got := tlsServer(t, true)
		p := newPool(t, Options{URL: "smtps://" + addr + "?insecure_skip_verify=1"})
		for i := 0; i < 3; i++ {
			if err := p.Send(context.Background(), testMessage("tls@example.com")); err != nil {
				t.Fatal(err)
			}
		}
		if got.Load() != 3 {
			t.Errorf("server got %d messages over TLS, want 3", got.Load())
		}
	})
	t.Run("starttls required", func(t *testing.T) {
		addr, got := tlsServer(t, false)
		p := newPool(t, Options{URL: "smtp://" + addr + "?tls=required&insecure_skip_verify=1"})
		if err := p.Send(context.Background(), testMessage("tls@example.com")); err != nil {
			t.Fatal(err)
		}
		if got.Load() != 1 {
			t.Errorf("server got %d messages over TLS, want 1", got.Load())
		}
	})
	t.Run("starttls opportunistic", func(t *testing.T) {
		addr, got := tlsServer(t, false)
		p := newPool(t, Options{URL: "smtp://" + addr + "?insecure_skip_verify=1"})
		if err := p.Send(context.Background(), testMessage("tls@example.com")); err != nil {
			t.Fatal(err)
		}
		if got.Load() != 1 {
			t.Errorf("server got %d messages over TLS, want 1", got.Load())
		}
	})
	t.Run("certificate not trusted", func(t *testing.T) {
		addr, got := tlsServer(t, false)
		p := newPool(t, Options{URL: "smtp://" + addr + "?tls=required"})
		err := p.Send(context.Background(), testMessage("tls@example.com"))
		if err == nil || got.Load() != 0 {
			t.Fatalf("certificate of an unknown CA accepted without insecure_skip_verify: err %v", err)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error does not say why: %v", err)
		}
	})
	t.Run("required but not offered", func(t *testing.T) {
		sink := startSink(t, smtpsink.Options{})
		p := newPool(t, Options{URL: "smtp://" + sink.Addr() + "?tls=required"})
		err := p.Send(context.Background(), testMessage("tls@example.com"))
		if err == nil || sink.Count() != 0 {
			t.Fatalf("sent in clear text although tls=required: err %v", err)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "starttls") {
			t.Errorf("error does not say STARTTLS is missing: %v", err)
		}
	})
}

// TestPoolServerHangs: a server that takes the connection and never says a
// word costs SMTP_TIMEOUT, not a worker for ever, and is a temporary failure
// without a code (retried like an outage).
func TestPoolServerHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	p := newPool(t, Options{URL: "smtp://" + ln.Addr().String() + "?tls=none", PoolSize: 1, Timeout: 300 * time.Millisecond})
	start := time.Now()
	err = p.Send(context.Background(), testMessage("a@example.com"))
	took := time.Since(start)
	var e *Error
	if !errors.As(err, &e) || !e.Temporary || e.Code != 0 {
		t.Fatalf("send to a silent server: %#v, want a temporary *Error without code", err)
	}
	if took > 5*time.Second {
		t.Errorf("send to a silent server took %s with a 300ms timeout", took)
	}
}

func TestParseAccepted(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Accepted
	}{
		{"2.0.0 Ok: queued as 4XyZ1kQ", Accepted{"2.0.0", "Ok: queued as 4XyZ1kQ"}},
		{"OK: queued", Accepted{"", "OK: queued"}},
		{"2.6.0 <c.1.r.2@example.jp> [InternalId=123] Queued mail for delivery", Accepted{"2.6.0", "<c.1.r.2@example.jp> [InternalId=123] Queued mail for delivery"}},
		{"2.0.0", Accepted{"2.0.0", ""}},
		{"250 ok\nsecond line", Accepted{"", "250 ok second line"}},
		{"", Accepted{}},
	} {
		if got := parseAccepted(tt.in); got != tt.want {
			t.Errorf("parseAccepted(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestPoolEndOfDataAndGuard, on both paths (pipelined, and command by
// command for servers without PIPELINING): the reply to the end of DATA
// may take longer than Timeout (DataTimeout; Slow hears of it), and a Guard
// that says no before MAIL or before the end of DATA sends nothing.
func TestPoolEndOfDataAndGuard(t *testing.T) {
	no := errors.New("claim lost")
	for _, plain := range []bool{false, true} {
		for _, tt := range []struct {
			name      string
			delay     time.Duration
			guardNoAt int // the Guard call (1: before MAIL, 2: before the end) that says no; 0 none
			wantSlow  int32
			wantSent  int64
			wantMails int
		}{
			{"slow end of DATA", 600 * time.Millisecond, 0, 1, 1, 1},
			{"guard no before MAIL", 0, 1, 0, 0, 0},
			{"guard no before the end", 0, 2, 0, 0, 1},
		} {
			t.Run(fmt.Sprintf("%s/plain=%v", tt.name, plain), func(t *testing.T) {
				var mails atomic.Int64
				sink := startSink(t, smtpsink.Options{Delay: tt.delay, Reply: func(st smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
					if st == smtpsink.StageMail {
						mails.Add(1)
					}
					return nil
				}})
				p := newPool(t, Options{URL: sink.URL(), PoolSize: 1, Timeout: 200 * time.Millisecond, DataTimeout: 5 * time.Second, noPipelining: plain})
				m := testMessage("a@example.com")
				var slow atomic.Int32
				var calls int
				m.Slow = func() { slow.Add(1) }
				m.Guard = func() error {
					calls++
					if calls == tt.guardNoAt {
						return no
					}
					return nil
				}
				err := p.Send(context.Background(), m)
				if tt.guardNoAt > 0 {
					if !errors.Is(err, ErrAborted) || !errors.Is(err, no) {
						t.Fatalf("send with a guard saying no: %v, want ErrAborted", err)
					}
				} else if err != nil {
					t.Fatalf("send: %v", err)
				}
				time.Sleep(300 * time.Millisecond) // a message the server got would be counted by now
				if got := sink.Count(); got != tt.wantSent {
					t.Errorf("server took %d messages, want %d", got, tt.wantSent)
				}
				if got := slow.Load(); got != tt.wantSlow {
					t.Errorf("Slow called %d times, want %d", got, tt.wantSlow)
				}
				if got := mails.Load(); got != int64(tt.wantMails) {
					t.Errorf("%d MAIL commands, want %d", got, tt.wantMails)
				}
				// The pool still works after it.
				if err := p.Send(context.Background(), testMessage("b@example.com")); err != nil {
					t.Errorf("next send: %v", err)
				}
			})
		}
	}
}
