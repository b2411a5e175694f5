package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// TestStepPossibleDuplicate: a recipient whose first attempt never recorded
// its outcome (its claim expired and was taken over, or handed over by the
// watchdog), or that two attempts both recorded sent, is marked: on the
// campaign's counts once, and in its delivery with both attempts' times.
func TestStepPossibleDuplicate(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 4)
	tr, _ := s.Start(ctx, c.ID)
	do := func(st store.Step) store.StepResult {
		t.Helper()
		res, err := s.Do(ctx, c.ID, st)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	sent := func(tok string, rid int64, at time.Time) store.Step {
		return store.Step{Token: tok, FinishID: rid, Finish: notice.StatusSent,
			Delivery: &notice.Delivery{Attempts: 1, SentAt: &at, History: []notice.Attempt{{At: at, OK: true, Code: 250}}}}
	}

	// 1: a's claim expires mid-send (a crash, a frozen process); b takes over.
	do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: 20 * time.Millisecond, Gen: tr.Gen})
	first := time.Now()
	time.Sleep(40 * time.Millisecond)
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}); !r.Claimed || !r.Doubted {
		t.Fatalf("takeover of an expired claim: %+v, want claimed and doubted", r)
	}
	bAt := time.Now().UTC().Truncate(time.Millisecond)
	do(sent("b", 1, bAt))
	// Running the same step again (a lost reply) is not a second sending.
	if r := do(sent("b", 1, bAt)); r.Doubted {
		t.Fatalf("the same step twice counted as a duplicate: %+v", r)
	}

	// 2: two attempts both recorded sent (a's outcome arrives after b's).
	do(store.Step{Token: "a", ClaimID: 2, ClaimTTL: 20 * time.Millisecond, Gen: tr.Gen})
	time.Sleep(40 * time.Millisecond)
	do(store.Step{Token: "b", ClaimID: 2, ClaimTTL: time.Minute, Gen: tr.Gen})
	t1 := time.Now().UTC().Truncate(time.Millisecond)
	do(sent("b", 2, t1))
	if r := do(sent("a", 2, t1.Add(5*time.Millisecond))); !r.Doubted {
		t.Fatalf("a second sent: %+v, want doubted", r)
	}

	// 3: the watchdog hands over a dead worker's claim; the retry task
	// that takes it marks the doubt too.
	do(store.Step{Token: "a", ClaimID: 3, ClaimTTL: 10 * time.Millisecond, Gen: tr.Gen})
	time.Sleep(30 * time.Millisecond)
	if st, err := s.Steal(ctx, c.ID, time.Minute); err != nil || len(st.Recipients) != 1 {
		t.Fatalf("steal: %+v %v", st, err)
	}
	if r := do(store.Step{Token: "c", ClaimID: 3, ClaimTTL: time.Minute, ClaimRetrying: true}); !r.Claimed || !r.Doubted {
		t.Fatalf("retry after a handover: %+v", r)
	}
	// 4: an ordinary send: no doubt.
	do(store.Step{Token: "a", ClaimID: 4, ClaimTTL: time.Minute, Gen: tr.Gen})
	if r := do(sent("a", 4, time.Now())); r.Doubted {
		t.Fatalf("an ordinary send doubted: %+v", r)
	}

	got, err := s.Campaign(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counts.PossibleDuplicate != 3 {
		t.Errorf("possible_duplicate = %d, want 3 (recipients 1, 2, 3, each once)", got.Counts.PossibleDuplicate)
	}
	r1, _ := s.Recipient(ctx, c.ID, 1)
	d := r1.PossibleDuplicate
	if d == nil || d.Reason != "takeover" || len(d.Attempts) != 2 || d.Attempts[0].Sub(first).Abs() > time.Second || !d.Attempts[1].After(d.Attempts[0]) {
		t.Fatalf("recipient 1 possible_duplicate: %+v", d)
	}
	if len(r1.History) != 2 || !r1.History[0].Unknown || r1.History[1].Unknown || !r1.History[1].OK {
		t.Errorf("recipient 1 history: %+v, want the lost attempt (outcome unknown), then b's", r1.History)
	}
	r2, _ := s.Recipient(ctx, c.ID, 2)
	if d := r2.PossibleDuplicate; d == nil || d.Reason != "takeover,sent_twice" || len(d.Attempts) < 3 {
		t.Errorf("recipient 2 possible_duplicate: %+v", d)
	}
	if r4, _ := s.Recipient(ctx, c.ID, 4); r4.PossibleDuplicate != nil {
		t.Errorf("recipient 4: %+v", r4.PossibleDuplicate)
	}
}

// TestRenewReasserts: a renewal of a message in flight that finds its claim
// gone (a failover lost it; the watchdog handed it over while the process
// was frozen) takes it back, so no second sender gets it; it never takes a
// claim another token holds live.
func TestRenewReasserts(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 2)
	tr, _ := s.Start(ctx, c.ID)
	rdb := s.Redis()
	do := func(st store.Step) store.StepResult {
		t.Helper()
		res, err := s.Do(ctx, c.ID, st)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen})
	// What a failover that lost the claim leaves: the recipient pending,
	// no claim.
	rdb.HDel(ctx, "t:{c:"+c.ID+"}:claim", "1")
	rdb.SetRange(ctx, "t:{c:"+c.ID+"}:st", 1, "\x00")
	rdb.HIncrBy(ctx, "t:{c:"+c.ID+"}:counts", "sending", -1)
	rdb.HIncrBy(ctx, "t:{c:"+c.ID+"}:counts", "pending", 1)
	if r := do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: time.Minute, Renew: true, Reassert: true}); !r.Claimed || !r.Reasserted {
		t.Fatalf("renewal after the claim was lost: %+v, want reasserted", r)
	}
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}); r.Claimed || !r.Busy {
		t.Fatalf("a second worker claimed a reasserted recipient: %+v", r)
	}
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Renew: true, Reassert: true}); r.Claimed {
		t.Fatalf("reassert took a claim another token holds live: %+v", r)
	}
	// Counts stay consistent: pending 1, sending 1.
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Pending != 1 || got.Counts.Sending != 1 {
		t.Errorf("counts after reassert: %+v", got.Counts)
	}
}

// TestStealOrphans: a claim of this process whose task has ended (its
// outcome was written, then lost with the primary) is handed over at the
// next sweep, not when CLAIM_TTL runs out; claims of live tasks and of
// other processes are left alone.
func TestStealOrphans(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	for rid, tok := range map[int64]string{1: "p1.done", 2: "p1.live", 3: "p2.other"} {
		if r, _ := s.Do(ctx, c.ID, store.Step{Token: tok, ClaimID: rid, ClaimTTL: time.Hour, Gen: tr.Gen}); !r.Claimed {
			t.Fatalf("claim %d", rid)
		}
	}
	st, err := s.StealOrphans(ctx, c.ID, time.Minute, "p1.", "p1.live")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Recipients) != 1 || st.Recipients[0] != 1 {
		t.Fatalf("stolen %v, want [1] (the ended task's)", st.Recipients)
	}
	if st, _ := s.Steal(ctx, c.ID, time.Minute); len(st.Recipients) != 0 {
		t.Fatalf("without a prefix, live claims were stolen: %v", st.Recipients)
	}
}

// TestWaitReplicas: with REDIS_WAIT_REPLICAS above the replicas there are,
// a claim and an outcome run on the primary but come back as
// ErrUnreplicated with the primary's answer, so the caller can hand the
// claim back or write the outcome again; running the step again is harmless.
func TestWaitReplicas(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 2)
	tr, _ := s.Start(ctx, c.ID)
	s.SetWaitReplicas(1, 20*time.Millisecond) // the test Redis has no replica
	defer s.SetWaitReplicas(0, 0)
	claim := store.Step{Token: "a", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}
	for range 2 {
		r, err := s.Do(ctx, c.ID, claim)
		if !errors.Is(err, store.ErrUnreplicated) || !r.Claimed {
			t.Fatalf("claim: %+v %v, want claimed and ErrUnreplicated", r, err)
		}
	}
	// A renewal decides nothing: it does not wait.
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "a", ClaimID: 1, ClaimTTL: time.Minute, Renew: true}); err != nil {
		t.Fatalf("renew: %v", err)
	}
	at := time.Now()
	fin := store.Step{Token: "a", FinishID: 1, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at}}
	if r, err := s.Do(ctx, c.ID, fin); !errors.Is(err, store.ErrUnreplicated) || !r.Finished {
		t.Fatalf("outcome: %+v %v", r, err)
	}
	if err := s.Release(ctx, c.ID, "a", notice.StatusPending, 1); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Sent != 1 || got.Counts.PossibleDuplicate != 0 {
		t.Errorf("counts: %+v", got.Counts)
	}
}

// TestRefusalHookLogsOncePerInterval: while a primary refuses writes
// (NOREPLICAS), every refused write is counted, but the log says so once
// per interval, not once per write (a failover test logged 10,052 lines in
// 58 s).
func TestRefusalHookLogsOncePerInterval(t *testing.T) {
	srv := testenv.StartRedis(t, "--min-replicas-to-write", "1")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	var logs bytes.Buffer
	h := store.NewRefusalHook(slog.New(slog.NewTextHandler(&logs, nil)), time.Minute)
	rdb.AddHook(h)
	before := refused(t)
	s := store.New(rdb, "rf")
	ctx := context.Background()
	for range 20 { // (go-redis retries each one a few times: ~0.1 s)
		if err := s.WriteProbe(ctx); store.Refusal(err) != "noreplicas" {
			t.Fatalf("write: %v, want NOREPLICAS", err)
		}
	}
	if n := strings.Count(logs.String(), "Redis refuses writes"); n != 1 {
		t.Errorf("%d log lines for 20 refused writes, want 1:\n%s", n, logs.String())
	}
	if got := refused(t) - before; got != 20 {
		t.Errorf("oshirase_redis_write_refused_total{reason=noreplicas} grew by %v, want 20", got)
	}
	if !h.Refused(time.Minute) {
		t.Errorf("Refused() = false after refusals")
	}
	if err := rdb.Get(ctx, "rf:nothing").Err(); err != redis.Nil {
		t.Errorf("reads still work: %v", err)
	}
}

func refused(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.RedisWriteRefused.WithLabelValues("noreplicas").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
