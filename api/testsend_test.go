package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/mimetest"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestTestSend sends a draft campaign's notice to a reviewer: the message
// is the campaign's (its template, data and extra paragraphs, a sample
// recipient's name and card), the campaign itself is untouched, and the
// send is audited.
func TestTestSend(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	var c notice.Campaign
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": "card leak", "extra_paragraphs": []string{"窓口は土日も開いております。"}}), &c)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if _, err := st.Svc.Store.AddRecipients(context.Background(), c.ID, []notice.Recipient{{Email: "customer@example.jp", Locale: "ja"}}); err != nil {
		t.Fatal(err)
	}
	path := "/v1/campaigns/" + c.ID + "/test"
	for _, bad := range []string{`{"email":"not an address"}`, `{"email":"reviewer@example.jp","locale":"fr"}`} {
		if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", path, "application/json", []byte(bad), nil); code != 422 {
			t.Errorf("test send %s: %d %s, want 422", bad, code, body)
		}
	}
	sends := []struct{ body, to, subject, text string }{
		{`{"email":"reviewer@example.jp"}`, "reviewer@example.jp", "【重要】", "山田 太郎 様"},
		{`{"email":"en.reviewer@example.com","locale":"en","recipient":{"name":"Jane Roe","card_brand":"JCB","card_last4":"4242"}}`,
			"en.reviewer@example.com", "[Important]", "Jane Roe"},
	}
	for _, sd := range sends {
		var ans struct {
			CampaignID string `json:"campaign_id"`
		}
		code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", path, "application/json", []byte(sd.body), &ans)
		if code != 202 || ans.CampaignID == "" || ans.CampaignID == c.ID {
			t.Fatalf("test send %s: %d %s", sd.body, code, body)
		}
		teststack.Eventually(t, "test message at "+sd.to, 10*time.Second, func() bool { return sink.CountFor(sd.to) == 1 })
	}
	for _, m := range sink.Messages() {
		p, err := mimetest.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, sd := range sends {
			if m.To[0] != sd.to {
				continue
			}
			if !strings.HasPrefix(p.Subject, sd.subject) || !strings.Contains(p.Text, sd.text) {
				t.Errorf("%s: subject %q, text lacks %q", sd.to, p.Subject, sd.text)
			}
			if sd.to == "reviewer@example.jp" && !strings.Contains(p.Text, "窓口は土日も開いております。") {
				t.Errorf("the campaign's extra paragraph is not in the test message")
			}
			if sd.to == "en.reviewer@example.com" && !strings.Contains(p.Text, "4242") {
				t.Errorf("the given recipient's card is not in the test message")
			}
		}
	}
	if n := sink.CountFor("customer@example.jp"); n != 0 {
		t.Errorf("the campaign's own recipient got %d messages from a test send", n)
	}
	var after notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID, "", nil, &after)
	if after.Status != notice.CampaignDraft || after.Counts.Total != 1 || after.Counts.Sent != 0 {
		t.Errorf("campaign after test sends: %s %+v", after.Status, after.Counts)
	}
	var audit struct {
		Entries []struct{ Actor, Action string } `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+c.ID, "", nil, &audit)
	tests := 0
	for _, e := range audit.Entries {
		if e.Action == "campaign.test" && e.Actor == "admin" {
			tests++
		}
	}
	if tests != 2 {
		t.Errorf("%d test sends audited, want 2: %+v", tests, audit.Entries)
	}
}
