package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// TestRecordReturned: a bounce moves a sent recipient to bounced once,
// however often the same DSN arrives; a delayed DSN is an event only; a
// bounce for a recipient never sent changes no status; counts follow; the
// raw message is kept and purged with the campaign; a bounce after the
// purge or for an unknown recipient is refused.
func TestRecordReturned(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 3)
	if _, err := s.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mark(ctx, c.ID, []int64{1, 2}, []notice.Status{notice.StatusPending}, notice.StatusSent); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	bounce := notice.Returned{At: at, Kind: "bounced", Action: "failed", Status: "5.1.1", Diagnostic: "smtp; 550 5.1.1 <u1@example.jp>: User unknown", ReportingMTA: "relay.example.jp"}
	for i, tc := range []struct {
		rid       int64
		ev        notice.Returned
		set       notice.Status
		dup       bool
		before    notice.Status
		after     notice.Status
		rawWanted bool
	}{
		{1, bounce, notice.StatusBounced, false, notice.StatusSent, notice.StatusBounced, true},
		{1, bounce, notice.StatusBounced, true, notice.StatusBounced, notice.StatusBounced, true},
		{2, notice.Returned{At: at, Kind: "delayed", Action: "delayed", Status: "4.2.0"}, "", false, notice.StatusSent, notice.StatusSent, true},
		{2, notice.Returned{At: at, Kind: "delayed", Action: "delayed", Status: "4.2.0"}, "", true, notice.StatusSent, notice.StatusSent, false},
		{3, bounce, notice.StatusBounced, false, notice.StatusPending, notice.StatusPending, false},
		{2, notice.Returned{At: at, Kind: "complained", FeedbackType: "abuse"}, notice.StatusComplained, false, notice.StatusSent, notice.StatusComplained, false},
		{1, notice.Returned{At: at, Kind: "bounced", Delivery: 1, Status: "5.1.1"}, notice.StatusBounced, false, notice.StatusBounced, notice.StatusBounced, false},
	} {
		var raw []byte
		if tc.rawWanted {
			raw = []byte("raw DSN")
		}
		out, err := s.RecordReturned(ctx, c.ID, tc.rid, tc.ev, tc.set, raw)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if out.Duplicate != tc.dup || out.Before != tc.before || out.After != tc.after {
			t.Errorf("%d: %+v, want dup %v %s → %s", i, out, tc.dup, tc.before, tc.after)
		}
	}
	cp, err := s.Campaign(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := cp.Counts; n.Sent != 0 || n.Bounced != 1 || n.Complained != 1 || n.Pending != 1 {
		t.Errorf("counts %+v, want sent 0 bounced 1 complained 1 pending 1", n)
	}
	r1, err := s.Recipient(ctx, c.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Status != notice.StatusBounced || len(r1.Returned) != 2 || r1.Returned[0].Status != "5.1.1" || r1.Returned[0].ReportingMTA != "relay.example.jp" {
		t.Errorf("recipient 1: %s %+v", r1.Status, r1.Returned)
	}
	if d := r1.Returned[0].Diagnostic; d == bounce.Diagnostic {
		t.Errorf("diagnostic kept the address in clear: %q", d)
	}
	if raw, _ := s.ReturnedRaw(ctx, c.ID); len(raw) != 2 {
		t.Errorf("raw kept: %d, want 2 (not the duplicate's)", len(raw))
	}
	if _, err := s.RecordReturned(ctx, c.ID, 99, bounce, notice.StatusBounced, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown recipient: %v", err)
	}
	if _, err := s.RecordReturned(ctx, "nosuchcampaign", 1, bounce, notice.StatusBounced, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown campaign: %v", err)
	}
	if _, err := s.Cancel(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if raw, _ := s.ReturnedRaw(ctx, c.ID); len(raw) != 0 {
		t.Errorf("raw after purge: %d", len(raw))
	}
	if _, err := s.RecordReturned(ctx, c.ID, 1, bounce, notice.StatusBounced, []byte("x")); !errors.Is(err, store.ErrPurged) {
		t.Errorf("after purge: %v, want ErrPurged", err)
	}
}
