package app

import (
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// TestNoticeOf: what support sees of a recipient — its language, the
// status a sent resend makes current, and when a pending one should go.
func TestNoticeOf(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	started := now.Add(-100 * time.Second)
	sched := now.Add(2 * time.Hour)
	sending := &notice.Campaign{ID: "c", Status: notice.CampaignSending, DefaultLocale: "ja", StartedAt: &started,
		Counts: notice.Counts{Total: 1000, Sent: 100}} // 1 a second
	for _, tc := range []struct {
		name     string
		c        *notice.Campaign
		r        notice.Recipient
		locale   string
		current  notice.Status
		via      int
		expected *time.Time
	}{
		{"sending: 400 ahead at 1/s", sending, notice.Recipient{ID: 500, Delivery: notice.Delivery{Status: notice.StatusPending}},
			"ja", notice.StatusPending, 0, new(now.Add(400 * time.Second))},
		{"scheduled draft", &notice.Campaign{Status: notice.CampaignDraft, DefaultLocale: "en", ScheduledAt: &sched},
			notice.Recipient{ID: 1, Delivery: notice.Delivery{Status: notice.StatusPending}}, "en", notice.StatusPending, 0, &sched},
		{"paused: no estimate", &notice.Campaign{Status: notice.CampaignPaused, DefaultLocale: "ja"},
			notice.Recipient{ID: 1, Locale: "en", Delivery: notice.Delivery{Status: notice.StatusPending}}, "en", notice.StatusPending, 0, nil},
		{"failed, then resent", &notice.Campaign{Status: notice.CampaignDone, DefaultLocale: "ja"},
			notice.Recipient{ID: 1, Delivery: notice.Delivery{Status: notice.StatusFailed, Resends: []notice.Resend{
				{N: 1, Status: notice.StatusFailed}, {N: 2, Status: notice.StatusSent}, {N: 3, Status: notice.StatusPending}}}},
			"ja", notice.StatusSent, 2, nil},
		{"failed, resend failed too", &notice.Campaign{Status: notice.CampaignDone, DefaultLocale: "ja"},
			notice.Recipient{ID: 1, Delivery: notice.Delivery{Status: notice.StatusFailed, Resends: []notice.Resend{{N: 1, Status: notice.StatusFailed}}}},
			"ja", notice.StatusFailed, 0, nil},
	} {
		n := noticeOf(tc.c, &tc.r, now)
		if n.NoticeLocale != tc.locale || n.CurrentStatus != tc.current || n.CurrentResend != tc.via {
			t.Errorf("%s: locale %s, current %s by resend %d; want %s, %s, %d", tc.name, n.NoticeLocale, n.CurrentStatus, n.CurrentResend, tc.locale, tc.current, tc.via)
		}
		switch {
		case tc.expected == nil && n.ExpectedAt != nil, tc.expected != nil && (n.ExpectedAt == nil || !n.ExpectedAt.Equal(*tc.expected)):
			t.Errorf("%s: expected at %v, want %v", tc.name, n.ExpectedAt, tc.expected)
		}
	}
}
