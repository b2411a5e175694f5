package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// TestRelayStreakAndPause: a run counts different recipients with the same
// answer and starts again on another answer or on any message sent; the
// pause for the relay puts the run's failed recipients back to pending,
// even on a campaign those failures had made done; resume clears it all.
func TestRelayStreakAndPause(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 10)
	if _, err := s.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	streak := func(sig string, rid int64) int64 {
		t.Helper()
		held, n, err := s.RelayStreak(ctx, c.ID, sig, rid)
		if err != nil || held {
			t.Fatalf("streak: held %v, err %v", held, err)
		}
		return n
	}
	finish := func(rid int64, st notice.Status) {
		t.Helper()
		tok := "tok"
		if _, err := s.Do(ctx, c.ID, store.Step{Token: tok, ClaimID: rid, ClaimTTL: 60e9}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Do(ctx, c.ID, store.Step{Token: tok, FinishID: rid, Finish: st, Delivery: &notice.Delivery{}}); err != nil {
			t.Fatal(err)
		}
	}
	const deny = "rcpt|554 5.7.1 relay access denied"
	for _, step := range []struct {
		sig  string
		rid  int64
		want int64
	}{{deny, 1, 1}, {deny, 2, 2}, {deny, 2, 2}, {"rcpt|554 5.7.1 other", 3, 1}, {deny, 3, 1}, {deny, 4, 2}} {
		if got := streak(step.sig, step.rid); got != step.want {
			t.Fatalf("streak(%q, %d) = %d, want %d", step.sig, step.rid, got, step.want)
		}
	}
	finish(5, notice.StatusSent) // a message sent: the next refusal starts a new run
	if got := streak(deny, 6); got != 1 {
		t.Fatalf("after a sent message the run is %d, want 1", got)
	}
	for rid := int64(7); rid <= 10; rid++ {
		streak(deny, rid)
	}
	for _, rid := range []int64{1, 2, 3, 4, 6, 7, 8, 9, 10} {
		finish(rid, notice.StatusFailed)
	}
	if got, _ := s.Campaign(ctx, c.ID); got.Status != notice.CampaignDone {
		t.Fatalf("status %s, want done", got.Status)
	}
	changed, reverted, err := s.PauseForRelay(ctx, c.ID, "the relay refuses every message: 554 5.7.1 Relay access denied")
	slices.Sort(reverted)
	if err != nil || !changed || !slices.Equal(reverted, []int64{6, 7, 8, 9, 10}) {
		t.Fatalf("pause: %v %v %v; want 6-10 put back", changed, reverted, err)
	}
	got, _ := s.Campaign(ctx, c.ID)
	if got.Status != notice.CampaignPaused || got.PausedReason == "" || got.PausedAt == nil || got.FinishedAt != nil ||
		got.Counts.Pending != 5 || got.Counts.Failed != 4 || got.Counts.Sent != 1 {
		t.Fatalf("after the pause: %s %q %+v finished %v", got.Status, got.PausedReason, got.Counts, got.FinishedAt)
	}
	if held, _, _ := s.RelayStreak(ctx, c.ID, "anything", 1); !held {
		t.Error("a refusal while paused for the relay is not held")
	}
	if again, _, _ := s.PauseForRelay(ctx, c.ID, "again"); again {
		t.Error("a second pause for the relay changed something")
	}
	if ids, err := s.RelayPaused(ctx); err != nil || !slices.Equal(ids, []string{c.ID}) {
		t.Fatalf("RelayPaused = %v, %v", ids, err)
	}
	if _, err := s.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Campaign(ctx, c.ID)
	if got.Status != notice.CampaignSending || got.PausedReason != "" || got.PausedAt != nil {
		t.Fatalf("after resume: %s %q", got.Status, got.PausedReason)
	}
	if ids, err := s.RelayPaused(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("RelayPaused after resume = %v, %v", ids, err)
	}
}
