package worker

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/notice"
)

// TestBackoffLikeAnMTA: with the defaults the first retry comes within a
// minute, delays double up to an hour and then stay there, so the 3 days of
// RETRY_MAX_AGE hold about 78 attempts — the shape of Postfix's queue.
func TestBackoffLikeAnMTA(t *testing.T) {
	c := Config{}
	c.defaults()
	w := &Worker{cfg: c}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute,
		16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour, time.Hour}
	for i, d := range want {
		if got := w.backoff(i + 1); got != d {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, d)
		}
	}
	var total time.Duration
	n := 0
	for ; total < c.RetryMaxAge; n++ {
		total += w.backoff(n + 1)
	}
	if n < 70 || n > 80 {
		t.Errorf("%d attempts fit in %s, want about 78", n, c.RetryMaxAge)
	}

	small := &Worker{cfg: Config{RetryBase: 100 * time.Millisecond, RetryMaxDelay: 300 * time.Millisecond}}
	for i, d := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond} {
		if got := small.backoff(i + 1); got != d {
			t.Errorf("small: backoff(%d) = %s, want %s", i+1, got, d)
		}
	}
}

// TestRetryDelayAndFailure: our own delays win; waiting (a pause, a busy
// claim, the rate limit) burns no retry; anything else is a failure that
// comes back soon, then backs off.
func TestRetryDelayAndFailure(t *testing.T) {
	task := asynq.NewTask("x", nil)
	for _, tt := range []struct {
		name    string
		err     error
		n       int
		delay   time.Duration
		failure bool
	}{
		{"smtp 451", &retryError{Delay: 2 * time.Minute, Failure: true, Err: errors.New("451 4.7.1 greylisted")}, 3, 2 * time.Minute, true},
		{"wrapped", fmt.Errorf("chunk: %w", &retryError{Delay: time.Second, Failure: true, Err: errors.New("x")}), 0, time.Second, true},
		{"rate limit wait", &retryError{Delay: 40 * time.Millisecond, Err: errors.New("waiting for rate limit")}, 9, 40 * time.Millisecond, false},
		{"redis away, first", errors.New("dial tcp: connection refused"), 0, time.Second, true},
		{"redis away, later", errors.New("dial tcp: connection refused"), 3, 8 * time.Second, true},
		{"redis away, capped", errors.New("dial tcp: connection refused"), 40, 32 * time.Second, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryDelay(tt.n, tt.err, task); got != tt.delay {
				t.Errorf("RetryDelay = %s, want %s", got, tt.delay)
			}
			if got := IsFailure(tt.err); got != tt.failure {
				t.Errorf("IsFailure = %v, want %v", got, tt.failure)
			}
		})
	}
	if IsFailure(nil) {
		t.Error("IsFailure(nil)")
	}
}

// TestMessageID: derived from campaign, recipient and resend, on the
// configured domain or the From domain, so a duplicate is recognisable.
func TestMessageID(t *testing.T) {
	c := &notice.Campaign{ID: "abc123", From: "株式会社サンプル <notice@example.jp>"}
	for _, tt := range []struct {
		host   string
		rid    int64
		resend int
		want   string
	}{
		{"", 7, 0, "c.abc123.r.7@example.jp"},
		{"", 7, 2, "c.abc123.r.7.s2@example.jp"},
		{"mail.example.com", 15370, 0, "c.abc123.r.15370@mail.example.com"},
	} {
		w := &Worker{cfg: Config{MessageIDHost: tt.host}}
		if got := w.MessageID(c, tt.rid, tt.resend); got != tt.want {
			t.Errorf("MessageID(%q, %d, %d) = %q, want %q", tt.host, tt.rid, tt.resend, got, tt.want)
		}
		if again := w.MessageID(c, tt.rid, tt.resend); again != tt.want {
			t.Errorf("MessageID is not stable: %q then %q", tt.want, again)
		}
	}
}

// TestLimitFor: the burst the GCRA gets keeps back the messages 50 ms of
// jitter could bunch together, never below one; and every allowed rate,
// down to notice.MinRate, is a whole number of messages per period with the
// messages exactly 1/rate apart (a rate of 0.00001 once became 0 per
// 10,000 s, and the limiter failed on every call).
func TestLimitFor(t *testing.T) {
	for _, tt := range []struct {
		rate              float64
		burst             int
		wantRate, wantBur int
		wantPeriod        time.Duration
	}{
		{50, 5, 50, 2, time.Second},      // 2.5 messages of jitter kept back
		{50, 0, 50, 2, time.Second},      // default burst rate/10
		{1000, 0, 1000, 50, time.Second}, // 100 less 50
		{10, 1, 10, 1, time.Second},      // never below one
		{0.5, 0, 5, 1, 10 * time.Second},
		{2.5, 0, 25, 1, 10 * time.Second},
		{notice.MinRate, 0, 1, 1, 1000 * time.Second},
		{0.0015, 0, 15, 1, 10000 * time.Second},
		{0.001234567, 0, 1234567, 1, 1000000000 * time.Second},
		{notice.MaxRate, 0, notice.MaxRate, 50000, time.Second},
	} {
		l := limitFor(tt.rate, tt.burst)
		if l.Rate != tt.wantRate || l.Burst != tt.wantBur || l.Period != tt.wantPeriod {
			t.Errorf("limitFor(%v, %d) = %+v, want rate %d burst %d period %s", tt.rate, tt.burst, l, tt.wantRate, tt.wantBur, tt.wantPeriod)
		}
	}
	for _, rate := range []float64{notice.MinRate, 0.001234, 0.001234567, 0.01, 1.0 / 3, 0.7, 2, 7.25, 333.333, notice.MaxRate} {
		l := limitFor(rate, 0)
		gap := l.Period.Seconds() / float64(l.Rate) // redis_rate's emission interval
		if l.Rate < 1 || math.Abs(gap*rate-1) > 2e-9 {
			t.Errorf("limitFor(%v) = %+v: messages %gs apart, want %gs", rate, l, gap, 1/rate)
		}
	}
}
