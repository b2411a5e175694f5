package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// hookStack starts a whole service (API and worker) on DBAPI with a prefix
// of its own and webhooks to loopback allowed.
func hookStack(t *testing.T, prefix string, env map[string]string) *teststack.Stack {
	t.Helper()
	_, url := testenv.Redis(t, testenv.DBAPI)
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": prefix, "WEBHOOK_ALLOW_PRIVATE": "true", "CHUNK_SIZE": "10"}
	for k, v := range env {
		vars[k] = v
	}
	return teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true, Worker: true})
}

type deliveryPage struct {
	Deliveries []store.DeliveryAttempt `json:"deliveries"`
	NextCursor *string                 `json:"next_cursor"`
}

// TestWebhookDeliveryLog: every attempt to a real receiver is in the
// endpoint's log (status code, latency, error, event count, attempt
// number), pages by cursor, and a logged delivery can be sent again under
// its webhook-id, audited.
func TestWebhookDeliveryLog(t *testing.T) {
	st := hookStack(t, "whlog", map[string]string{"WEBHOOK_BATCH_SIZE": "100"})
	rc := newReceiver(t)
	var wh api.WebhookView
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
		[]byte(`{"url":"`+rc.srv.URL+`","events":["campaign.started","campaign.done"]}`), &wh); code != 201 {
		t.Fatalf("register: %d %s", code, b)
	}
	rc.mu.Lock()
	rc.secret = []string{wh.Secret}
	rc.answer = func(id string, n int) (int, string) {
		if n == 1 {
			return 500, "1" // each delivery's first attempt fails
		}
		return 200, ""
	}
	rc.mu.Unlock()
	sentCampaign(t, st, "logged", []notice.Recipient{{Email: "a@example.jp", Locale: "ja", CardLast4: "1111", CustomerID: "C-1"}})
	teststack.Eventually(t, "campaign.started and campaign.done accepted", 30*time.Second, func() bool {
		evs := rc.accepted()
		return count(evs, webhooks.CampaignStarted) >= 1 && count(evs, webhooks.CampaignDone) >= 1
	})

	path := "/v1/webhooks/" + wh.ID + "/deliveries"
	var page deliveryPage
	teststack.Eventually(t, "the accepted attempts logged", 10*time.Second, func() bool {
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", path, "", nil, &page)
		ok := 0
		for _, a := range page.Deliveries {
			if a.StatusCode == 200 {
				ok++
			}
		}
		return ok >= 1 && len(page.Deliveries) >= 2*ok
	})
	rc.mu.Lock()
	tries := len(rc.got)
	rc.mu.Unlock()
	if len(page.Deliveries) != tries {
		t.Errorf("%d attempts logged, the receiver saw %d", len(page.Deliveries), tries)
	}
	byDelivery := map[string][]store.DeliveryAttempt{}
	for i, a := range page.Deliveries {
		if i > 0 && a.At.After(page.Deliveries[i-1].At) {
			t.Errorf("log not newest first: %+v after %+v", a, page.Deliveries[i-1])
		}
		if a.ID == "" || a.Events < 1 || a.LatencyMS < 0 || a.At.IsZero() {
			t.Errorf("attempt %+v", a)
		}
		byDelivery[a.DeliveryID] = append(byDelivery[a.DeliveryID], a)
	}
	var ok store.DeliveryAttempt
	for id, as := range byDelivery {
		// newest first: the 200, then the 500
		if len(as) != 2 || as[0].StatusCode != 200 || as[0].Attempt != 2 || as[0].Error != "" ||
			as[1].StatusCode != 500 || as[1].Attempt != 1 || !strings.Contains(as[1].Error, "500") {
			t.Errorf("delivery %s: %+v, want a 500 (attempt 1, error) then a 200 (attempt 2)", id, as)
		}
		ok = as[0]
	}

	// Pages: limit 1, then the cursor.
	var p1, p2 deliveryPage
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", path+"?limit=1", "", nil, &p1)
	if len(p1.Deliveries) != 1 || p1.NextCursor == nil || p1.Deliveries[0].ID != page.Deliveries[0].ID {
		t.Fatalf("first page: %+v", p1)
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", path+"?limit=1&cursor="+*p1.NextCursor, "", nil, &p2)
	if len(p2.Deliveries) != 1 || p2.Deliveries[0].ID != page.Deliveries[1].ID {
		t.Errorf("second page: %+v, want %+v", p2, page.Deliveries[1])
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?cursor=abc"} {
		if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "GET", path+q, "", nil, nil); code != 400 {
			t.Errorf("GET deliveries%s: %d %s, want 400", q, code, b)
		}
	}
	if code, _ := teststack.Do(t, st.Base, teststack.SupportKey, "GET", path, "", nil, nil); code != 403 {
		t.Errorf("support reads the delivery log: %d, want 403", code)
	}

	// Redeliver the accepted delivery: same webhook-id, same events.
	rc.mu.Lock()
	before := rc.tries[ok.DeliveryID]
	var sent []webhooks.Event
	for _, d := range rc.got {
		if d.id == ok.DeliveryID && d.status == 200 {
			sent = d.events
		}
	}
	rc.mu.Unlock()
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", path+"/"+ok.DeliveryID+"/redeliver", "", nil, nil); code != 202 {
		t.Fatalf("redeliver: %d %s", code, b)
	}
	teststack.Eventually(t, "the redelivery received", 10*time.Second, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.tries[ok.DeliveryID] == before+1
	})
	rc.mu.Lock()
	last := rc.got[len(rc.got)-1]
	rc.mu.Unlock()
	a, _ := json.Marshal(last.events)
	b, _ := json.Marshal(sent)
	if last.id != ok.DeliveryID || string(a) != string(b) {
		t.Errorf("redelivered %s %s, want %s %s", last.id, a, ok.DeliveryID, b)
	}
	teststack.Eventually(t, "the redelivery logged", 10*time.Second, func() bool {
		var pg deliveryPage
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", path+"?limit=1", "", nil, &pg)
		return len(pg.Deliveries) == 1 && pg.Deliveries[0].Redelivery && pg.Deliveries[0].DeliveryID == ok.DeliveryID
	})
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", path+"/msg_nosuch/redeliver", "", nil, nil); code != 404 {
		t.Errorf("redeliver an unknown delivery: %d %s, want 404", code, b)
	}
	n := teststack.AuditCount(t, st.Base, "", "webhook.redeliver")
	if n != 1 {
		t.Errorf("%d webhook.redeliver audit entries, want 1", n)
	}
}

// TestWebhookRegisteredElsewhere: an endpoint registered through one
// process gets the events another process (sharing the Redis) emits right
// after, not only those after the other's next periodic re-read.
func TestWebhookRegisteredElsewhere(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBAPI)
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "whx", "WEBHOOK_ALLOW_PRIVATE": "true"}
	a := teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true})
	b := teststack.StartStack(t, testenv.Config(t, vars), service.Options{Worker: true})

	for round := range 3 {
		rc := newReceiver(t)
		var wh api.WebhookView
		if code, body := teststack.Do(t, a.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
			[]byte(`{"url":"`+rc.srv.URL+`","events":["recipient.sent"]}`), &wh); code != 201 {
			t.Fatalf("register: %d %s", code, body)
		}
		rc.mu.Lock()
		rc.secret = []string{wh.Secret}
		rc.mu.Unlock()
		// The other process emits at once (as its worker would for a
		// message sent just now).
		for i := range 5 {
			b.Svc.Events.Emit(webhooks.Event{Type: webhooks.RecipientSent, Data: webhooks.Data{CampaignID: "c" + wh.ID, RecipientID: int64(i + 1), Status: "sent"}})
		}
		teststack.Eventually(t, "round "+string(rune('1'+round))+": 5 events emitted by the other process delivered", 15*time.Second,
			func() bool { return count(rc.accepted(), webhooks.RecipientSent) == 5 })
		// And a deleted endpoint gets nothing more.
		if code, _ := teststack.Do(t, a.Base, teststack.AdminKey, "DELETE", "/v1/webhooks/"+wh.ID, "", nil, nil); code != 204 {
			t.Fatal("delete")
		}
	}
	v, err := b.Svc.Store.WebhooksVersion(context.Background())
	if err != nil || v != 6 {
		t.Errorf("change counter %d %v, want 6 (3 creates, 3 deletes)", v, err)
	}
}
