package smtpsink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// send runs one SMTP transaction on c.
func send(c *smtp.Client, from, to, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

func start(t *testing.T, o Options) *Sink {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, s *Sink) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestKeepCounts(t *testing.T) {
	s := start(t, Options{Keep: true})
	if !strings.HasPrefix(s.URL(), "smtp://127.0.0.1:") || !strings.HasSuffix(s.URL(), "?tls=none") {
		t.Errorf("URL = %q", s.URL())
	}
	c := dial(t, s)
	for i, to := range []string{"a@example.jp", "A@example.jp", "b@example.jp"} {
		if err := send(c, "n@example.jp", to, fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	c.Quit()
	if s.Count() != 3 {
		t.Errorf("Count = %d, want 3", s.Count())
	}
	if n := s.CountFor("a@example.jp"); n != 2 {
		t.Errorf("CountFor(a) = %d, want 2 (addresses compare case-insensitively)", n)
	}
	if n := s.CountFor("b@example.jp"); n != 1 {
		t.Errorf("CountFor(b) = %d, want 1", n)
	}
	if n := s.CountFor("nobody@example.jp"); n != 0 {
		t.Errorf("CountFor(nobody) = %d", n)
	}
	if s.Sessions() != 1 {
		t.Errorf("Sessions = %d, want 1", s.Sessions())
	}
	msgs := s.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages kept", len(msgs))
	}
	if m := msgs[2]; m.From != "n@example.jp" || len(m.To) != 1 || m.To[0] != "b@example.jp" ||
		!strings.Contains(string(m.Data), "body 2") || m.Received.IsZero() {
		t.Errorf("message 2 = %+v", m)
	}
}

func TestCountOnly(t *testing.T) {
	s := start(t, Options{})
	c := dial(t, s)
	for i := 0; i < 10; i++ {
		if err := send(c, "n@example.jp", "a@example.jp", "Subject: x\r\n\r\nx\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	if s.Count() != 10 || len(s.Messages()) != 0 {
		t.Errorf("Count = %d, kept %d; want 10 counted, none kept", s.Count(), len(s.Messages()))
	}
}

func TestDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	s := start(t, Options{Dir: dir})
	c := dial(t, s)
	for _, to := range []string{"a@example.jp", "o'brien+x@example.jp"} {
		if err := send(c, "n@example.jp", to, "Subject: "+to+"\r\n\r\nhello\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"0000001-a@example.jp.eml", "0000002-o_brien_x@example.jp.eml"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("files %v, want %v", names, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, want[1]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Subject: o'brien+x@example.jp") || !strings.Contains(string(b), "hello") {
		t.Errorf("file content %q", b)
	}
}

// TestFaults: the Reply hook answers at each stage; n counts attempts per
// recipient, so "fail once, then accept" is one line.
func TestFaults(t *testing.T) {
	for _, tt := range []struct {
		stage Stage
		code  int
	}{
		{StageMail, 451}, {StageRcpt, 451}, {StageData, 451},
		{StageMail, 550}, {StageRcpt, 550}, {StageData, 554},
	} {
		t.Run(fmt.Sprintf("%s-%d", tt.stage, tt.code), func(t *testing.T) {
			var seen []string
			s := start(t, Options{Keep: true, Reply: func(st Stage, from, rcpt string, n int) *smtp.SMTPError {
				seen = append(seen, fmt.Sprintf("%s:%s:%d", st, rcpt, n))
				if st == tt.stage && n == 1 {
					return &smtp.SMTPError{Code: tt.code, EnhancedCode: smtp.EnhancedCode{tt.code / 100, 0, 0}, Message: "injected"}
				}
				return nil
			}})
			c := dial(t, s)
			err := send(c, "n@example.jp", "a@example.jp", "Subject: x\r\n\r\nx\r\n")
			if code(err) != tt.code {
				t.Fatalf("first send: %v, want %d", err, tt.code)
			}
			if s.Count() != 0 || s.CountFor("a@example.jp") != 0 {
				t.Errorf("a refused message was counted")
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
			if err := send(c, "n@example.jp", "a@example.jp", "Subject: x\r\n\r\nx\r\n"); err != nil {
				t.Fatalf("second send: %v (seen %v)", err, seen)
			}
			if s.Count() != 1 || len(s.Messages()) != 1 {
				t.Errorf("Count = %d after the retry", s.Count())
			}
		})
	}
}

// Test421 checks that 421 also drops the connection, as a server going
// away does.
func Test421(t *testing.T) {
	s := start(t, Options{Reply: func(st Stage, _, _ string, _ int) *smtp.SMTPError {
		if st == StageRcpt {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "going away"}
		}
		return nil
	}})
	c := dial(t, s)
	if err := send(c, "n@example.jp", "a@example.jp", "x\r\n"); code(err) != 421 {
		t.Fatalf("send: %v, want 421", err)
	}
	// The server closes the connection shortly after: a NOOP must fail.
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		time.Sleep(5 * time.Millisecond)
		err = c.Noop()
	}
	if err == nil {
		t.Fatal("connection still open after 421")
	}
}

func TestDownUp(t *testing.T) {
	s := start(t, Options{})
	addr := s.Addr()
	c := dial(t, s)
	if err := c.Noop(); err != nil { // the session starts with EHLO
		t.Fatal(err)
	}
	s.Down()
	if err := send(c, "n@example.jp", "a@example.jp", "x\r\n"); err == nil {
		t.Error("an open connection survived Down")
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatal("still accepting connections while down")
	}
	if err := s.Up(); err != nil {
		t.Fatal(err)
	}
	if err := s.Up(); err != nil { // idempotent
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("address changed: %s → %s", addr, s.Addr())
	}
	c2 := dial(t, s)
	if err := send(c2, "n@example.jp", "a@example.jp", "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 1 || s.Sessions() != 2 {
		t.Errorf("Count %d Sessions %d, want 1 and 2", s.Count(), s.Sessions())
	}
	s.Close()
	if err := s.Up(); err == nil {
		t.Error("Up after Close succeeded")
	}
}

func TestTLS(t *testing.T) {
	cfg, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{InsecureSkipVerify: true}
	t.Run("starttls", func(t *testing.T) {
		s := start(t, Options{TLS: cfg})
		c := dial(t, s)
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("STARTTLS not offered")
		}
		c, err := smtp.DialStartTLS(s.Addr(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.TLSConnectionState(); !ok {
			t.Fatal("not TLS after STARTTLS")
		}
		if err := send(c, "n@example.jp", "a@example.jp", "x\r\n"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("implicit", func(t *testing.T) {
		s := start(t, Options{TLS: cfg, ImplicitTLS: true})
		if !strings.HasPrefix(s.URL(), "smtps://") {
			t.Errorf("URL = %q", s.URL())
		}
		c, err := smtp.DialTLS(s.Addr(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := send(c, "n@example.jp", "a@example.jp", "x\r\n"); err != nil {
			t.Fatal(err)
		}
		if s.Count() != 1 {
			t.Errorf("Count = %d", s.Count())
		}
	})
	if _, err := Start(Options{ImplicitTLS: true}); err == nil {
		t.Error("ImplicitTLS without a config started")
	}
}
