package service_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/tasks"
)

// logBuf collects JSON log lines from several goroutines.
type logBuf struct{ testenv.LogBuffer }

// lines decodes every line; a line that is not JSON fails the test.
func (b *logBuf) lines(t *testing.T) []map[string]any {
	t.Helper()
	raw := b.String()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func (b *logBuf) raw() string { return b.String() }

// find returns the lines whose fields include every field of want.
func find(lines []map[string]any, want map[string]any) []map[string]any {
	var out []map[string]any
next:
	for _, l := range lines {
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// TestOperatorLogs runs a campaign with one recipient the server refuses
// for good and another campaign an admin pauses, resumes and cancels, and
// reads the JSON log: each lifecycle step once, with its actor; an access
// line per request with route, status, duration and key name, never an
// address; one warning for the permanent refusal (no asynq "Retry
// exhausted" after it); go-redis's own lines as JSON.
func TestOperatorLogs(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Reply: func(st smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if st == smtpsink.StageRcpt && strings.HasPrefix(rcpt, "nobody") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + rcpt + ">: no such user"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rdb, url := testenv.Redis(t, testenv.DBService)
	var logs logBuf
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "logs"})
	st := teststack.StartStackLog(t, cfg, service.Options{API: true, Worker: true}, log)
	do := func(method, path, ctype string, body []byte, want int, out any) {
		t.Helper()
		if code, b := teststack.Do(t, st.Base, testenv.AdminKey, method, path, ctype, body, out); code != want {
			t.Fatalf("%s %s: %d %s", method, path, code, b)
		}
	}
	var c1, c2 notice.Campaign
	do("POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), 201, &c1)
	do("POST", "/v1/campaigns/"+c1.ID+"/recipients", "text/csv", []byte("email,name\nok1@example.jp,A\nnobody@example.jp,B\n"), 200, nil)
	do("POST", "/v1/campaigns/"+c1.ID+"/start", "", nil, 202, nil)
	teststack.WaitCampaign(t, st.Base, c1.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	// The permanent failure's report task is archived; asynq logs its
	// "Retry exhausted" (if at all) before it archives.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	teststack.Eventually(t, "the failure report archived", 10*time.Second, func() bool {
		ts, _ := insp.ListArchivedTasks(tasks.QueueRecipients)
		return len(ts) == 1
	})
	// A slow campaign an admin pauses, resumes and cancels.
	do("POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(map[string]any{"rate": 0.01}), 201, &c2)
	do("POST", "/v1/campaigns/"+c2.ID+"/recipients", "text/csv", []byte("email\na1@example.jp\na2@example.jp\na3@example.jp\n"), 200, nil)
	do("POST", "/v1/campaigns/"+c2.ID+"/start", "", nil, 202, nil)
	do("POST", "/v1/campaigns/"+c2.ID+"/pause", "", nil, 200, nil)
	do("POST", "/v1/campaigns/"+c2.ID+"/resume", "", nil, 200, nil)
	do("POST", "/v1/campaigns/"+c2.ID+"/cancel", "", nil, 200, nil)
	// A look-up by address: its query must not reach the log.
	if code, b := teststack.Do(t, st.Base, testenv.SupportKey, "GET", "/v1/recipients?email=nobody@example.jp", "", nil, nil); code != 200 {
		t.Fatalf("look-up: %d %s", code, b)
	}
	// go-redis's own line: a sub-millisecond expiry it truncates.
	if err := st.Svc.Redis.Set(context.Background(), "logs:probe", 1, 500*time.Microsecond).Err(); err != nil {
		t.Fatal(err)
	}
	st.Stop()

	lines := logs.lines(t)
	for _, tc := range []struct {
		msg, campaign, actor string
	}{
		{"campaign started", c1.ID, "admin"},
		{"campaign done", c1.ID, "system"},
		{"campaign started", c2.ID, "admin"},
		{"campaign paused", c2.ID, "admin"},
		{"campaign resumed", c2.ID, "admin"},
		{"campaign cancelled", c2.ID, "admin"},
	} {
		if got := find(lines, map[string]any{"msg": tc.msg, "campaign": tc.campaign, "actor": tc.actor}); len(got) != 1 {
			t.Errorf("%q of %s by %s logged %d times, want once", tc.msg, tc.campaign, tc.actor, len(got))
		}
	}
	start := find(lines, map[string]any{"msg": "request", "method": "POST", "route": "/v1/campaigns/{id}/start", "key": "admin"})
	if len(start) != 2 || start[0]["status"] != float64(202) || start[0]["duration_ms"] == nil {
		t.Errorf("access log of the starts: %v", start)
	}
	if got := find(lines, map[string]any{"msg": "request", "method": "GET", "route": "/v1/recipients", "key": "support", "status": float64(200)}); len(got) != 1 {
		t.Errorf("access log of the look-up: %v", got)
	}
	if raw := logs.raw(); strings.Contains(raw, "nobody@") || strings.Contains(raw, "ok1@") || strings.Contains(raw, "a1@") {
		t.Errorf("an address reached the log:\n%s", raw)
	}
	var warns []map[string]any
	for _, l := range lines {
		if l["level"] == "WARN" && (l["campaign"] == c1.ID || strings.Contains(l["msg"].(string), "Retry exhausted")) {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 || warns[0]["msg"] != "send failed" || warns[0]["enhanced"] != "5.1.1" {
		t.Errorf("warnings about the permanent refusal: %v, want one send failed", warns)
	}
	if got := find(lines, map[string]any{"component": "go-redis", "level": "WARN"}); len(got) == 0 ||
		!strings.Contains(got[0]["msg"].(string), "minimal supported value") {
		t.Errorf("go-redis's line is not in the JSON log: %v", got)
	}
}
