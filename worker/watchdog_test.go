package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// watchdogFixture is a sending campaign of n recipients whose fan-out is
// done, on the worker package's test Redis, and a Worker with the default
// CLAIM_TTL (2 minutes) that only sweeps (it runs no tasks).
func watchdogFixture(t *testing.T, n int) (*Worker, *store.Store, *asynq.Inspector, string, store.CampaignState) {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBWorker)
	st := store.New(rdb, "wd")
	q := asynq.NewClientFromRedisClient(rdb)
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := st.CreateCampaign(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rs []notice.Recipient
	for i := 1; i <= n; i++ {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("u%d@example.jp", i)})
	}
	if _, err := st.AddRecipients(ctx, c.ID, rs); err != nil {
		t.Fatal(err)
	}
	tr, err := st.Start(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := st.State(ctx, c.ID)
	if err := st.SetFanoutCursor(ctx, c.ID, tr.Gen, cs.Seq+1); err != nil {
		t.Fatal(err)
	}
	// The bulk queue exists (asynq knows it) and is empty: the fan-out's
	// chunk tasks ran, or were lost with a primary.
	if err := tasks.Chunk(ctx, q, tasks.ChunkPayload{CampaignID: c.ID, Gen: 0, From: 1, To: 2}, "old"); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if _, err := insp.DeleteAllPendingTasks(tasks.QueueBulk); err != nil {
		t.Fatal(err)
	}
	w := New(Config{ChunkSize: 5}, st, q, nil, nil, slog.New(slog.DiscardHandler))
	return w, st, insp, c.ID, cs
}

func bulkTasks(t *testing.T, insp *asynq.Inspector, prefix string) []string {
	t.Helper()
	var out []string
	queue := tasks.QueueBulk
	if strings.HasPrefix(prefix, "rc:") {
		queue = tasks.QueueRecipients // one recipient's task
	}
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListPendingTasks, insp.ListScheduledTasks} {
		ts, err := list(queue)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		for _, ti := range ts {
			if strings.HasPrefix(ti.ID, prefix) {
				out = append(out, ti.ID)
			}
		}
	}
	return out
}

// TestWatchdogFindsStallInSeconds: after a failover that lost the chunk
// tasks, their leases and their claims, recipients sit pending with nothing
// working on them, while another recipient is still "sending" (a claim of
// another process, live) and a chunk lease left from before the failover
// has not expired. The watchdog re-enqueues the pending chunks within
// seconds, with the default CLAIM_TTL of 2 minutes (it used to take two
// sweeps a minute apart, and never while anything was "sending").
func TestWatchdogFindsStallInSeconds(t *testing.T) {
	testenv.Slow(t, "waits for stalls")
	w, st, insp, cid, cs := watchdogFixture(t, 12)
	ctx := context.Background()
	for rid := int64(1); rid <= 4; rid++ {
		tok := "other." + fmt.Sprint(rid)
		st.Do(ctx, cid, store.Step{Token: tok, ClaimID: rid, ClaimTTL: time.Minute, Gen: cs.Gen})
		if rid < 4 {
			at := time.Now()
			st.Do(ctx, cid, store.Step{Token: tok, FinishID: rid, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at}})
		}
	}
	// The lease of a chunk task that finished on the old primary: its
	// deadline is still 100 s away, but nobody has renewed it for 20 s.
	if err := st.SetChunkLease(ctx, cid, 6, time.Now().Add(100*time.Second)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Watch(wctx)
	start := time.Now()
	for len(bulkTasks(t, insp, "chunk:"+cid)) == 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no chunk re-enqueued after %s", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	found := time.Since(start)
	// The sweep enqueues them one after the other: let it finish.
	got := bulkTasks(t, insp, "chunk:"+cid)
	for end := time.Now().Add(3 * time.Second); len(got) < 3 && time.Now().Before(end); got = bulkTasks(t, insp, "chunk:"+cid) {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("stalled campaign found in %s: %v", found.Round(time.Millisecond), got)
	if len(got) != 3 {
		t.Errorf("re-enqueued %v, want the 3 chunks holding pending recipients (1-5, 6-10, 11-12)", got)
	}
	// The stall is recorded for the API's metrics (state "stalled") until
	// the campaign moves again.
	var wv store.Watch
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if wv, _ = st.Watch(ctx, cid); wv.StalledAt != nil {
			break
		}
	}
	if wv.ProgressAt == nil || wv.StalledAt.Before(*wv.ProgressAt) {
		t.Errorf("watch %+v: stalled before its last progress", wv)
	}
}

// TestWatchdogTakesOverOrphanedClaims: a claim this process took for a task
// that has since ended — its outcome was written, then lost with the
// primary — is handed over at the next sweep, not when CLAIM_TTL (2 min)
// runs out; a claim of a task still running is left alone.
func TestWatchdogTakesOverOrphanedClaims(t *testing.T) {
	w, st, insp, cid, cs := watchdogFixture(t, 3)
	ctx := context.Background()
	ended := w.begin()
	w.end(ended)
	running := w.begin()
	defer w.end(running)
	for rid, tok := range map[int64]string{1: ended, 2: running} {
		if r, _ := st.Do(ctx, cid, store.Step{Token: tok, ClaimID: rid, ClaimTTL: 2 * time.Minute, Gen: cs.Gen}); !r.Claimed {
			t.Fatalf("claim %d", rid)
		}
	}
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := bulkTasks(t, insp, "rc:"+cid); len(got) != 1 || !strings.HasPrefix(got[0], fmt.Sprintf("rc:%s:1:", cid)) {
		t.Fatalf("deliver tasks after one sweep: %v, want one for recipient 1", got)
	}
	// The task that takes it over marks the possible duplicate.
	if r, _ := st.Do(ctx, cid, store.Step{Token: "next", ClaimID: 1, ClaimTTL: time.Minute, ClaimRetrying: true}); !r.Claimed || !r.Doubted {
		t.Fatalf("takeover of the orphan: %+v", r)
	}
	if r, _ := st.Do(ctx, cid, store.Step{Token: "next", ClaimID: 2, ClaimTTL: time.Minute, ClaimRetrying: true}); r.Claimed || !r.Busy {
		t.Fatalf("the running task's claim was handed over: %+v", r)
	}
}

// TestStallFoundBesideAnotherCampaign: another campaign's chunk waiting in
// the shared bulk queue says nothing about this one. A campaign that lost
// its tasks, leases and claims (a failover) is found in seconds while others
// send, not once they are through (the watchdog used to require the whole
// bulk queue empty).
func TestStallFoundBesideAnotherCampaign(t *testing.T) {
	testenv.Slow(t, "waits for stalls")
	w, _, insp, cid, _ := watchdogFixture(t, 12)
	ctx := context.Background()
	if err := tasks.Chunk(ctx, w.queue, tasks.ChunkPayload{CampaignID: "other", Gen: 1, From: 1, To: 2}, "x"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := w.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(bulkTasks(t, insp, "chunk:"+cid)); n > 0 {
			// Enqueued again with leases: the next sweeps do not pile more on.
			for range 3 {
				time.Sleep(w.sweepEvery())
				if err := w.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if m := len(bulkTasks(t, insp, "chunk:"+cid)); m != n {
				t.Errorf("%d chunk tasks after more sweeps, want the %d enqueued once", m, n)
			}
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("stall not found in 15 s while another campaign has a chunk queued")
}

// TestStallFoundBehindLeftoverLease: a failover can roll the lease set back
// to before chunks finished, leaving the lease of a task that no longer
// exists, alive for minutes (a queued chunk's lasts 5 × CLAIM_TTL). A
// campaign with pending recipients, none being sent and no progress for
// 15 s is stalled whatever its leases say.
func TestStallFoundBehindLeftoverLease(t *testing.T) {
	testenv.Slow(t, "waits for stalls")
	w, st, insp, cid, _ := watchdogFixture(t, 12)
	ctx := context.Background()
	if err := st.SetChunkLease(ctx, cid, 6, time.Now().Add(w.queuedTTL())); err != nil {
		t.Fatal(err)
	}
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(bulkTasks(t, insp, "chunk:"+cid)); n != 0 {
		t.Fatalf("%d chunk tasks at the first sweep: the lease should still count then", n)
	}
	// As if that sweep had been a minute and a half ago.
	w.mu.Lock()
	p := w.progress[cid]
	p.since = p.since.Add(-90 * time.Second)
	w.progress[cid] = p
	w.mu.Unlock()
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(bulkTasks(t, insp, "chunk:"+cid)); n == 0 {
		t.Fatal("no chunk enqueued again after a minute and a half without progress behind a leftover lease")
	}
}

// TestForgetPurged: a worker drops its per-campaign message counters once
// the campaign is purged (or gone), and keeps those of the others.
func TestForgetPurged(t *testing.T) {
	w, st, _, cid, _ := watchdogFixture(t, 3)
	ctx := context.Background()
	gone := &notice.Campaign{Name: "gone", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := st.CreateCampaign(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cancel(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Purge(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	metrics.CountMessages(cid, "sent", 1)
	metrics.CountMessages(gone.ID, "sent", 2)
	metrics.CountMessages("deleted-long-ago", "failed", 1)
	if err := w.ForgetPurged(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(metrics.Messages); n != 1 {
		t.Errorf("%d series of oshirase_messages_total left, want only the live campaign's", n)
	}
	if got := testutil.ToFloat64(metrics.Messages.WithLabelValues(cid, "sent")); got != 1 {
		t.Errorf("the live campaign's count is %v, want 1", got)
	}
	if slices.Contains(metrics.CountedCampaigns(), gone.ID) {
		t.Error("the purged campaign is still tracked")
	}
}

// TestChunkErrorSaysRecipients: a chunk task's error, as asynqmon shows it,
// says what became of the chunk's recipients and with which replies, and
// still tells asynq how to retry.
func TestChunkErrorSaysRecipients(t *testing.T) {
	var tl tally
	d := func(code int, enh string) *notice.Delivery { return &notice.Delivery{LastCode: code, Enhanced: enh} }
	for _, s := range []store.Step{
		{Finish: notice.StatusSent}, {Finish: notice.StatusSent},
		{Finish: notice.StatusFailed, Delivery: d(550, "5.1.1")}, {Finish: notice.StatusFailed, Delivery: d(550, "5.1.1")},
		{Finish: notice.StatusRetrying, Delivery: d(451, "4.7.1")}, {Finish: notice.StatusRetrying, Delivery: d(0, "")},
	} {
		tl.add(s)
	}
	err := tl.wrap(tasks.ChunkPayload{From: 101, To: 201}, &retryError{Delay: time.Second, Failure: true, Err: errors.New("record outcome: redis down")})
	want := "chunk of recipients 101–200: 2 sent, 2 failed, 2 retrying (451 4.7.1 ×1, 550 5.1.1 ×2, no reply ×1); then the task stopped: record outcome: redis down"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
	if RetryDelay(1, err, nil) != time.Second || !IsFailure(err) {
		t.Error("the wrapped error lost its retry delay")
	}
}
