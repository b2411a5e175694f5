package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/store"
)

// startSupportStack runs API and worker on the support tests' Redis with an
// SMTP sink that keeps what it receives.
func startSupportStack(t *testing.T, env map[string]string) (*teststack.Stack, *smtpsink.Sink) {
	t.Helper()
	_, url := testenv.Redis(t, testenv.DBSupport)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "KEY_PREFIX": "sup"}
	for k, v := range env {
		vars[k] = v
	}
	st := teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true, Worker: true})
	return st, sink
}

// sentCampaign creates a campaign with rcpts (added through the store, so
// these tests do not depend on the upload parser), starts it and waits for
// it to finish.
func sentCampaign(t testing.TB, st *teststack.Stack, name string, rcpts []notice.Recipient) (string, []int64) {
	t.Helper()
	var c notice.Campaign
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": name}), &c)
	if code != 201 {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	added, err := st.Svc.Store.AddRecipients(context.Background(), c.ID, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	return c.ID, added.IDs
}

func lookup(t *testing.T, st *teststack.Stack, addr string) app.LookupResult {
	t.Helper()
	var res app.LookupResult
	code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/recipients?email="+addr, "", nil, &res)
	if code != 200 {
		t.Fatalf("look up: %d %s", code, body)
	}
	return res
}

func TestLookupResendAudit(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	const (
		taro      = "Taro.Yamada@Example.JP"
		corrected = "taro.new@example.jp"
		hanako    = "hanako@example.jp"
	)
	cid, ids := sentCampaign(t, st, "card leak", []notice.Recipient{
		{Email: taro, Name: "山田 太郎", Locale: "ja", CardLast4: "1234"},
		{Email: hanako, Name: "佐藤 花子", Locale: "ja", CardLast4: "5678"},
		{Email: "john@example.com", Name: "John", Locale: "en", CardLast4: "9012"},
	})

	// Look-up: the domain (and in practice the local part) in any case.
	res := lookup(t, st, "taro.yamada@EXAMPLE.jp")
	if len(res.Notices) != 1 {
		t.Fatalf("look-up found %d notices, want 1: %+v", len(res.Notices), res)
	}
	n := res.Notices[0]
	if n.Campaign.ID != cid || n.Campaign.Name != "card leak" || n.ID != ids[0] || n.Status != notice.StatusSent ||
		n.MessageID == "" || n.SentAt == nil || len(n.History) != 1 || !n.History[0].OK || n.History[0].Code != 250 {
		t.Fatalf("look-up: %+v", n)
	}
	if res := lookup(t, st, "nobody@example.jp"); len(res.Notices) != 0 {
		t.Fatalf("unknown address: %+v", res)
	}

	resendPath := fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[0])
	for _, c := range []struct {
		body string
		code int
	}{
		{`{}`, 422},
		{`{"reason":"  "}`, 422},
		{`{"reason":"moved","email":"not an address"}`, 422},
		{`{"reason":"moved","emial":"typo@example.jp"}`, 400},
	} {
		if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "POST", resendPath, "application/json", []byte(c.body), nil); code != c.code {
			t.Errorf("resend %s: %d %s, want %d", c.body, code, body, c.code)
		}
	}
	if code, _ := teststack.Do(t, st.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/999/resend", cid),
		"application/json", []byte(`{"reason":"x"}`), nil); code != 404 {
		t.Errorf("resend of a missing recipient: %d, want 404", code)
	}

	// A resend to a corrected address is a new delivery; the original stays.
	var ans struct {
		Resend notice.Resend `json:"resend"`
		URL    string        `json:"url"`
	}
	code, body := teststack.Do(t, st.Base, teststack.SupportKey, "POST", resendPath, "application/json",
		[]byte(`{"reason":"customer changed address","email":"`+corrected+`"}`), &ans)
	if code != 202 || ans.Resend.N != 1 || ans.Resend.Email != corrected || ans.Resend.Actor != "support" || ans.Resend.Status != notice.StatusPending {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "resend delivered", 10*time.Second, func() bool { return sink.CountFor(corrected) == 1 })
	teststack.Eventually(t, "resend recorded", 5*time.Second, func() bool {
		r := lookup(t, st, taro).Notices[0]
		return len(r.Resends) == 1 && r.Resends[0].Status == notice.StatusSent
	})
	n2 := lookup(t, st, taro).Notices[0]
	rs := n2.Resends[0]
	if rs.MessageID == "" || rs.MessageID == n.MessageID || rs.SentAt == nil || rs.Reason != "customer changed address" {
		t.Fatalf("resend record: %+v", rs)
	}
	if n2.Status != notice.StatusSent || n2.MessageID != n.MessageID || *n2.SentAt != *n.SentAt {
		t.Fatalf("original delivery changed: %+v, was %+v", n2.Delivery, n.Delivery)
	}
	if sink.CountFor(taro) != 1 {
		t.Fatalf("original address got %d messages, want 1", sink.CountFor(taro))
	}
	// The customer who gave the new address is found by it too: the same
	// notice, with the resend to it.
	if res := lookup(t, st, corrected); len(res.Notices) != 1 || res.Notices[0].ID != ids[0] || len(res.Notices[0].Resends) != 1 ||
		res.Notices[0].Resends[0].Email != corrected {
		t.Fatalf("look-up by the corrected address: %+v", res.Notices)
	}
	// A second resend to the same corrected address adds no second entry.
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "POST", resendPath, "application/json",
		[]byte(`{"reason":"once more","email":"`+corrected+`"}`), nil); code != 202 {
		t.Fatalf("second resend: %d %s", code, body)
	}
	teststack.Eventually(t, "second resend delivered", 10*time.Second, func() bool { return sink.CountFor(corrected) == 2 })
	if res := lookup(t, st, corrected); len(res.Notices) != 1 {
		t.Fatalf("look-up after a second resend: %d notices, want 1", len(res.Notices))
	}

	// A suppressed address needs the override.
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/suppressions", "application/json",
		[]byte(`{"email":"`+hanako+`","reason":"customer asked"}`), nil); code != 201 {
		t.Fatalf("suppress: %d %s", code, body)
	}
	hanakoPath := fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[1])
	code, body = teststack.Do(t, st.Base, teststack.SupportKey, "POST", hanakoPath, "application/json", []byte(`{"reason":"deleted it"}`), nil)
	if code != 409 || !strings.Contains(string(body), "override_suppression") {
		t.Fatalf("resend to a suppressed address: %d %s, want 409 naming the override", code, body)
	}
	code, body = teststack.Do(t, st.Base, teststack.SupportKey, "POST", hanakoPath, "application/json", []byte(`{"reason":"deleted it","override_suppression":true}`), nil)
	if code != 202 {
		t.Fatalf("resend with override: %d %s", code, body)
	}
	teststack.Eventually(t, "overridden resend delivered", 10*time.Second, func() bool { return sink.CountFor(hanako) == 2 })

	// The audit log has who, what, when and why.
	var audit struct {
		Entries []store.AuditEntry `json:"entries"`
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+cid, "", nil, &audit)
	if code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	actions := map[string]int{}
	for _, e := range audit.Entries {
		actions[e.Action]++
		if e.CampaignID != cid || e.At.IsZero() {
			t.Errorf("audit entry of another campaign or without time: %+v", e)
		}
	}
	if actions["campaign.create"] != 1 || actions["campaign.start"] != 1 || actions["recipient.resend"] != 3 {
		t.Fatalf("audit actions: %v", actions)
	}
	if strings.Contains(strings.ToLower(string(body)), strings.ToLower(corrected)) || strings.Contains(strings.ToLower(string(body)), hanako) {
		t.Fatalf("audit log shows a full address: %s", body)
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?actor=support&limit=1", "", nil, &audit)
	if code != 200 || len(audit.Entries) != 1 || audit.Entries[0].Action != "recipient.resend" || audit.Entries[0].Reason != "deleted it" ||
		audit.Entries[0].Recipient != ids[1] {
		t.Fatalf("audit by actor: %d %s", code, body)
	}
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	json.Unmarshal(body, &page)
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?actor=support&cursor="+page.NextCursor, "", nil, &audit)
	if code != 200 || len(audit.Entries) != 2 || audit.Entries[0].Reason != "once more" || audit.Entries[1].Reason != "customer changed address" {
		t.Fatalf("audit second page: %d %s", code, body)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?cursor=x", "", nil, nil); code != 400 {
		t.Errorf("bad cursor: %d, want 400", code)
	}
}

func TestNotification(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	const addr = "Single@Example.com"
	cid, _ := sentCampaign(t, st, "earlier campaign", []notice.Recipient{{Email: addr, Locale: "en", CardLast4: "1111"}})

	var req map[string]any
	json.Unmarshal(teststack.CampaignJSON(nil), &req)
	notif := map[string]any{
		"template": "card-reissue", "locale": "en", "from": req["from"], "data": req["data"],
		"recipient": map[string]any{"email": addr, "name": "Single Person", "card_last4": "4242"},
	}
	b, _ := json.Marshal(notif)
	var ans app.NotificationAnswer
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/notifications", "application/json", b, &ans)
	if code != 202 || ans.CampaignID == "" || ans.CampaignID == cid || ans.RecipientID != 1 || ans.URL == "" {
		t.Fatalf("notification: %d %s", code, body)
	}
	teststack.Eventually(t, "notification delivered", 10*time.Second, func() bool { return sink.CountFor(addr) == 2 })
	teststack.WaitCampaign(t, st.Base, ans.CampaignID, 5*time.Second, func(c *notice.Campaign) bool {
		return c.Status == notice.CampaignDone && c.Counts.Sent == 1
	})
	var rc notice.Recipient
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", ans.URL, "", nil, &rc); code != 200 || rc.Status != notice.StatusSent || rc.MessageID == "" {
		t.Fatalf("poll %s: %d %s", ans.URL, code, body)
	}
	res := lookup(t, st, addr)
	if len(res.Notices) != 2 {
		t.Fatalf("look-up after notification: %d notices, want 2", len(res.Notices))
	}
	found := false
	for _, n := range res.Notices {
		found = found || (n.Campaign.ID == ans.CampaignID && n.Campaign.Name == app.NotificationPrefix+"card-reissue" && n.Status == notice.StatusSent)
	}
	if !found {
		t.Fatalf("look-up does not show the notification: %+v", res.Notices)
	}

	// Invalid requests create nothing.
	for _, bad := range []map[string]any{
		{"template": "no-such-template", "locale": "en", "from": req["from"], "data": req["data"], "recipient": map[string]any{"email": addr}},
		{"template": "card-reissue", "locale": "fr", "from": req["from"], "data": req["data"], "recipient": map[string]any{"email": addr}},
		{"template": "card-reissue", "locale": "en", "from": req["from"], "data": req["data"], "recipient": map[string]any{"email": "nope"}},
		{"template": "card-reissue", "locale": "en", "from": "", "data": req["data"], "recipient": map[string]any{"email": addr}},
	} {
		b, _ := json.Marshal(bad)
		if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/notifications", "application/json", b, nil); code != 422 {
			t.Errorf("bad notification %v: %d %s, want 422", bad, code, body)
		}
	}
	// A suppressed address needs the override.
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/suppressions", "application/json", []byte(`{"email":"`+addr+`","reason":"bounced"}`), nil)
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/notifications", "application/json", b, nil); code != 409 {
		t.Errorf("notification to a suppressed address: %d %s, want 409", code, body)
	}
	var list struct {
		Campaigns []notice.Campaign `json:"campaigns"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns", "", nil, &list)
	if len(list.Campaigns) != 2 {
		t.Errorf("%d campaigns after failed notifications, want 2", len(list.Campaigns))
	}
	var audit struct {
		Entries []store.AuditEntry `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+ans.CampaignID, "", nil, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Action != "notification.send" || audit.Entries[0].Actor != "admin" {
		t.Errorf("notification audit: %+v", audit.Entries)
	}
}
