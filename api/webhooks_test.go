package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/webhooks"
)

// receiver is a real HTTP endpoint that verifies every request with the
// Standard Webhooks reference library, and answers what answer says.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	secret []string // accepted secrets; each request must verify with every one
	got    []delivery
	answer func(id string, n int) (int, string) // status, Retry-After; n: the id's attempt
	tries  map[string]int
}

type delivery struct {
	id     string
	events []webhooks.Event
	status int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t, tries: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, s := range rc.secret {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Errorf("secret %.10s…: %v", s, err)
				continue
			}
			if err := wh.Verify(body, r.Header); err != nil {
				t.Errorf("delivery %s: %v", r.Header.Get("webhook-id"), err)
			}
		}
		id := r.Header.Get("webhook-id")
		rc.tries[id]++
		status, after := 200, ""
		if rc.answer != nil {
			status, after = rc.answer(id, rc.tries[id])
		}
		var evs []webhooks.Event
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		rc.got = append(rc.got, delivery{id, evs, status})
		if after != "" {
			w.Header().Set("Retry-After", after)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// accepted returns the events of the deliveries answered 2xx.
func (rc *receiver) accepted() []webhooks.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []webhooks.Event
	for _, d := range rc.got {
		if d.status < 300 {
			out = append(out, d.events...)
		}
	}
	return out
}

func count(evs []webhooks.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestStatusWebhooks: an endpoint registered through the API gets signed,
// batched recipient and campaign events of a real campaign sent to a real
// SMTP sink, with the customer id and (as it asked) the address; a 503
// with Retry-After is retried under the same webhook-id; a rotation signs
// with both secrets; 410 disables the endpoint.
func TestStatusWebhooks(t *testing.T) {
	st, _ := startSupportStack(t, map[string]string{"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_BATCH_SIZE": "2", "RESENDS_PER_HOUR": "0"})
	rc := newReceiver(t)

	for _, bad := range []string{`{"url":"ftp://x","events":["recipient.sent"]}`, `{"url":"` + rc.srv.URL + `","events":["recipient.sen"]}`,
		`{"url":"` + rc.srv.URL + `","events":[]}`} {
		if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json", []byte(bad), nil); code != 422 {
			t.Errorf("register %s: %d %s, want 422", bad, code, b)
		}
	}
	if code, _ := teststack.Do(t, st.Base, teststack.SupportKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc.srv.URL+`","events":["*"]}`), nil); code != 403 {
		t.Errorf("support registers a webhook: %d, want 403", code)
	}
	var wh api.WebhookView
	code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc.srv.URL+`","events":["recipient.sent","recipient.resent","campaign.started","campaign.done"],"include_address":true}`), &wh)
	if code != 201 || len(wh.Secret) < 40 || wh.Secret[:6] != "whsec_" {
		t.Fatalf("register: %d %s", code, b)
	}
	rc.mu.Lock()
	rc.secret = []string{wh.Secret}
	// The first delivery fails once with 503 and Retry-After: 1.
	rc.answer = func(id string, n int) (int, string) {
		if len(rc.tries) == 1 && n == 1 {
			return 503, "1"
		}
		return 200, ""
	}
	rc.mu.Unlock()
	var shown api.WebhookView
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/webhooks/"+wh.ID, "", nil, &shown); code != 200 || shown.Secret != "" {
		t.Errorf("GET shows the secret or fails: %d %s", code, b)
	}

	rcpts := []notice.Recipient{
		{Email: "a@example.jp", Name: "A", Locale: "ja", CardLast4: "1111", CustomerID: "C-1"},
		{Email: "b@example.jp", Name: "B", Locale: "ja", CardLast4: "2222", CustomerID: "C-2"},
		{Email: "c@example.jp", Name: "C", Locale: "en", CardLast4: "3333", CustomerID: "C-3"},
	}
	cid, ids := sentCampaign(t, st, "hooked", rcpts)
	teststack.Eventually(t, "3 recipient.sent, campaign.started and campaign.done", 30*time.Second, func() bool {
		evs := rc.accepted()
		return count(evs, webhooks.RecipientSent) >= 3 && count(evs, webhooks.CampaignStarted) >= 1 && count(evs, webhooks.CampaignDone) >= 1
	})
	evs := rc.accepted()
	byCustomer := map[string]webhooks.Data{}
	for _, e := range evs {
		if e.Data.CampaignID != cid || e.Timestamp.IsZero() {
			t.Errorf("event %+v", e)
		}
		if e.Type == webhooks.RecipientSent {
			byCustomer[e.Data.CustomerID] = e.Data
		}
	}
	for i, r := range rcpts {
		d := byCustomer[r.CustomerID]
		if d.RecipientID != ids[i] || d.Email != r.Email || d.Status != "sent" || d.SMTPCode != 250 || d.SentAt == nil || d.MessageID == "" {
			t.Errorf("recipient.sent for %s: %+v", r.CustomerID, d)
		}
	}
	rc.mu.Lock()
	first := rc.got[0]
	var again int
	for _, d := range rc.got[1:] {
		if d.id == first.id {
			again++
		}
		if len(d.events) > 2 {
			t.Errorf("a request of %d events, past WEBHOOK_BATCH_SIZE=2", len(d.events))
		}
	}
	rc.mu.Unlock()
	if first.status != 503 || again != 1 {
		t.Errorf("the first delivery (503) was retried %d times under its webhook-id, want 1", again)
	}

	// Rotation: from now on every request verifies with the old and the new secret.
	var rot api.WebhookView
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks/"+wh.ID+"/rotate", "", nil, &rot); code != 200 ||
		rot.Secret == wh.Secret || rot.PreviousSecretUntil == nil || rot.PreviousSecretUntil.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("rotate: %d %s", code, b)
	}
	rc.mu.Lock()
	rc.secret = []string{wh.Secret, rot.Secret}
	rc.answer = func(string, int) (int, string) { return 410, "" } // and then the receiver is gone
	rc.mu.Unlock()
	if code, b := teststack.Do(t, st.Base, teststack.SupportKey, "POST", "/v1/campaigns/"+cid+"/recipients/1/resend", "application/json",
		[]byte(`{"reason":"called"}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, b)
	}
	teststack.Eventually(t, "the endpoint disabled by 410", 30*time.Second, func() bool {
		var v api.WebhookView
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/webhooks/"+wh.ID, "", nil, &v)
		return v.DisabledAt != nil
	})
	rc.mu.Lock()
	last := rc.got[len(rc.got)-1]
	rc.mu.Unlock()
	if last.status != 410 || count(last.events, webhooks.RecipientResent) != 1 || last.events[0].Data.Resend != 1 {
		t.Errorf("last delivery: %+v", last)
	}

	for _, result := range []string{"ok", "retry", "gone"} {
		if metric(t, st, "oshirase_webhook_deliveries_total", `result="`+result+`"`) < 1 {
			t.Errorf("oshirase_webhook_deliveries_total{result=%q} not counted", result)
		}
	}
	var list struct {
		Webhooks []api.WebhookView `json:"webhooks"`
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/webhooks", "", nil, &list); code != 200 || len(list.Webhooks) != 1 {
		t.Errorf("list: %d %+v", code, list)
	}
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "DELETE", "/v1/webhooks/"+wh.ID, "", nil, nil); code != 204 {
		t.Errorf("delete: %d %s", code, b)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/webhooks/"+wh.ID, "", nil, nil); code != 404 {
		t.Errorf("after delete: %d, want 404", code)
	}
}

// TestStatusWebhookFailures: a 5.1.1 refusal is a recipient.failed event
// with the SMTP and enhanced codes; the address then suppressed is a
// recipient.suppressed event in the next campaign; a 429 with Retry-After
// is retried under the same webhook-id; an endpoint scoped to a campaign
// gets only its events.
func TestStatusWebhookFailures(t *testing.T) {
	const bad = "unknown@example.jp"
	_, url := testenv.Redis(t, testenv.DBSupport)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true, Reply: func(stage smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt && rcpt == bad {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "whf",
		"WEBHOOK_ALLOW_PRIVATE": "true", "CHUNK_SIZE": "10"}), service.Options{API: true, Worker: true})
	rc := newReceiver(t)
	var wh api.WebhookView
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc.srv.URL+`","events":["recipient.failed","recipient.suppressed"]}`), &wh); code != 201 {
		t.Fatalf("register: %d %s", code, b)
	}
	rc.mu.Lock()
	rc.secret = []string{wh.Secret}
	rc.answer = func(id string, n int) (int, string) {
		if n == 1 {
			return 429, "1"
		}
		return 200, ""
	}
	rc.mu.Unlock()

	first, _ := sentCampaign(t, st, "first", []notice.Recipient{
		{Email: bad, Locale: "ja", CardLast4: "1111", CustomerID: "C-bad"},
		{Email: "fine@example.jp", Locale: "ja", CardLast4: "2222", CustomerID: "C-fine"},
	})
	second, _ := sentCampaign(t, st, "second", []notice.Recipient{{Email: bad, Locale: "ja", CardLast4: "1111", CustomerID: "C-bad"}})
	teststack.Eventually(t, "recipient.failed and recipient.suppressed", 30*time.Second, func() bool {
		evs := rc.accepted()
		return count(evs, webhooks.RecipientFailed) >= 1 && count(evs, webhooks.RecipientSuppressed) >= 1
	})
	for _, e := range rc.accepted() {
		switch e.Type {
		case webhooks.RecipientFailed:
			if e.Data.CampaignID != first || e.Data.CustomerID != "C-bad" || e.Data.SMTPCode != 550 || e.Data.EnhancedCode != "5.1.1" || e.Data.Email != "" {
				t.Errorf("recipient.failed: %+v", e.Data)
			}
		case webhooks.RecipientSuppressed:
			if e.Data.CampaignID != second || e.Data.CustomerID != "C-bad" || e.Data.Status != "suppressed" {
				t.Errorf("recipient.suppressed: %+v", e.Data)
			}
		default:
			t.Errorf("event %s not subscribed to", e.Type)
		}
	}
	rc.mu.Lock()
	for id, n := range rc.tries {
		if n != 2 {
			t.Errorf("delivery %s tried %d times, want 2 (429, then 200)", id, n)
		}
	}
	rc.mu.Unlock()

	// An endpoint for one campaign only.
	rc2 := newReceiver(t)
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc2.srv.URL+`","events":["*"],"campaign_id":"`+second+`"}`), &wh); code != 201 {
		t.Fatalf("register: %d %s", code, b)
	}
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc2.srv.URL+`","events":["*"],"campaign_id":"nosuch"}`), nil); code != 422 {
		t.Errorf("register for a missing campaign: %d %s", code, b)
	}
	rc2.mu.Lock()
	rc2.secret = []string{wh.Secret}
	rc2.mu.Unlock()
	third, _ := sentCampaign(t, st, "third", []notice.Recipient{{Email: "x@example.jp", Locale: "ja", CardLast4: "3333"}})
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+second+"/purge", "application/json", []byte(`{"reason":"done"}`), nil); code != 200 {
		t.Fatalf("purge: %d %s", code, b)
	}
	teststack.Eventually(t, "campaign.purged", 20*time.Second, func() bool { return count(rc2.accepted(), webhooks.CampaignPurged) == 1 })
	for _, e := range rc2.accepted() {
		if e.Data.CampaignID != second {
			t.Errorf("an event of campaign %s (third: %s) reached an endpoint for %s", e.Data.CampaignID, third, second)
		}
	}
}
