package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/clock"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

func newStore(t *testing.T) *store.Store {
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	return store.New(rdb, "t")
}

// newSimStore is newStore on a simulated clock: claims and leases expire
// when the test moves it, not while it sleeps.
func newSimStore(t *testing.T) (*store.Store, *clock.Sim) {
	s := newStore(t)
	sim := clock.NewSim(time.Now())
	s.SetClock(sim)
	return s, sim
}

func newCampaign(t *testing.T, s *store.Store, n int) *notice.Campaign {
	t.Helper()
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := s.CreateCampaign(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rs []notice.Recipient
	for i := 1; i <= n; i++ {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("u%d@Example.JP", i), Name: "名前", Locale: "ja", CardLast4: "1234"})
	}
	if n > 0 {
		if _, err := s.AddRecipients(ctx, c.ID, rs); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestAddRecipientsDedupAndIndex(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	res, err := s.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "U2@example.jp"}, {Email: "new@example.jp"}, {Email: "new@EXAMPLE.jp"}})
	if err != nil {
		t.Fatal(err)
	}
	if ids := res.IDs; ids[0] != 0 || ids[1] != 4 || ids[2] != 0 {
		t.Fatalf("ids %v, want [0 4 0]", ids)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Total != 4 || got.Counts.Pending != 4 {
		t.Fatalf("counts %+v", got.Counts)
	}
	refs, err := s.Lookup(ctx, "u2@EXAMPLE.jp")
	if err != nil || len(refs) != 1 || refs[0] != (store.Ref{CampaignID: c.ID, RecipientID: 2}) {
		t.Fatalf("lookup: %v %v", refs, err)
	}
	r, err := s.Recipient(ctx, c.ID, 2)
	if err != nil || r.Email != "u2@Example.JP" || r.Status != notice.StatusPending || r.Name != "名前" {
		t.Fatalf("recipient: %+v %v", r, err)
	}
	if _, err := s.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "late@example.jp"}}); !errors.Is(err, store.ErrNotDraft) {
		t.Fatalf("add after start: %v, want ErrNotDraft", err)
	}
}

func TestTransitions(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 2)
	steps := []struct {
		name    string
		fn      func(context.Context, string) (store.Transition, error)
		changed bool
		status  notice.CampaignStatus
		err     error
	}{
		{"pause draft", s.Pause, false, notice.CampaignDraft, store.ErrInvalidMove},
		{"start", s.Start, true, notice.CampaignSending, nil},
		{"start again", s.Start, false, notice.CampaignSending, nil},
		{"pause", s.Pause, true, notice.CampaignPaused, nil},
		{"resume", s.Resume, true, notice.CampaignSending, nil},
		{"cancel", s.Cancel, true, notice.CampaignCancelled, nil},
		{"resume cancelled", s.Resume, false, notice.CampaignCancelled, store.ErrInvalidMove},
	}
	for _, st := range steps {
		tr, err := st.fn(ctx, c.ID)
		if !errors.Is(err, st.err) || (err == nil && (tr.Changed != st.changed || tr.Status != st.status)) {
			t.Fatalf("%s: %+v %v", st.name, tr, err)
		}
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Cancelled != 2 || got.Counts.Pending != 0 {
		t.Fatalf("after cancel: %+v", got.Counts)
	}
	if _, err := s.Start(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("start unknown: %v", err)
	}
}

func TestStepClaimFinish(t *testing.T) {
	s, sim := newSimStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	claim := func(token string, rid int64, ttl time.Duration) store.StepResult {
		t.Helper()
		res, err := s.Do(ctx, c.ID, store.Step{Token: token, ClaimID: rid, ClaimTTL: ttl, Gen: tr.Gen})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := claim("a", 1, time.Minute); !r.Claimed {
		t.Fatalf("first claim: %+v", r)
	}
	if r := claim("b", 1, time.Minute); r.Claimed || !r.Busy {
		t.Fatalf("second claim of a live claim: %+v", r)
	}
	// Finish 1 as sent and claim 2 in one step.
	now := time.Now()
	res, err := s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: 1, Finish: notice.StatusSent,
		Delivery: &notice.Delivery{Attempts: 1, MessageID: "m1", SentAt: &now}, ClaimID: 2, ClaimTTL: time.Millisecond, Gen: tr.Gen})
	if err != nil || !res.Finished || !res.Claimed {
		t.Fatalf("step: %+v %v", res, err)
	}
	if r := claim("b", 1, time.Minute); r.Claimed || r.Current != notice.StatusSent {
		t.Fatalf("claim of a sent recipient: %+v", r)
	}
	// An expired claim can be taken over.
	sim.Advance(5 * time.Millisecond)
	if r := claim("b", 2, time.Minute); !r.Claimed {
		t.Fatalf("takeover of an expired claim: %+v", r)
	}
	// Wrong generation is refused.
	if r, _ := s.Do(ctx, c.ID, store.Step{Token: "x", ClaimID: 3, ClaimTTL: time.Minute, Gen: tr.Gen + 1}); r.Claimed || !r.Stopped {
		t.Fatalf("claim with a stale generation: %+v", r)
	}
	// Release hands 2 back; steal finds nothing live.
	if err := s.Release(ctx, c.ID, "b", notice.StatusPending, 2); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Sent != 1 || got.Counts.Pending != 2 || got.Counts.Sending != 0 {
		t.Fatalf("counts %+v", got.Counts)
	}
	// Finishing the rest marks the campaign done.
	for _, rid := range []int64{2, 3} {
		claim("z", rid, time.Minute)
		res, err := s.Do(ctx, c.ID, store.Step{Token: "z", FinishID: rid, Finish: notice.StatusFailed, Delivery: &notice.Delivery{Attempts: 1, LastError: "550"}})
		if err != nil || !res.Finished {
			t.Fatal(res, err)
		}
		if res.Done != (rid == 3) {
			t.Fatalf("done after %d: %v", rid, res.Done)
		}
	}
	got, _ = s.Campaign(ctx, c.ID)
	if got.Status != notice.CampaignDone || got.FinishedAt == nil || got.Counts.Failed != 2 {
		t.Fatalf("campaign %+v", got)
	}
	r3, _ := s.Recipient(ctx, c.ID, 3)
	if r3.Status != notice.StatusFailed || r3.LastError != "550" || r3.Attempts != 1 {
		t.Fatalf("recipient 3: %+v", r3)
	}
}

func TestStealExpired(t *testing.T) {
	s, sim := newSimStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 5)
	tr, _ := s.Start(ctx, c.ID)
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "dead", ClaimID: 2, ClaimTTL: time.Millisecond, Gen: tr.Gen, Lease: 1, LeaseTTL: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "live", ClaimID: 3, ClaimTTL: time.Hour, Gen: tr.Gen}); err != nil {
		t.Fatal(err)
	}
	sim.Advance(5 * time.Millisecond) // past the dead claim's deadline, not the live one's
	st, err := s.Steal(ctx, c.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Chunks) != 1 || st.Chunks[0] != 1 || len(st.Recipients) != 1 || st.Recipients[0] != 2 {
		t.Fatalf("stolen %+v", st)
	}
	// Handed over, not released: still "sending", under a claim any task
	// may take.
	r, _ := s.Recipient(ctx, c.ID, 2)
	if r.Status != notice.StatusSending {
		t.Fatalf("stolen recipient is %s, want sending (handed over)", r.Status)
	}
	// Taken once: a second watchdog finds nothing.
	if st, _ := s.Steal(ctx, c.ID, time.Minute); len(st.Chunks)+len(st.Recipients) != 0 {
		t.Fatalf("stolen twice: %+v", st)
	}
	// The task queued for it takes it over at once; the live claim on 3
	// is nobody's to take.
	if res, err := s.Do(ctx, c.ID, store.Step{Token: "rc", ClaimID: 2, ClaimTTL: time.Hour, ClaimRetrying: true}); err != nil || !res.Claimed {
		t.Fatalf("the task cannot take the handed-over recipient: %+v %v", res, err)
	}
	if res, _ := s.Do(ctx, c.ID, store.Step{Token: "other", ClaimID: 3, ClaimTTL: time.Hour, ClaimRetrying: true}); res.Claimed {
		t.Fatal("a live claim was taken")
	}
}

// TestStealHandoverExpires: when the task for a stolen recipient is never
// queued (the watchdog's process died right after stealing), the handover
// claim expires and the next sweep steals the recipient again: it is never
// left with nothing to send it.
func TestStealHandoverExpires(t *testing.T) {
	s, sim := newSimStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "dead", ClaimID: 2, ClaimTTL: time.Millisecond, Gen: tr.Gen}); err != nil {
		t.Fatal(err)
	}
	sim.Advance(5 * time.Millisecond)
	if st, _ := s.Steal(ctx, c.ID, 10*time.Millisecond); len(st.Recipients) != 1 {
		t.Fatalf("first steal: %+v", st)
	}
	// ... and the watchdog dies before queuing the task.
	sim.Advance(20 * time.Millisecond)
	if st, _ := s.Steal(ctx, c.ID, time.Minute); len(st.Recipients) != 1 || st.Recipients[0] != 2 {
		t.Fatalf("second steal after the handover expired: %+v", st)
	}
}

// TestRenewWhilePaused: a worker whose message is in flight when the
// campaign is paused keeps its claim alive (it must not expire into a second
// send after resume), but claims nothing new.
func TestRenewWhilePaused(t *testing.T) {
	s, sim := newSimStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "w", ClaimID: 1, ClaimTTL: 50 * time.Millisecond, Gen: tr.Gen}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Do(ctx, c.ID, store.Step{Token: "w", ClaimID: 1, ClaimTTL: time.Hour, Gen: tr.Gen, Renew: true}); err != nil || !res.Claimed {
		t.Fatalf("renewal while paused refused: %+v %v", res, err)
	}
	if res, _ := s.Do(ctx, c.ID, store.Step{Token: "w", ClaimID: 2, ClaimTTL: time.Hour, Gen: tr.Gen}); res.Claimed {
		t.Fatal("a new recipient claimed while paused")
	}
	if _, err := s.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	sim.Advance(80 * time.Millisecond) // past the first claim's deadline, not the renewed one's
	if st, _ := s.Steal(ctx, c.ID, time.Minute); len(st.Recipients) != 0 {
		t.Fatalf("the renewed claim was stolen: %+v", st)
	}
}

func TestRecipientsPaging(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 250)
	tr, _ := s.Start(ctx, c.ID)
	// Every 10th recipient sent.
	for rid := int64(10); rid <= 250; rid += 10 {
		s.Do(ctx, c.ID, store.Step{Token: "a", ClaimID: rid, ClaimTTL: time.Minute, Gen: tr.Gen})
		s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: rid, Finish: notice.StatusSent, Delivery: &notice.Delivery{}})
	}
	for _, tc := range []struct {
		status notice.Status
		want   int
	}{{"", 250}, {notice.StatusSent, 25}, {notice.StatusPending, 225}, {notice.StatusFailed, 0}} {
		n, cursor := 0, int64(1)
		for i := 0; i < 100; i++ {
			p, err := s.Recipients(ctx, c.ID, tc.status, cursor, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Recipients {
				if tc.status != "" && r.Status != tc.status {
					t.Fatalf("status %s in a %s page", r.Status, tc.status)
				}
			}
			n += len(p.Recipients)
			if p.Next == 0 {
				break
			}
			cursor = p.Next
		}
		if n != tc.want {
			t.Errorf("status %q: %d recipients, want %d", tc.status, n, tc.want)
		}
	}
}

func TestSuppressionAndAudit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Suppress(ctx, store.Suppression{Email: "Bad@Example.com", Reason: "550 5.1.1"}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Suppressed(ctx, []string{"bad@example.COM", "ok@example.com"})
	if err != nil || m["bad@example.COM"] == nil || m["ok@example.com"] != nil {
		t.Fatalf("suppressed: %v %v", m, err)
	}
	if ok, _ := s.Unsuppress(ctx, "BAD@example.com"); !ok {
		t.Fatal("unsuppress")
	}
	for i := 0; i < 5; i++ {
		s.Audit(ctx, store.AuditEntry{Actor: fmt.Sprintf("a%d", i%2), Action: "campaign.start", CampaignID: fmt.Sprint(i % 3)})
	}
	es, _, err := s.AuditLog(ctx, store.AuditQuery{Actor: "a0"})
	if err != nil || len(es) != 3 || es[0].At.IsZero() {
		t.Fatalf("audit by actor: %+v %v", es, err)
	}
	es, _, _ = s.AuditLog(ctx, store.AuditQuery{CampaignID: "1"})
	if len(es) != 2 {
		t.Fatalf("audit by campaign: %+v", es)
	}
}

// TestHandOutWindow: chunks are handed out from the cursor only while the
// campaign's window of live chunk leases has room, each with its lease; a
// chunk finishing makes room for one more; expired leases do not count; a
// paused campaign gets none, and a resumed one starts its generation's own
// cursor from the first recipient.
func TestHandOutWindow(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 45) // chunks of 10: 1, 11, 21, 31, 41 (41-45)
	hand := func(window int64, ttl time.Duration) []int64 {
		t.Helper()
		h, err := s.HandOut(ctx, c.ID, 10, window, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if h.Seq != 45 {
			t.Errorf("seq %d, want 45", h.Seq)
		}
		return h.Froms
	}
	if got := hand(3, time.Minute); len(got) != 0 {
		t.Fatalf("a draft handed out %v", got)
	}
	if _, err := s.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if got := hand(3, time.Minute); fmt.Sprint(got) != "[1 11 21]" {
		t.Fatalf("first window %v, want [1 11 21]", got)
	}
	if n, _ := s.LiveLeases(ctx, c.ID); n != 3 {
		t.Errorf("%d live leases, want 3: each chunk handed out holds one", n)
	}
	if got := hand(3, time.Minute); len(got) != 0 {
		t.Fatalf("a full window handed out %v", got)
	}
	if err := s.DropChunkLease(ctx, c.ID, 11); err != nil {
		t.Fatal(err)
	}
	if got := hand(3, time.Minute); fmt.Sprint(got) != "[31]" {
		t.Fatalf("after one chunk finished: %v, want [31]", got)
	}
	// An expired lease (a dead worker's, for the watchdog) is not live.
	if err := s.SetChunkLease(ctx, c.ID, 1, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := hand(3, time.Minute); fmt.Sprint(got) != "[41]" {
		t.Fatalf("after a lease expired: %v, want [41]", got)
	}
	if got := hand(100, time.Minute); len(got) != 0 {
		t.Fatalf("past the last recipient: %v", got)
	}
	if cur, _ := s.FanoutCursor(ctx, c.ID, 1); cur != 51 {
		t.Errorf("cursor %d, want 51", cur)
	}
	if _, err := s.Pause(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DropChunkLease(ctx, c.ID, 21); err != nil {
		t.Fatal(err)
	}
	if got := hand(100, time.Minute); len(got) != 0 {
		t.Fatalf("a paused campaign handed out %v", got)
	}
	tr, err := s.Resume(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.HandOut(ctx, c.ID, 10, 4, time.Minute) // 31, 41 still live
	if err != nil {
		t.Fatal(err)
	}
	if h.Gen != tr.Gen || fmt.Sprint(h.Froms) != "[1 11]" {
		t.Fatalf("resumed: gen %d froms %v, want gen %d [1 11]", h.Gen, h.Froms, tr.Gen)
	}
}

// TestCancelUnsentFinishesTheJob: a recipient released back to retrying
// after a cancel's marking passed it (its worker was in flight) would stay
// open in a cancelled campaign; CancelUnsent, which the watchdog runs,
// settles it, and the campaign's counts add up.
func TestCancelUnsentFinishesTheJob(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 4)
	tr, _ := s.Start(ctx, c.ID)
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "w", ClaimID: 2, ClaimTTL: time.Hour, Gen: tr.Gen}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, c.ID, "w", notice.StatusRetrying, 2); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Counts.Retrying != 1 {
		t.Fatalf("counts before: %+v", got.Counts)
	}
	if err := s.CancelUnsent(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Campaign(ctx, c.ID)
	if got.Counts.Open() != 0 || got.Counts.Cancelled != 4 {
		t.Errorf("counts after: %+v, want all 4 cancelled", got.Counts)
	}
}

func TestResendLock(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 1)
	lock := func(token string) bool {
		t.Helper()
		ok, err := s.LockResend(ctx, c.ID, 1, 1, token, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !lock("a") || lock("b") {
		t.Fatal("a second run took the lock of a resend being sent")
	}
	s.UnlockResend(ctx, c.ID, 1, 1, "b") // not b's: stays
	if lock("c") {
		t.Fatal("another token freed the lock")
	}
	s.UnlockResend(ctx, c.ID, 1, 1, "a")
	if !lock("d") {
		t.Fatal("the lock was not given back")
	}
	if ok, _ := s.LockResend(ctx, c.ID, 1, 2, "e", time.Minute); !ok {
		t.Fatal("resend 2 shares resend 1's lock")
	}
}

// TestPurgeWaitsForMessagesInFlight: a cancelled campaign whose retry task
// still holds a claim (no chunk lease) is not purged under it.
func TestPurgeWaitsForMessagesInFlight(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 2)
	tr, _ := s.Start(ctx, c.ID)
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "retry", ClaimID: 1, ClaimTTL: time.Hour, Gen: tr.Gen}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, c.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("purge with a message in flight: %v, want ErrConflict", err)
	}
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "retry", FinishID: 1, Finish: notice.StatusSent}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Purge(ctx, c.ID); err != nil || n != 2 {
		t.Fatalf("purge after it finished: %d %v", n, err)
	}
}

// failCmd fails every command named name, as a Redis that went away
// between two calls would.
type failCmd struct{ name string }

func (f failCmd) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f failCmd) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == f.name {
			err := errors.New("injected failure of " + f.name)
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (f failCmd) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDeleteCampaignUnlistsFirst: DeleteCampaign takes the campaign off
// the active set before deleting its keys and says when it could not; a
// failed delete leaves the whole campaign, never keys gone under an entry
// the watchdog still sweeps.
func TestDeleteCampaignUnlistsFirst(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	s := store.New(rdb, "t")
	ctx := context.Background()
	c := newCampaign(t, s, 2)
	if _, err := s.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	broken := redis.NewClient(&redis.Options{Addr: testenv.Addr(), DB: testenv.DBStore})
	t.Cleanup(func() { broken.Close() })
	broken.AddHook(failCmd{"srem"})
	if err := store.New(broken, "t").DeleteCampaign(ctx, c.ID); err == nil {
		t.Fatal("DeleteCampaign hid the failure to unlist the campaign")
	}
	if got, err := s.Campaign(ctx, c.ID); err != nil || got.Counts.Total != 2 {
		t.Fatalf("a failed delete removed the campaign's keys: %+v %v", got, err)
	}
	if err := s.DeleteCampaign(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.Active(ctx); len(ids) != 0 {
		t.Fatalf("deleted campaign still active: %v", ids)
	}
	if _, err := s.Campaign(ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted campaign: %v", err)
	}
}
