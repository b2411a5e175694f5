package faults_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestWorkerProcessMetricsAndReadiness: a worker-only process (as in the
// compose file) serves its own /metrics on METRICS_ADDR, behind the same
// keys as the API, with the delivery metrics that only it can know — sent,
// failed and retried messages, SMTP reply codes, send latency, rate-limit
// waits — and /readyz that turns 503 when the SMTP server goes away.
func TestWorkerProcessMetricsAndReadiness(t *testing.T) {
	const n = 100
	h := newHarness(t, setup{
		Env: env{"SMTP_RATE": "1000"},
		Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
			switch {
			case st == smtpsink.StageRcpt && rcpt == "u00007@example.jp":
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			case st == smtpsink.StageRcpt && rcpt == "u00008@example.jp" && k == 1:
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: greylisted}
			}
			return nil
		}},
	})
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	h.startWorker(env{"METRICS_ADDR": addr})
	base := "http://" + addr
	waitUp(t, base+"/healthz")

	id, _ := h.createCampaign(n, nil)
	h.action(id, "start")
	c := h.wait(id, 30*time.Second, done)
	if c.Counts.Sent != n-1 || c.Counts.Failed != 1 {
		t.Fatalf("counts %+v", c.Counts)
	}
	// A single notice counts under its kind, not under a campaign id of its
	// own: thousands of them must not make thousands of series.
	var req map[string]any
	json.Unmarshal(teststack.CampaignJSON(nil), &req)
	one, _ := json.Marshal(map[string]any{"template": "card-reissue", "locale": "ja", "from": req["from"], "data": req["data"],
		"recipient": map[string]any{"email": "single@example.jp"}})
	if code, body := teststack.Do(t, h.api.Base, testenv.AdminKey, "POST", "/v1/notifications", "application/json", one, nil); code != 202 {
		t.Fatalf("notification: %d %s", code, body)
	}
	teststack.Eventually(t, "the single notice sent", 10*time.Second, func() bool { return h.sink.CountFor("single@example.jp") == 1 })

	for _, tc := range []struct {
		who, key string
		want     int
	}{{"no key", "", 401}, {"bad key", "not-a-key-0123456789", 401}, {"support", testenv.SupportKey, 403},
		{"operator", testenv.OperatorKey, 200}, {"admin", testenv.AdminKey, 200}} {
		code, body := get(t, base+"/metrics", tc.key)
		if code != tc.want {
			t.Fatalf("worker /metrics as %s: %d, want %d", tc.who, code, tc.want)
		}
		if code != 200 {
			continue
		}
		for _, want := range []string{
			`oshirase_messages_total{campaign="` + id + `",result="sent"} 99`,
			`oshirase_messages_total{campaign="` + id + `",result="failed"} 1`,
			`oshirase_messages_total{campaign="` + id + `",result="retried"} 1`,
			`oshirase_messages_total{campaign="notification",result="sent"} 1`,
			`oshirase_smtp_replies_total{class="2xx",code="250",enhanced="2.0.0"} 100`,
			`oshirase_smtp_replies_total{class="5xx",code="550",enhanced="5.1.1"} 1`,
			`oshirase_smtp_replies_total{class="4xx",code="451",enhanced="4.7.1"} 1`,
			`oshirase_smtp_pool_connections_idle `,
			`oshirase_build_info{`,
			`oshirase_smtp_send_seconds_count 102`,
			`oshirase_rate_limit_wait_seconds_count`,
			`process_resident_memory_bytes`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("worker /metrics lacks %s", want)
			}
		}
		// Queue gauges come from the API only: N workers must not report
		// the same queue N times.
		if strings.Contains(body, "asynq_queue_size") {
			t.Error("worker /metrics exports the queues' gauges")
		}
	}
	// The API process took the upload.
	if code, body := get(t, h.api.Base+"/metrics", testenv.OperatorKey); code != 200 ||
		!regexp.MustCompile(`oshirase_recipients_ingested_total\{result="accepted"\} \d+`).MatchString(body) {
		t.Errorf("API /metrics: %d, no recipients_ingested_total", code)
	}

	ready := func() (int, map[string]string) {
		code, body := get(t, base+"/readyz", "")
		var r struct {
			Checks map[string]string `json:"checks"`
		}
		json.Unmarshal([]byte(body), &r)
		return code, r.Checks
	}
	if code, checks := ready(); code != 200 || checks["redis"] != "ok" || checks["smtp"] != "ok" {
		t.Fatalf("worker /readyz: %d %v", code, checks)
	}
	h.sink.Down()
	if code, checks := ready(); code != 503 || checks["redis"] != "ok" || checks["smtp"] != "down" {
		t.Fatalf("worker /readyz with the SMTP server down: %d %v", code, checks)
	}
	if code, body := get(t, h.api.Base+"/readyz", ""); code != 503 || !strings.Contains(body, `"smtp":"down"`) {
		t.Errorf("API /readyz with the SMTP server down: %d %s", code, body)
	}
}

func waitUp(t *testing.T, url string) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Fatalf("%s never answered", url)
}

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
