package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

func TestStepRenewAndTakeover(t *testing.T) {
	s, sim := newSimStore(t) // claims expire when the test says so
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	do := func(st store.Step) store.StepResult {
		t.Helper()
		res, err := s.Do(ctx, c.ID, st)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	status := func(rid int64) notice.Status {
		t.Helper()
		r, err := s.Recipient(ctx, c.ID, rid)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}

	// Renew never takes a recipient that is not already ours.
	if r := do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: time.Minute, Renew: true, Lease: 1, LeaseTTL: time.Minute}); r.Claimed {
		t.Fatalf("renew claimed a pending recipient: %+v", r)
	}
	if st := status(1); st != notice.StatusPending {
		t.Fatalf("after a refused renew: %s", st)
	}
	if st, _ := s.Steal(ctx, c.ID, time.Minute); len(st.Chunks) != 0 {
		t.Fatalf("a refused renew wrote the chunk lease: %+v", st)
	}
	// A heartbeat keeps a claim alive past its first deadline.
	do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: 30 * time.Millisecond, Gen: tr.Gen})
	for range 3 {
		sim.Advance(20 * time.Millisecond)
		if r := do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: 30 * time.Millisecond, Renew: true}); !r.Claimed {
			t.Fatalf("renew of our own claim: %+v", r)
		}
	}
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}); r.Claimed || !r.Busy {
		t.Fatalf("a renewed claim was taken over: %+v", r)
	}
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Renew: true}); r.Claimed {
		t.Fatalf("renew by another token: %+v", r)
	}

	// a's claim expires and b takes over: a may no longer record a
	// retry (b is responsible now), but "sent" always wins.
	sim.Advance(40 * time.Millisecond)
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}); !r.Claimed {
		t.Fatalf("takeover of an expired claim: %+v", r)
	}
	if r := do(store.Step{Token: "a", FinishID: 1, Finish: notice.StatusRetrying, Delivery: &notice.Delivery{Attempts: 1}}); r.Finished {
		t.Fatalf("a stale worker's retry overrode a live claim: %+v", r)
	}
	if st := status(1); st != notice.StatusSending {
		t.Fatalf("recipient 1 is %s, want still sending (b's)", st)
	}
	if r := do(store.Step{Token: "a", FinishID: 1, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1}}); !r.Finished {
		t.Fatalf("a stale worker's sent was refused: %+v", r)
	}
	if r := do(store.Step{Token: "b", FinishID: 1, Finish: notice.StatusRetrying}); r.Finished || status(1) != notice.StatusSent {
		t.Fatalf("sent was overridden: %+v", r)
	}
}

func TestStepRetryOfCancelledCampaign(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	tr, _ := s.Start(ctx, c.ID)
	for rid := int64(1); rid <= 2; rid++ {
		if r, _ := s.Do(ctx, c.ID, store.Step{Token: "a", ClaimID: rid, ClaimTTL: time.Minute, Gen: tr.Gen}); !r.Claimed {
			t.Fatalf("claim %d: %+v", rid, r)
		}
	}
	if _, err := s.Cancel(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	// In flight when the campaign was cancelled: a transient failure ends
	// cancelled (its retry would never run), a success is recorded as sent.
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: 1, Finish: notice.StatusRetrying, Delivery: &notice.Delivery{Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: 2, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Status != notice.CampaignCancelled || got.Counts.Cancelled != 2 || got.Counts.Sent != 1 || got.Counts.Open() != 0 {
		t.Fatalf("campaign %s counts %+v", got.Status, got.Counts)
	}
}
