package faults_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/tasks"
)

// TestWorkerKilledMidCampaign: SIGKILL the only worker process halfway
// through 5,000 recipients and start a new one. Everyone is sent; the
// watchdog takes over the dead worker's chunks and claims after CLAIM_TTL
// (asynq alone would wait for its 30 s lease); duplicates are counted.
func TestWorkerKilledMidCampaign(t *testing.T) {
	const n, concurrency = 5000, 8
	h := newHarness(t, setup{Env: env{"WORKER_CONCURRENCY": fmt.Sprint(concurrency), "CLAIM_TTL": "2s"}})
	id, addrs := h.createCampaign(n, nil)
	first := h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(n/2, 60*time.Second)
	first.kill()
	killed := time.Now()
	atKill := h.sink.Count()
	h.startWorker(nil)
	c := h.wait(id, 60*time.Second, done)
	took := time.Since(killed)
	if c.Counts.Sent != n || c.Counts.Total != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	twice, extra := h.duplicates(addrs)
	t.Logf("SIGKILL after %d of %d messages; recovered and finished %.1fs later; %d recipients received a second copy (%d extra messages, worker concurrency %d)",
		atKill, n, took.Seconds(), twice, extra, concurrency)
	if extra > concurrency {
		t.Errorf("%d extra messages: more than one per worker goroutine (%d)", extra, concurrency)
	}
	if took > 25*time.Second {
		t.Errorf("recovery took %s: the watchdog did not take over expired leases", took)
	}
}

// TestWorkerSIGTERMMidCampaign: a worker stopped with SIGTERM hands back
// what it has not started, exits 0 within SHUTDOWN_TIMEOUT, and a new worker
// finishes the campaign with each recipient sent once.
func TestWorkerSIGTERMMidCampaign(t *testing.T) {
	const n = 2000
	h := newHarness(t, setup{Env: env{"SMTP_RATE": "400", "SMTP_BURST": "10", "SHUTDOWN_TIMEOUT": "5s"}})
	id, addrs := h.createCampaign(n, nil)
	w := h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(400, 30*time.Second)
	code, took := w.term(6 * time.Second)
	if code != 0 {
		t.Fatalf("worker exited %d after SIGTERM", code)
	}
	c := h.campaign(id)
	if c.Counts.Sending != 0 || c.Counts.Sent != h.sink.Count() {
		t.Errorf("after the stop: counts %+v, sink %d: in-flight work not finished or handed back", c.Counts, h.sink.Count())
	}
	t.Logf("SIGTERM: exited 0 after %s with %d of %d sent", took.Round(time.Millisecond), c.Counts.Sent, n)
	h.finishOnce(id, addrs)
}

// TestPauseResume: pause takes effect within a second; resume finishes the
// campaign with each recipient sent once.
func TestPauseResume(t *testing.T) {
	const n = 1500
	h := newHarness(t, setup{Env: env{"SMTP_RATE": "300", "SMTP_BURST": "10"}})
	id, addrs := h.createCampaign(n, nil)
	h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(300, 30*time.Second)
	if c := h.action(id, "pause"); c.Status != notice.CampaignPaused {
		t.Fatalf("pause answered status %s", c.Status)
	}
	time.Sleep(time.Second)
	c1 := h.sink.Count()
	time.Sleep(1500 * time.Millisecond)
	if c2 := h.sink.Count(); c2 != c1 {
		t.Errorf("paused, yet %d more messages went out more than 1s after the pause", c2-c1)
	}
	c := h.campaign(id)
	if c.Status != notice.CampaignPaused || c.Counts.Pending == 0 || c.Counts.Sending != 0 || c.Counts.Sent != c1 {
		t.Fatalf("while paused: status %s counts %+v, sink %d", c.Status, c.Counts, c1)
	}
	t.Logf("paused with %d of %d sent", c1, n)
	if c := h.action(id, "resume"); c.Status != notice.CampaignSending {
		t.Fatalf("resume answered status %s", c.Status)
	}
	c = h.wait(id, 60*time.Second, done)
	if c.Counts.Sent != n || h.sink.Count() != n {
		t.Fatalf("counts %+v, sink %d", c.Counts, h.sink.Count())
	}
	if twice, _ := h.duplicates(addrs); twice != 0 {
		t.Errorf("%d duplicates", twice)
	}
}

// TestCancel: cancelling mid-campaign marks every unsent recipient
// cancelled — including those waiting for a retry — the counts add up, and
// nothing goes out afterwards.
func TestCancel(t *testing.T) {
	const n = 1500
	greylist := func(rcpt string) bool {
		var i int
		fmt.Sscanf(rcpt, "u%05d@", &i)
		return i%7 == 0
	}
	h := newHarness(t, setup{
		Env: env{"SMTP_RATE": "300", "SMTP_BURST": "10", "RETRY_BASE": "2s"},
		Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
			if st == smtpsink.StageRcpt && greylist(rcpt) && k == 1 {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: greylisted}
			}
			return nil
		}},
	})
	id, addrs := h.createCampaign(n, nil)
	h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(300, 30*time.Second)
	before := h.campaign(id)
	if c := h.action(id, "cancel"); c.Status != notice.CampaignCancelled {
		t.Fatalf("cancel answered status %s", c.Status)
	}
	c := h.wait(id, 10*time.Second, func(c *notice.Campaign) bool { return c.Counts.Open() == 0 })
	settled := h.sink.Count()
	time.Sleep(2500 * time.Millisecond) // longer than RETRY_BASE: a stray retry would have run
	if after := h.sink.Count(); after != settled {
		t.Errorf("%d messages went out after the cancellation settled", after-settled)
	}
	c = h.campaign(id)
	cnt := c.Counts
	if c.Status != notice.CampaignCancelled || cnt.Sent+cnt.Cancelled+cnt.Failed != n || cnt.Total != n || cnt.Sent != h.sink.Count() || cnt.Cancelled == 0 {
		t.Fatalf("status %s counts %+v, sink %d", c.Status, cnt, h.sink.Count())
	}
	t.Logf("cancelled with %d retrying and %d sent; finally %d sent, %d cancelled", before.Counts.Retrying, before.Counts.Sent, cnt.Sent, cnt.Cancelled)
	per := h.sink.PerRecipient()
	var retriedThenCancelled int
	for _, r := range h.recipients(id) {
		got := per[strings.ToLower(r.Email)]
		switch r.Status {
		case notice.StatusSent:
			if got != 1 {
				t.Errorf("sent recipient %d received %d messages", r.ID, got)
			}
		case notice.StatusCancelled:
			if got != 0 {
				t.Errorf("cancelled recipient %d received %d messages", r.ID, got)
			}
			if r.Attempts > 0 {
				retriedThenCancelled++
			}
		default:
			t.Errorf("recipient %d is %s after cancel", r.ID, r.Status)
		}
	}
	if retriedThenCancelled == 0 {
		t.Error("no recipient waiting for a retry was cancelled: the test did not exercise that path")
	}
	_ = addrs
}

// TestSharedRateLimit: three worker processes share SMTP_RATE=50/s (burst
// 5) through Redis. Over a 30 s window the sink receives 1,500 ± 2% messages,
// no 1-second window holds more than 50 + burst, and waiting for the limit
// is not an attempt.
func TestSharedRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("a 33 s measurement")
	}
	const n, rate, burst, window = 1650, 50, 5, 30
	h := newHarness(t, setup{
		Env:  env{"SMTP_RATE": fmt.Sprint(rate), "SMTP_BURST": fmt.Sprint(burst), "WORKER_CONCURRENCY": "4"},
		Sink: smtpsink.Options{Keep: true},
	})
	id, addrs := h.createCampaign(n, nil)
	for range 3 {
		h.startWorker(nil)
	}
	time.Sleep(300 * time.Millisecond) // let all three take part from the start
	h.action(id, "start")
	c := h.wait(id, 60*time.Second, done)
	if c.Counts.Sent != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	var at []time.Time
	for _, m := range h.sink.Messages() {
		at = append(at, m.Received)
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	// The measured window starts one second in, past the initial burst.
	from := at[0].Add(time.Second)
	to := from.Add(window * time.Second)
	inWindow := 0
	for _, x := range at {
		if !x.Before(from) && x.Before(to) {
			inWindow++
		}
	}
	want := window * rate
	if d := inWindow - want; d < -want/50 || d > want/50 {
		t.Errorf("%d messages in %d s, want %d ± 2%%", inWindow, window, want)
	}
	peak := 0
	for i := range at {
		j, _ := slices.BinarySearchFunc(at, at[i].Add(time.Second), func(a, b time.Time) int { return a.Compare(b) })
		peak = max(peak, j-i)
	}
	if peak > rate+burst {
		t.Errorf("a 1-second window held %d messages, more than %d + %d", peak, rate, burst)
	}
	total := at[len(at)-1].Sub(at[0])
	t.Logf("3 workers, SMTP_RATE=%d burst %d: %d messages in the %d s window (want %d ± 2%%), busiest 1 s window %d, %d messages in %.2fs overall",
		rate, burst, inWindow, window, want, peak, n, total.Seconds())
	for _, r := range h.recipients(id) {
		if r.Attempts != 1 {
			t.Errorf("recipient %d: %d attempts; waiting for the limit must not count", r.ID, r.Attempts)
		}
	}
	if twice, _ := h.duplicates(addrs); twice != 0 {
		t.Errorf("%d duplicates", twice)
	}
}

// TestRedisRestartMidCampaign: the Redis holding queue and state (append-only
// file on) is restarted in the middle of a campaign. The campaign finishes
// with nothing lost and nothing sent twice.
func TestRedisRestartMidCampaign(t *testing.T) {
	const n = 3000
	h := newHarness(t, setup{PrivateRedis: true, Env: env{"CLAIM_TTL": "3s"}})
	id, addrs := h.createCampaign(n, nil)
	h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(800, 30*time.Second)
	h.redis.Shutdown(t)
	down := h.sink.Count()
	time.Sleep(time.Second)
	h.redis.Start(t)
	c := h.wait(id, 60*time.Second, done)
	if c.Counts.Sent != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	twice, extra := h.duplicates(addrs)
	if twice != 0 || h.sink.Count() != n {
		t.Errorf("%d recipients got %d extra copies; sink %d", twice, extra, h.sink.Count())
	}
	t.Logf("Redis restarted after %d of %d messages; campaign done, %d duplicates", down, n, extra)
}

// TestLostChunkTasks: a campaign whose chunk tasks vanished (Redis ran
// asynq's dequeue but went down before the worker got the reply) is found
// stalled by the watchdog and finished, long before asynq's own recovery.
func TestLostChunkTasks(t *testing.T) {
	const n = 500
	h := newHarness(t, setup{})
	id, addrs := h.createCampaign(n, nil)
	c := h.action(id, "start")
	// Simulate the loss: the fan-out is recorded as done, no task is left.
	ctx := context.Background()
	if err := h.store.SetFanoutCursor(ctx, id, 1, n+1); err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(h.rdb).DeleteAllPendingTasks(tasks.QueueBulk); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.startWorker(nil)
	c = h.wait(id, 20*time.Second, done)
	if c.Counts.Sent != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	if twice, _ := h.duplicates(addrs); twice != 0 {
		t.Errorf("%d duplicates", twice)
	}
	t.Logf("stalled campaign recovered and finished in %.1fs", time.Since(start).Seconds())
}

// TestCancelAfterWorkerCrash: the only worker dies with recipients claimed,
// then the campaign is cancelled. The watchdog settles the dead claims as
// cancelled, so the counts add up instead of showing "sending" for ever.
func TestCancelAfterWorkerCrash(t *testing.T) {
	const n = 500
	// A slow server, so that the worker dies with messages in flight.
	h := newHarness(t, setup{Sink: smtpsink.Options{Delay: 300 * time.Millisecond}})
	id, _ := h.createCampaign(n, nil)
	w := h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(40, 30*time.Second)
	w.kill()
	if c := h.action(id, "cancel"); c.Counts.Sending == 0 {
		t.Fatalf("no claim left by the dead worker: %+v", c.Counts)
	}
	h.startWorker(nil)
	c := h.wait(id, 15*time.Second, func(c *notice.Campaign) bool { return c.Counts.Open() == 0 })
	cnt := c.Counts
	if c.Status != notice.CampaignCancelled || cnt.Sent+cnt.Cancelled != n || cnt.Sent > h.sink.Count() {
		t.Fatalf("status %s counts %+v sink %d", c.Status, cnt, h.sink.Count())
	}
	t.Logf("after the crash and cancel: %d sent (sink %d), %d cancelled", cnt.Sent, h.sink.Count(), cnt.Cancelled)
}

// TestWorkerKilledDuringFanout: the worker that splits a campaign into
// chunk tasks is SIGKILLed as soon as the fan-out has handed out its first
// window of chunks, with chunks queued, chunks running and the rest still
// behind the cursor. The tasks it was running stay asynq's "active" tasks
// until asynq's lease recovery (a minute or more); the watchdog of a new
// worker takes their expired chunk leases over, the queued chunks run, and
// each chunk that ends hands out the next, so every recipient is sent, each
// once (but for the crash window of the messages in flight).
func TestWorkerKilledDuringFanout(t *testing.T) {
	const n, concurrency = 6000, 8
	// One recipient per chunk: 6,000 chunks, most of them still behind the
	// cursor when the worker dies.
	h := newHarness(t, setup{Env: env{"WORKER_CONCURRENCY": fmt.Sprint(concurrency), "CHUNK_SIZE": "1", "CLAIM_TTL": "2s"}})
	id, addrs := h.createCampaign(n, nil)
	first := h.startWorker(nil)
	h.action(id, "start")
	ctx := context.Background()
	var cur int64
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("fan-out cursor never got past 1 (at %d)", cur)
		}
		st, err := h.store.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cur, err = h.store.FanoutCursor(ctx, id, st.Gen); err != nil {
			t.Fatal(err)
		}
		if cur > 1 {
			break
		}
	}
	first.kill()
	if cur > n {
		t.Fatalf("the fan-out finished (cursor %d) before the worker was killed; make it longer", cur)
	}
	killed := time.Now()
	h.startWorker(nil)
	c := h.wait(id, 60*time.Second, done)
	took := time.Since(killed)
	if c.Counts.Sent != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	twice, extra := h.duplicates(addrs)
	t.Logf("SIGKILL with the fan-out at recipient %d of %d; finished %.1fs later; %d extra messages", cur, n, took.Seconds(), extra)
	if extra > concurrency {
		t.Errorf("%d recipients got %d extra copies: more than one per worker goroutine (%d)", twice, extra, concurrency)
	}
	if took > 25*time.Second {
		t.Errorf("took %s: the fan-out waited for asynq's lease recovery instead of the watchdog", took)
	}
}

// TestWorkerSIGTERMSlowServer: SIGTERM while messages are in flight to a
// server that takes a second to accept each. The worker takes nothing new,
// waits for the ones in flight (SHUTDOWN_TIMEOUT is longer), records them,
// and exits 0; a new worker sends the rest, nobody twice.
func TestWorkerSIGTERMSlowServer(t *testing.T) {
	const n = 24
	h := newHarness(t, setup{
		Env:  env{"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "6", "SHUTDOWN_TIMEOUT": "5s"},
		Sink: smtpsink.Options{Delay: time.Second},
	})
	id, addrs := h.createCampaign(n, nil)
	w := h.startWorker(nil)
	h.action(id, "start")
	h.waitCount(4, 30*time.Second)     // the first four are in
	time.Sleep(300 * time.Millisecond) // the next four are in flight (a second each)
	code, took := w.term(8 * time.Second)
	if code != 0 {
		t.Fatalf("worker exited %d after SIGTERM", code)
	}
	c := h.campaign(id)
	if c.Counts.Sending != 0 || c.Counts.Sent != h.sink.Count() || c.Counts.Sent <= 4 {
		t.Errorf("after the stop (%s): counts %+v, sink %d; want the in-flight messages finished and recorded", took, c.Counts, h.sink.Count())
	}
	t.Logf("SIGTERM with messages in flight: exited 0 after %s with %d of %d sent", took.Round(time.Millisecond), c.Counts.Sent, n)
	h.finishOnce(id, addrs)
}

// finishOnce starts a new worker and checks that it finishes campaign id
// with every one of addrs sent exactly once.
func (h *harness) finishOnce(id string, addrs []string) {
	h.t.Helper()
	h.startWorker(nil)
	c := h.wait(id, 60*time.Second, done)
	if c.Counts.Sent != int64(len(addrs)) {
		h.t.Fatalf("counts %+v", c.Counts)
	}
	if twice, extra := h.duplicates(addrs); twice != 0 {
		h.t.Errorf("%d recipients got %d extra copies", twice, extra)
	}
}
