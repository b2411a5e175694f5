package api

import (
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// TestReachOf: sent recipients are unknown until BOUNCE_WINDOW has passed
// since the campaign's last send, reached after; the refused, bounced,
// complained, suppressed and cancelled are not reached; the open ones unknown.
func TestReachOf(t *testing.T) {
	fin := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	counts := notice.Counts{Total: 100, Pending: 1, Sending: 2, Retrying: 3, Sent: 80, Failed: 4, Suppressed: 3, Cancelled: 2, Bounced: 4, Complained: 1}
	for _, tc := range []struct {
		name   string
		status notice.CampaignStatus
		fin    *time.Time
		now    time.Time
		want   *reach
	}{
		{"draft", notice.CampaignDraft, nil, fin, nil},
		{"sending", notice.CampaignSending, nil, fin, &reach{NotReached: 14, Unknown: 86}},
		{"done, within the window", notice.CampaignDone, &fin, fin.Add(71 * time.Hour), &reach{NotReached: 14, Unknown: 86}},
		{"done, window passed", notice.CampaignDone, &fin, fin.Add(72 * time.Hour), &reach{Reached: 80, NotReached: 14, Unknown: 6}},
		{"cancelled, window passed", notice.CampaignCancelled, &fin, fin.Add(100 * time.Hour), &reach{Reached: 80, NotReached: 14, Unknown: 6}},
		{"paused", notice.CampaignPaused, nil, fin.Add(100 * time.Hour), &reach{NotReached: 14, Unknown: 86}},
	} {
		got := reachOf(&notice.Campaign{Status: tc.status, FinishedAt: tc.fin, Counts: counts}, tc.now, 72*time.Hour)
		if (got == nil) != (tc.want == nil) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
			continue
		}
		if got == nil {
			continue
		}
		if got.Reached != tc.want.Reached || got.NotReached != tc.want.NotReached || got.Unknown != tc.want.Unknown {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		if got.Reached+got.NotReached+got.Unknown != counts.Total {
			t.Errorf("%s: does not add up to %d", tc.name, counts.Total)
		}
	}
}

// TestUnreachableRowOpen: a recipient still pending, sending or retrying
// is listed as not reached only once RETRY_MAX_AGE has passed since its
// first attempt (the campaign's start when it has none); a sent one never.
func TestUnreachableRowOpen(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	first := start.Add(10 * time.Hour)
	c := &notice.Campaign{DefaultLocale: "ja", StartedAt: &start}
	for _, tc := range []struct {
		name   string
		status notice.Status
		first  *time.Time
		now    time.Time
		listed bool
	}{
		{"retrying, young", notice.StatusRetrying, &first, first.Add(71 * time.Hour), false},
		{"retrying, past max age", notice.StatusRetrying, &first, first.Add(72 * time.Hour), true},
		{"sending, past max age", notice.StatusSending, &first, first.Add(80 * time.Hour), true},
		{"pending, never tried, campaign young", notice.StatusPending, nil, start.Add(71 * time.Hour), false},
		{"pending, never tried, campaign old", notice.StatusPending, nil, start.Add(73 * time.Hour), true},
		{"sent", notice.StatusSent, &first, first.Add(1000 * time.Hour), false},
	} {
		rc := &notice.Recipient{ID: 7, Delivery: notice.Delivery{Status: tc.status, FirstTryAt: tc.first, LastCode: 451, Enhanced: "4.4.1", LastError: "451 4.4.1 try later",
			History: []notice.Attempt{{At: first, Code: 451}}}}
		row := unreachableRow(rc, c, tc.now, 72*time.Hour, nil)
		if (row != nil) != tc.listed {
			t.Errorf("%s: row %q, want listed %v", tc.name, row, tc.listed)
			continue
		}
		if row != nil && (row[5] != "still not delivered 72h after the first attempt" || row[6] != "451 4.4.1" || row[3] != "ja") {
			t.Errorf("%s: row %q", tc.name, row)
		}
	}
}
