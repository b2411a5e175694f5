package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/tasks"
)

// logLines keeps a service's log for tests of what it logs.
type logLines struct{ testenv.LogBuffer }

// count is how many lines hold every one of subs.
func (l *logLines) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// fairStack is API and worker in this process over this package's Redis
// database and an SMTP sink that notes when each message of the "slow."
// domain reached it.
type fairStack struct {
	*teststack.Stack
	sink *smtpsink.Sink
	logs *logLines
	insp *asynq.Inspector

	mu   sync.Mutex
	slow []time.Time
}

// fairDelay is how long the test server takes over each message.
const fairDelay = 20 * time.Millisecond

func startFair(t *testing.T, env map[string]string, level slog.Level) *fairStack {
	t.Helper()
	rdb, url := testenv.Redis(t, testenv.DBWorker)
	f := &fairStack{logs: &logLines{}, insp: asynq.NewInspectorFromRedisClient(rdb)}
	// Every message takes the server 20 ms: the fast campaign's speed
	// is then set by the slots it gets (8 × 50 msg/s at most), not by how
	// busy the machine's two cores are, so alone and beside compare the
	// slots and not the noise.
	sink, err := smtpsink.Start(smtpsink.Options{Delay: fairDelay, Reply: func(stage smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageData && strings.HasSuffix(rcpt, "@slow.example.jp") {
			f.mu.Lock()
			f.slow = append(f.slow, time.Now())
			f.mu.Unlock()
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	f.sink = sink
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "fair"}
	for k, v := range env {
		vars[k] = v
	}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: level}))
	f.Stack = teststack.StartStackLog(t, testenv.Config(t, vars), service.Options{API: true, Worker: true}, log)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log (last 4 KB):\n%s", tail(f.logs.String(), 4096))
		}
	})
	return f
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// campaign creates a campaign of n recipients at domain through the API
// (rate 0: none of its own), recipients added through the store.
func (f *fairStack) campaign(t *testing.T, name, domain string, rate float64, n int) string {
	t.Helper()
	extra := map[string]any{"name": name}
	if rate > 0 {
		extra["rate"] = rate
	}
	var c notice.Campaign
	if code, body := teststack.Do(t, f.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(extra), &c); code != 201 {
		t.Fatalf("create %s: %d %s", name, code, body)
	}
	rs := make([]notice.Recipient, 0, 1000)
	for i := 1; i <= n; i++ {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("%s%05d@%s", name, i, domain), Locale: "ja", CardLast4: "1234"})
		if len(rs) == cap(rs) || i == n {
			if _, err := f.Svc.Store.AddRecipients(context.Background(), c.ID, rs); err != nil {
				t.Fatal(err)
			}
			rs = rs[:0]
		}
	}
	return c.ID
}

// active is how many bulk and paced tasks run now.
func (f *fairStack) active(t *testing.T) int {
	t.Helper()
	n := 0
	for _, q := range []string{tasks.QueueBulk, tasks.QueuePaced} {
		tasks, err := f.insp.ListActiveTasks(q)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		n += len(tasks)
	}
	return n
}

func (f *fairStack) action(t *testing.T, id, a string) {
	t.Helper()
	if code, body := teststack.Do(t, f.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+id+"/"+a, "", nil, nil); code >= 300 {
		t.Fatalf("%s %s: %d %s", a, id, code, body)
	}
}

func (f *fairStack) get(t *testing.T, id string) *notice.Campaign {
	t.Helper()
	c, err := f.Svc.Store.Campaign(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run starts a fast campaign of n and returns its throughput, from its
// started_at and finished_at as Redis recorded them.
func (f *fairStack) run(t *testing.T, name string, n int, timeout time.Duration) float64 {
	t.Helper()
	id := f.campaign(t, name, "fast.example.jp", 0, n)
	f.action(t, id, "start")
	deadline := time.Now().Add(timeout)
	for {
		c := f.get(t, id)
		if c.Status == notice.CampaignDone {
			if c.Counts.Sent != int64(n) {
				t.Fatalf("%s: counts %+v", name, c.Counts)
			}
			return float64(n) / c.FinishedAt.Sub(*c.StartedAt).Seconds()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d sent after %s", name, c.Counts.Sent, n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestRateLimitedCampaignLeavesOthersTheirSpeed: a campaign limited to 2
// messages a second with thousands of recipients used to park every bulk
// slot waiting for its turn, and a second campaign waited for the whole of
// it. Now its chunks give their slot back while they wait: a fast campaign
// beside it keeps at least 80% of the throughput it has alone (medians of
// runs alone and beside it, interleaved, so that the load of a shared
// machine hits both alike). The slow one keeps to its rate and sends
// nobody twice.
func TestRateLimitedCampaignLeavesOthersTheirSpeed(t *testing.T) {
	testenv.Slow(t, "throughput measurements")
	f := startFair(t, map[string]string{"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "20"}, slog.LevelWarn)
	const fast, rounds, rate = 2000, 5, 2.0
	slow := f.campaign(t, "slow", "slow.example.jp", rate, 5000)
	var alone, beside []float64
	var slowTime time.Duration
	var slowSent int64
	started := false
	runBeside := func(round int) {
		if !started {
			f.action(t, slow, "start")
			started = true
		} else {
			f.action(t, slow, "resume")
		}
		sent := f.get(t, slow).Counts.Sent
		teststack.Eventually(t, "the slow campaign sending", 10*time.Second, func() bool { return f.get(t, slow).Counts.Sent > sent })
		from, sent := time.Now(), f.get(t, slow).Counts.Sent
		beside = append(beside, f.run(t, fmt.Sprintf("beside%d", round), fast, 60*time.Second))
		slowTime += time.Since(from)
		slowSent += f.get(t, slow).Counts.Sent - sent
		f.action(t, slow, "pause")
	}
	for round := range rounds {
		// Alone then beside, then the other way round: a machine whose
		// speed drifts slows both alike.
		if round%2 == 1 {
			runBeside(round)
		}
		alone = append(alone, f.run(t, fmt.Sprintf("alone%d", round), fast, 60*time.Second))
		if round%2 == 0 {
			runBeside(round)
		}
	}
	a, b := median(alone), median(beside)
	slowRate := float64(slowSent) / slowTime.Seconds()
	t.Logf("fast campaign of %d: alone %.0f msg/s (runs %.0f), beside a campaign at %g/s %.0f msg/s (runs %.0f): %.0f%%; meanwhile the slow one sent %d in %.1fs, %.2f msg/s",
		fast, a, alone, rate, b, beside, 100*b/a, slowSent, slowTime.Seconds(), slowRate)
	if b < 0.8*a {
		t.Errorf("beside the rate-limited campaign the fast one went at %.0f msg/s, below 80%% of its %.0f msg/s alone", b, a)
	}
	// A rate is a limit, not a promise; but the slow campaign should not
	// starve behind the fast one either.
	if slowRate < rate/2 {
		t.Errorf("beside the fast campaign the slow one sent %.2f msg/s, below half its rate of %g", slowRate, rate)
	}

	// The slow campaign kept to its rate: in any 2 s, at most 2 × 2 + the
	// burst of 1, with 100 ms for the way to the sink.
	f.mu.Lock()
	times := slices.Clone(f.slow)
	f.mu.Unlock()
	slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < 2*time.Second-100*time.Millisecond {
			j++
		}
		if j-i > 5 {
			t.Fatalf("%d messages of the 2/s campaign within 2 s at %s", j-i, times[i].Format("15:04:05.000"))
		}
	}
	teststack.Eventually(t, "the slow campaign's messages recorded", 5*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return int64(len(f.slow)) == f.get(t, slow).Counts.Sent
	})
	for addr, n := range f.sink.PerRecipient() {
		if n != 1 {
			t.Errorf("%s received %d copies", addr, n)
		}
	}
}

// TestBigCampaignDoesNotStarveSmallOne: a second campaign started while a
// big one sends used to queue behind every chunk of the first, and finished
// with it. Now the big one only ever has a window of chunks queued: the
// small one is done while the big one is far from it.
func TestBigCampaignDoesNotStarveSmallOne(t *testing.T) {
	testenv.Slow(t, "a 20,000-recipient campaign")
	f := startFair(t, map[string]string{"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "50"}, slog.LevelWarn)
	const big, small = 20000, 200
	bigID := f.campaign(t, "big", "big.example.jp", 0, big)
	smallID := f.campaign(t, "small", "small.example.jp", 0, small)
	f.action(t, bigID, "start")
	teststack.Eventually(t, "the big campaign under way", 60*time.Second, func() bool { return f.get(t, bigID).Counts.Sent >= 1000 })
	f.action(t, smallID, "start")
	teststack.Eventually(t, "the small campaign done", 120*time.Second, func() bool { return f.get(t, smallID).Status == notice.CampaignDone })
	sent := f.get(t, bigID).Counts.Sent
	t.Logf("the small campaign of %d was done when the big one had sent %d of %d", small, sent, big)
	if sent > big/2 {
		t.Errorf("the small campaign finished only after the big one had sent %d of %d", sent, big)
	}
	teststack.Do(t, f.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+bigID+"/cancel", "", nil, nil)
	if got := f.get(t, smallID).Counts.Sent; got != small {
		t.Errorf("small campaign: %d sent", got)
	}
}

// TestRateWaitHoldsNoSlot: a campaign at one message every 4 s holds no
// worker slot between its messages (its chunk used to wait inside the
// handler), and the watchdog, sweeping every 500 ms, neither takes the
// waiting campaign for stalled nor steals its chunk: each message goes out
// once, on time.
func TestRateWaitHoldsNoSlot(t *testing.T) {
	testenv.Slow(t, "rate waits of seconds")
	f := startFair(t, map[string]string{"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "CLAIM_TTL": "1s"}, slog.LevelInfo)
	const rate = 0.25
	id := f.campaign(t, "paced", "slow.example.jp", rate, 20)
	f.action(t, id, "start")
	teststack.Eventually(t, "the first message", 10*time.Second, func() bool { return f.get(t, id).Counts.Sent >= 1 })
	start := time.Now()
	samples, busy, leased := 0, 0, 0
	for time.Since(start) < 10*time.Second {
		if f.active(t) > 0 {
			busy++
		}
		if n, err := f.Svc.Store.LiveLeases(context.Background(), id); err == nil && n > 0 {
			leased++
		}
		samples++
		time.Sleep(50 * time.Millisecond)
	}
	c := f.get(t, id)
	t.Logf("%d samples over 10 s: a chunk task active in %d, the chunk leased in %d; %d sent", samples, busy, leased, c.Counts.Sent)
	if busy > samples/10 {
		t.Errorf("a chunk task held a worker slot in %d of %d samples while its campaign waited for its rate", busy, samples)
	}
	if leased < samples*9/10 {
		t.Errorf("the waiting chunk was leased in only %d of %d samples", leased, samples)
	}
	// Sent at 0 s, then about 4, 8 and 12 s later: 3 or 4 by now.
	if c.Counts.Sent < 3 || c.Counts.Sent > 4 {
		t.Errorf("%d sent in about 10 s at one message every 4 s, want 3 or 4", c.Counts.Sent)
	}
	for _, what := range []string{"stalled", "recovered work"} {
		if n := f.logs.count(what); n > 0 {
			t.Errorf("the watchdog logged %q %d times for a campaign waiting for its rate", what, n)
		}
	}
	for addr, n := range f.sink.PerRecipient() {
		if n != 1 {
			t.Errorf("%s received %d copies", addr, n)
		}
	}
}

// TestLimiterFailureBacksOffAndCancelStops: a rate limiter that fails on
// every call (here its key holds the wrong type; a rate of 0.00001 once made
// it fail the same way) used to be asked again every 100 ms by every chunk,
// each time with a warning, and the chunks never noticed a cancel. Now the
// asks back off, the warning comes once, nothing is sent unlimited, and a
// cancel ends the campaign's chunks.
func TestLimiterFailureBacksOffAndCancelStops(t *testing.T) {
	testenv.Slow(t, "limiter back-off")
	f := startFair(t, map[string]string{"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10"}, slog.LevelDebug)
	ctx := context.Background()
	id := f.campaign(t, "broken", "slow.example.jp", 5, 100)
	// redis_rate keeps a limit under "rate:" + its key.
	if err := f.Svc.Redis.HSet(ctx, "rate:"+f.Svc.Store.RateKey(id), "not", "a rate").Err(); err != nil {
		t.Fatal(err)
	}
	f.action(t, id, "start")
	time.Sleep(4 * time.Second)
	tries, warnings := f.logs.count("rate limiter failed"), f.logs.count("level=WARN", "rate limiter")
	t.Logf("in 4 s: the limiter asked %d times, %d warnings", tries, warnings)
	if warnings > 1 {
		t.Errorf("%d warnings about the failing limiter in 4 s, want one", warnings)
	}
	if tries < 2 || tries > 10 {
		t.Errorf("the failing limiter was asked %d times in 4 s, want a few, further and further apart", tries)
	}
	if c := f.get(t, id); c.Counts.Sent != 0 {
		t.Fatalf("%d sent without the rate limit", c.Counts.Sent)
	}

	f.action(t, id, "cancel")
	teststack.Eventually(t, "the cancelled campaign's chunks ended", 30*time.Second, func() bool {
		n, err := f.Svc.Store.LiveLeases(ctx, id)
		return err == nil && n == 0 && f.active(t) == 0
	})
	after := f.logs.count("rate limiter failed")
	time.Sleep(2 * time.Second)
	if more := f.logs.count("rate limiter failed") - after; more > 0 {
		t.Errorf("the limiter was asked %d more times for a cancelled campaign", more)
	}
	if c := f.get(t, id); c.Status != notice.CampaignCancelled || c.Counts.Cancelled != 100 {
		t.Errorf("status %s counts %+v", c.Status, c.Counts)
	}
}
