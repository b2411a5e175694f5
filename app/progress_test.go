package app

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

func TestProgressOf(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	tests := []struct {
		name    string
		c       notice.Campaign
		want    *Progress
		wantETA float64 // -1: none
	}{
		{"draft", notice.Campaign{Status: notice.CampaignDraft, Counts: notice.Counts{Total: 10}}, nil, -1},
		{"done", notice.Campaign{Status: notice.CampaignDone, StartedAt: ago(time.Minute), Counts: notice.Counts{Total: 10, Sent: 10}}, nil, -1},
		{"paused", notice.Campaign{Status: notice.CampaignPaused, StartedAt: ago(time.Minute), Counts: notice.Counts{Total: 10, Sent: 5}}, nil, -1},
		{"just started", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(0), Counts: notice.Counts{Total: 10, Pending: 10}},
			&Progress{Done: 0, RatePerSecond: 0}, -1},
		{"15,370 at 8,000/s", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(time.Second),
			Counts: notice.Counts{Total: 15370, Sent: 7990, Failed: 5, Suppressed: 3, Cancelled: 2, Pending: 7370}},
			&Progress{Done: 8000, RatePerSecond: 8000}, 1},
		{"slow and steady", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(100 * time.Second),
			Counts: notice.Counts{Total: 1000, Sent: 50, Retrying: 10, Pending: 940}},
			&Progress{Done: 50, RatePerSecond: 0.5}, 1900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ProgressOf(&tt.c, now, nil)
			if (got == nil) != (tt.want == nil) {
				t.Fatalf("progress %+v, want %+v", got, tt.want)
			}
			if got == nil {
				return
			}
			if got.Done != tt.want.Done || got.RatePerSecond != tt.want.RatePerSecond {
				t.Errorf("progress %+v, want %+v", got, tt.want)
			}
			switch {
			case tt.wantETA < 0 && got.ETASeconds != nil:
				t.Errorf("eta %v, want none", *got.ETASeconds)
			case tt.wantETA >= 0 && (got.ETASeconds == nil || *got.ETASeconds != tt.wantETA):
				t.Errorf("eta %v, want %v", got.ETASeconds, tt.wantETA)
			}
		})
	}
}

// TestETAAfterOutage: a campaign sends at 10/s for 5 minutes, the relay is
// down for 5 minutes, then it sends at 10/s again for 2 minutes. The
// watchdog's samples (written through the real store, every sweep of 2 s,
// at simulated times) make the ETA the time the rest takes at 10/s — not
// the average since the start, which still carries the outage.
func TestETAAfterOutage(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBApp)
	st := store.New(rdb, "eta")
	ctx := context.Background()
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	const total, rate = 10_000, 10.0
	doneAt := func(sec float64) int64 { // the simulated timeline
		switch {
		case sec <= 300:
			return int64(sec * rate)
		case sec <= 600:
			return 3000
		default:
			return 3000 + int64((sec-600)*rate)
		}
	}
	const end = 720.0
	for sec := 0.0; sec <= end; sec += 2 {
		if err := st.RecordSweep(ctx, "c1", start.Add(time.Duration(sec*float64(time.Second))), doneAt(sec), false); err != nil {
			t.Fatal(err)
		}
	}
	w, err := st.Watch(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	now := start.Add(end * time.Second)
	done := doneAt(end)
	c := notice.Campaign{Status: notice.CampaignSending, StartedAt: &start,
		Counts: notice.Counts{Total: total, Sent: done, Pending: total - done}}
	p := ProgressOf(&c, now, w.Samples)
	truth := float64(total-done) / rate // 580 s
	if p.ETASeconds == nil || math.Abs(*p.ETASeconds-truth) > 0.05*truth {
		t.Fatalf("ETA %v s after the outage, want %.0f s ± 5%% (progress %+v)", p.ETASeconds, truth, p)
	}
	if p.RateWindowSeconds > rateWindow.Seconds() || p.RateWindowSeconds < minRateSpan.Seconds() {
		t.Errorf("rate window %v s, want within (%v, %v]", p.RateWindowSeconds, minRateSpan.Seconds(), rateWindow.Seconds())
	}
	// What the average since the start said (the bug): far from the truth.
	if old := float64(total-done) / p.AverageRate; old < 1.5*truth {
		t.Errorf("scenario too mild: the average since the start gives %.0f s", old)
	}
	// The watchdog's view: progress moved at the last sweep, no stall.
	if w.ProgressAt == nil || !w.ProgressAt.Equal(now) || w.StalledAt != nil {
		t.Errorf("watch: progress_at %v (want %v), stalled_at %v", w.ProgressAt, now, w.StalledAt)
	}

	// During the outage: the recent rate is 0, so no ETA is promised,
	// and a stall found by the watchdog is kept until progress resumes.
	st2 := store.New(rdb, "eta2")
	for sec := 0.0; sec <= 500; sec += 2 {
		if err := st2.RecordSweep(ctx, "c1", start.Add(time.Duration(sec*float64(time.Second))), doneAt(sec), sec == 400); err != nil {
			t.Fatal(err)
		}
	}
	w2, _ := st2.Watch(ctx, "c1")
	c.Counts = notice.Counts{Total: total, Sent: 3000, Pending: total - 3000}
	if p := ProgressOf(&c, start.Add(500*time.Second), w2.Samples); p.RatePerSecond != 0 || p.ETASeconds != nil {
		t.Errorf("mid-outage progress %+v, want rate 0 and no ETA", p)
	}
	if w2.StalledAt == nil || !w2.StalledAt.Equal(start.Add(400*time.Second)) {
		t.Errorf("stalled_at %v, want the sweep that found the stall", w2.StalledAt)
	}
	if w2.ProgressAt == nil || !w2.ProgressAt.Equal(start.Add(300*time.Second)) {
		t.Errorf("progress_at %v, want the end of sending before the outage", w2.ProgressAt)
	}
}
