package api

import (
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
)

func TestProgressOf(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	tests := []struct {
		name    string
		c       notice.Campaign
		want    *progress
		wantETA float64 // -1: none
	}{
		{"draft", notice.Campaign{Status: notice.CampaignDraft, Counts: notice.Counts{Total: 10}}, nil, -1},
		{"done", notice.Campaign{Status: notice.CampaignDone, StartedAt: ago(time.Minute), Counts: notice.Counts{Total: 10, Sent: 10}}, nil, -1},
		{"paused", notice.Campaign{Status: notice.CampaignPaused, StartedAt: ago(time.Minute), Counts: notice.Counts{Total: 10, Sent: 5}}, nil, -1},
		{"just started", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(0), Counts: notice.Counts{Total: 10, Pending: 10}},
			&progress{Done: 0, RatePerSecond: 0}, -1},
		{"15,370 at 8,000/s", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(time.Second),
			Counts: notice.Counts{Total: 15370, Sent: 7990, Failed: 5, Suppressed: 3, Cancelled: 2, Pending: 7370}},
			&progress{Done: 8000, RatePerSecond: 8000}, 1},
		{"slow and steady", notice.Campaign{Status: notice.CampaignSending, StartedAt: ago(100 * time.Second),
			Counts: notice.Counts{Total: 1000, Sent: 50, Retrying: 10, Pending: 940}},
			&progress{Done: 50, RatePerSecond: 0.5}, 1900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := progressOf(&tt.c, now)
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
