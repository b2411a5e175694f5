package mailer

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/smtpsink"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRelayDownAndBack: while the relay takes no connections, ten sends
// fail and the log says "SMTP relay down" once, not ten times; the first
// connection that opens again says "SMTP relay back" once, with how long
// and how many connections failed. Each failed connection is counted, and
// the pool's gauges see the connection left idle.
func TestRelayDownAndBack(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	var logs syncBuf
	p := newPool(t, Options{URL: sink.URL(), PoolSize: 2, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := context.Background()
	if err := p.Send(ctx, testMessage("a@example.jp")); err != nil {
		t.Fatal(err)
	}
	p.Close() // no idle connection left to reuse: every send dials
	p = newPool(t, Options{URL: sink.URL(), PoolSize: 2, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	dials := testutil.ToFloat64(metrics.SMTPDialErrors)
	sink.Down()
	for range 10 {
		if err := p.Send(ctx, testMessage("b@example.jp")); err == nil {
			t.Fatal("sent while the relay is down")
		}
	}
	if got := testutil.ToFloat64(metrics.SMTPDialErrors) - dials; got != 10 {
		t.Errorf("%v dial errors counted, want 10", got)
	}
	if err := sink.Up(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Send(ctx, testMessage("c@example.jp")); err != nil {
			t.Fatal(err)
		}
	}
	out := logs.String()
	if n := strings.Count(out, `"msg":"SMTP relay down`); n != 1 {
		t.Errorf("relay down logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, `"msg":"SMTP relay back`); n != 1 || !strings.Contains(out, `"failed_connections":10`) {
		t.Errorf("relay back logged %d times (want once, with 10 failed connections):\n%s", n, out)
	}
	if st := p.Stats(); st.InUse != 0 || st.Idle != 1 {
		t.Errorf("pool stats %+v, want 0 in use and 1 idle", st)
	}
}
