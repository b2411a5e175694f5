package monitoring_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/tasks"
)

type caller struct {
	name string
	set  func(*http.Request)
}

var (
	noKey    = caller{"no key", func(*http.Request) {}}
	badKey   = caller{"bad key", func(r *http.Request) { r.SetBasicAuth("x", "not-a-key-0123456789") }}
	support  = caller{"support", func(r *http.Request) { r.SetBasicAuth("kim", testenv.SupportKey) }}
	operator = caller{"operator (basic)", func(r *http.Request) { r.SetBasicAuth("kim", testenv.OperatorKey) }}
	opBearer = caller{"operator (bearer)", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testenv.OperatorKey) }}
	admin    = caller{"admin (basic)", func(r *http.Request) { r.SetBasicAuth("", testenv.AdminKey) }}

	adminFromElsewhere = caller{"admin, Origin another site", func(r *http.Request) {
		r.SetBasicAuth("", testenv.AdminKey)
		r.Header.Set("Origin", "https://evil.example")
	}}
	adminCrossSite = caller{"admin, Sec-Fetch-Site cross-site", func(r *http.Request) {
		r.SetBasicAuth("", testenv.AdminKey)
		r.Header.Set("Sec-Fetch-Site", "cross-site")
	}}
	adminFromHere = caller{"admin, Origin this site", func(r *http.Request) {
		r.SetBasicAuth("", testenv.AdminKey)
		r.Header.Set("Origin", "http://"+r.Host)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}}
)

func call(t *testing.T, base string, c caller, method, path string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	c.set(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// apiStack runs the API only: tasks stay in their queues for the UI to show.
func apiStack(t *testing.T) *teststack.Stack {
	_, url := testenv.Redis(t, testenv.DBMisc)
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "mon"})
	return teststack.StartStack(t, cfg, service.Options{API: true})
}

var emailRE = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[a-z]{2,}`)

func TestMonitoringUI(t *testing.T) {
	st := apiStack(t)
	ctx := context.Background()

	// A started campaign (a fan-out task) and a single notice (a delivery
	// task on the urgent queue), with no worker to take them.
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if _, err := st.Svc.Store.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "secret.person@example.jp", Name: "秘密 太郎"}}); err != nil {
		t.Fatal(err)
	}
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	var req map[string]any
	json.Unmarshal(teststack.CampaignJSON(nil), &req)
	n, _ := json.Marshal(map[string]any{"template": "card-reissue", "locale": "ja", "from": req["from"], "data": req["data"],
		"recipient": map[string]any{"email": "another.secret@example.com", "name": "Another Secret"}})
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/notifications", "application/json", n, nil); code != 202 {
		t.Fatalf("notification: %d %s", code, body)
	}

	for _, tc := range []struct {
		c      caller
		method string
		path   string
		want   int
	}{
		{noKey, "GET", "/monitoring/", 401},
		{badKey, "GET", "/monitoring/", 401},
		{support, "GET", "/monitoring/", 403},
		{operator, "GET", "/monitoring/", 200},
		{opBearer, "GET", "/monitoring/api/queues", 200},
		{admin, "GET", "/monitoring/", 200},
		{operator, "POST", "/monitoring/api/queues/bulk:pause", 405}, // read-only
		{admin, "POST", "/monitoring/api/queues/bulk:pause", 204},
		{admin, "POST", "/monitoring/api/queues/bulk:resume", 204},
		// A forged form on another site, in the admin's browser.
		{adminFromElsewhere, "POST", "/monitoring/api/queues/bulk:pause", 403},
		{adminCrossSite, "DELETE", "/monitoring/api/queues/bulk/archived_tasks:delete_all", 403},
		{adminFromHere, "POST", "/monitoring/api/queues/bulk:pause", 204},
		{admin, "POST", "/monitoring/api/queues/bulk:resume", 204},
	} {
		code, h, body := call(t, st.Base, tc.c, tc.method, tc.path)
		if code != tc.want {
			t.Errorf("%s %s as %s: %d, want %d: %.200s", tc.method, tc.path, tc.c.name, code, tc.want, body)
		}
		if code == 401 && h.Get("WWW-Authenticate") != `Basic realm="oshirase", charset="UTF-8"` {
			t.Errorf("401 without a basic-auth challenge: %q", h.Get("WWW-Authenticate"))
		}
	}

	// Payloads shown to operators are ids only.
	seen := 0
	for _, q := range []string{tasks.QueueBulk, tasks.QueueUrgent} {
		code, _, body := call(t, st.Base, operator, "GET", "/monitoring/api/queues/"+q+"/pending_tasks?page=1&size=100")
		if code != 200 {
			t.Fatalf("list %s: %d %s", q, code, body)
		}
		var ans struct {
			Tasks []struct {
				Type    string `json:"type"`
				Payload any    `json:"payload"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(body), &ans); err != nil {
			t.Fatal(err)
		}
		seen += len(ans.Tasks)
		if m := emailRE.FindString(body); m != "" || strings.Contains(body, "Secret") || strings.Contains(body, "秘密") {
			t.Errorf("queue %s shows personal data (%q): %s", q, m, body)
		}
		if !strings.Contains(body, c.ID) && q == tasks.QueueBulk {
			t.Errorf("bulk queue does not show the campaign's fan-out: %s", body)
		}
	}
	if seen < 2 {
		t.Fatalf("%d pending tasks listed, want the fan-out and the notice", seen)
	}
}

func TestMetrics(t *testing.T) {
	st := apiStack(t)
	// Something in a queue, so queue metrics have a queue to show.
	var c notice.Campaign
	teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	st.Svc.Store.AddRecipients(context.Background(), c.ID, []notice.Recipient{{Email: "m@example.jp"}})
	teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)

	for _, tc := range []struct {
		c    caller
		want int
	}{{noKey, 401}, {badKey, 401}, {support, 403}, {operator, 200}, {opBearer, 200}, {admin, 200}} {
		code, h, body := call(t, st.Base, tc.c, "GET", "/metrics")
		if code != tc.want {
			t.Fatalf("/metrics as %s: %d, want %d", tc.c.name, code, tc.want)
		}
		if code != 200 {
			continue
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Errorf("content type %q", h.Get("Content-Type"))
		}
		for _, want := range []string{
			`asynq_queue_size{queue="bulk"} 1`,
			`asynq_queue_tasks{queue="bulk",state="pending"} 1`,
			`asynq_queue_latency_seconds{queue="bulk"}`,
			`asynq_tasks_processed_total{queue="bulk"}`,
			`asynq_tasks_failed_total{queue="bulk"}`,
			`asynq_up 1`,
			`oshirase_campaign_recipients{campaign="` + c.ID + `",status="pending"} 1`,
			`oshirase_campaign_recipients{campaign="` + c.ID + `",status="sent"} 0`,
			`oshirase_smtp_send_seconds_bucket`,
			`oshirase_rate_limit_wait_seconds_bucket`,
			`go_goroutines`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	}
}
