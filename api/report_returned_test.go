package api

import (
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// TestReportRowReturned: the report shows what came back after the relay
// took a notice — the bounce or complaint that made the status final, else
// the latest delay — in bounced_at, dsn_action, dsn_status,
// dsn_diagnostic and reporting_mta.
func TestReportRowReturned(t *testing.T) {
	at := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	delayed := notice.Returned{At: at, Kind: "delayed", Action: "delayed", Status: "4.2.0", ReportingMTA: "relay.example.jp"}
	bounced := notice.Returned{At: at.Add(time.Hour), Kind: "bounced", Action: "failed", Status: "5.1.1",
		Diagnostic: "smtp; 550 5.1.1 User unknown", ReportingMTA: "relay.example.jp"}
	for _, tc := range []struct {
		name string
		evs  []notice.Returned
		want string
	}{
		{"none", nil, ",,,,"},
		{"delayed only", []notice.Returned{delayed}, ",delayed,4.2.0,,relay.example.jp"},
		{"delayed then bounced", []notice.Returned{delayed, bounced, {Kind: "auto-reply"}},
			"2026-12-01 21:00:00,failed,5.1.1,smtp; 550 5.1.1 User unknown,relay.example.jp"},
		{"complaint", []notice.Returned{{At: at, Kind: "complained", FeedbackType: "abuse"}}, "2026-12-01 20:00:00,complaint:abuse,,,"},
	} {
		rc := &notice.Recipient{ID: 1, Email: "a@example.jp", Returned: tc.evs}
		row := reportRow(rc, "ja", time.UTC)
		if len(row) != len(reportColumns) {
			t.Fatalf("%s: %d cells for %d columns", tc.name, len(row), len(reportColumns))
		}
		if got := strings.Join(row[17:], ","); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
