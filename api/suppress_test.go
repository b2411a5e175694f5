package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestSuppressionLifecycle: an address suppressed through the API is listed
// (support may read the list), is marked suppressed in a campaign and sent
// nothing; removing it takes a reason, and a later campaign sends to it
// again. Both changes are in the audit log with who and why.
func TestSuppressionLifecycle(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	var sup struct{ Email, Reason, Actor string }
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/suppressions", "application/json",
		[]byte(`{"email":"Blocked.Person@Example.COM","reason":"asked by phone not to be written to"}`), &sup); code != 201 ||
		sup.Email != "blocked.person@example.com" || sup.Actor != "admin" {
		t.Fatalf("suppress: %d %s", code, body)
	}
	listed := func() []string {
		var l struct {
			Suppressions []struct{ Email, Reason string } `json:"suppressions"`
		}
		if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/suppressions", "", nil, &l); code != 200 {
			t.Fatalf("list as support: %d %s", code, body)
		}
		var out []string
		for _, s := range l.Suppressions {
			out = append(out, s.Email+" ("+s.Reason+")")
		}
		return out
	}
	if got := listed(); len(got) != 1 || got[0] != "blocked.person@example.com (asked by phone not to be written to)" {
		t.Fatalf("suppressions listed: %v", got)
	}

	rcpts := []notice.Recipient{{Email: "blocked.person@example.com", Locale: "ja"}, {Email: "open@example.jp", Locale: "ja"}}
	first, ids := sentCampaign(t, st, "suppressed", rcpts)
	var r notice.Recipient
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", fmt.Sprintf("/v1/campaigns/%s/recipients/%d", first, ids[0]), "", nil, &r)
	if r.Status != notice.StatusSuppressed || sink.CountFor("blocked.person@example.com") != 0 || sink.CountFor("open@example.jp") != 1 {
		t.Fatalf("first campaign: blocked is %s, sink has %d and %d", r.Status, sink.CountFor("blocked.person@example.com"), sink.CountFor("open@example.jp"))
	}

	del := "/v1/suppressions/" + url.PathEscape("Blocked.Person@example.com")
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "DELETE", del, "", nil, nil); code != 422 || !strings.Contains(string(body), "reason") {
		t.Errorf("remove without a reason: %d %s, want 422", code, body)
	}
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "DELETE", del+"?reason=x", "", nil, nil); code != 403 {
		t.Errorf("remove as support: %d %s, want 403", code, body)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "DELETE", del+"?reason="+url.QueryEscape("customer called back: please send"), "", nil, nil); code != 204 {
		t.Fatalf("remove: %d %s", code, body)
	}
	if got := listed(); len(got) != 0 {
		t.Errorf("still listed after removal: %v", got)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "DELETE", del+"?reason=again", "", nil, nil); code != 404 {
		t.Errorf("remove twice: %d, want 404", code)
	}

	second, _ := sentCampaign(t, st, "after removal", rcpts)
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+second, "", nil, &c)
	if c.Counts.Sent != 2 || c.Counts.Suppressed != 0 || sink.CountFor("blocked.person@example.com") != 1 {
		t.Errorf("second campaign: counts %+v, blocked received %d", c.Counts, sink.CountFor("blocked.person@example.com"))
	}

	var audit struct {
		Entries []struct {
			Actor, Action, Reason string
			Details               json.RawMessage
		} `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?actor=admin", "", nil, &audit)
	var got []string
	for _, e := range audit.Entries {
		if strings.HasPrefix(e.Action, "suppression.") {
			got = append(got, e.Action+": "+e.Reason+" "+string(e.Details))
		}
	}
	want := []string{ // newest first
		`suppression.remove: customer called back: please send {"email":"b***@example.com"}`,
		`suppression.add: asked by phone not to be written to {"email":"b***@example.com"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit of suppressions:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCampaignRateAndControlsAudited: a campaign's own rate holds its
// messages apart even with no global SMTP_RATE; pause, resume and cancel
// are each in the audit log with the key's name.
func TestCampaignRateAndControlsAudited(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	const n, rate = 25, 10
	var rcpts []notice.Recipient
	for i := range n {
		rcpts = append(rcpts, notice.Recipient{Email: fmt.Sprintf("paced%02d@example.jp", i), Locale: "ja"})
	}
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": "paced", "rate": rate}), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if _, err := st.Svc.Store.AddRecipients(t.Context(), c.ID, rcpts); err != nil {
		t.Fatal(err)
	}
	action := func(a string) {
		t.Helper()
		if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/"+a, "", nil, nil); code >= 300 {
			t.Fatalf("%s: %d %s", a, code, body)
		}
	}
	action("start")
	teststack.Eventually(t, "campaign done", 30*time.Second, func() bool {
		var g notice.Campaign
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID, "", nil, &g)
		return g.Status == notice.CampaignDone
	})
	var times []time.Time
	for _, m := range sink.Messages() {
		if strings.HasPrefix(m.To[0], "paced") {
			times = append(times, m.Received)
		}
	}
	if len(times) != n {
		t.Fatalf("%d messages, want %d", len(times), n)
	}
	// GCRA at 10/s with a burst of 1: the 25th message at least 2.4 s after
	// the first (a little slack for when each reached the sink). Only the
	// lower bound is checked: a slow machine must not fail it.
	first, last := times[0], times[0]
	for _, tm := range times {
		first, last = minTime(first, tm), maxTime(last, tm)
	}
	if span := last.Sub(first); span < 2200*time.Millisecond {
		t.Errorf("%d messages at a campaign rate of %d/s went out in %s, want ≥ 2.4 s", n, rate, span)
	}

	// Pause, resume and cancel on a second paced campaign, each audited.
	var c2 notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": "controls", "rate": 2}), &c2)
	for i := range 50 {
		rcpts[i%n].Email = fmt.Sprintf("ctl%02d@example.jp", i)
		if _, err := st.Svc.Store.AddRecipients(t.Context(), c2.ID, rcpts[i%n:i%n+1]); err != nil {
			t.Fatal(err)
		}
	}
	c = c2
	for _, a := range []string{"start", "pause", "resume", "cancel"} {
		action(a)
	}
	var audit struct {
		Entries []struct{ Actor, Action string } `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+c2.ID, "", nil, &audit)
	var got []string
	for _, e := range audit.Entries {
		got = append(got, e.Actor+":"+e.Action)
	}
	if want := "admin:campaign.cancel admin:campaign.resume admin:campaign.pause admin:campaign.start admin:campaign.create"; strings.Join(got, " ") != want {
		t.Errorf("audit: %s\nwant  %s", strings.Join(got, " "), want)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
