// Package teststack runs a whole oshirase in-process for end-to-end tests and
// gives them an API client.
package teststack

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
)

// Test API keys, one per role.
const (
	AdminKey    = testenv.AdminKey
	SupportKey  = testenv.SupportKey
	OperatorKey = testenv.OperatorKey
	APIKeys     = testenv.APIKeys
)

// Stack is a running oshirase (API and worker in one process, as `serve`).
type Stack struct {
	Svc  *service.Service
	Base string // http://127.0.0.1:port
	stop func()
}

// StartStack runs a service with cfg until the test ends.
func StartStack(t testing.TB, cfg *config.Config, opts service.Options) *Stack {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return StartStackLog(t, cfg, opts, log)
}

// StartStackLog is StartStack logging to log, for tests of what is logged.
func StartStackLog(t testing.TB, cfg *config.Config, opts service.Options, log *slog.Logger) *Stack {
	t.Helper()
	cfg.ListenAddr = "127.0.0.1:0"
	if cfg.APIKeys == "" {
		cfg.APIKeys = APIKeys
	}
	svc, err := service.New(context.Background(), cfg, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	if opts.API {
		if err := svc.Listen(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	s := &Stack{Svc: svc, Base: "http://" + svc.Addr()}
	s.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
		svc.Close()
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the stack (idempotent).
func (s *Stack) Stop() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

// Do calls the API with key and decodes a JSON answer into out (if not nil).
// It returns the status code and the raw body.
func Do(t testing.TB, base, key, method, path, ctype string, body []byte, out any) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, b
}

// CampaignJSON is a valid card-reissue campaign request.
func CampaignJSON(extra map[string]any) []byte {
	c := map[string]any{
		"name": "test campaign", "template": "card-reissue", "default_locale": "ja",
		"from": "Example Co. <notice@example.jp>",
		"data": map[string]any{
			"company":       map[string]string{"ja": "株式会社テスト", "en": "Test Co., Ltd."},
			"service":       map[string]string{"ja": "テストストア", "en": "Test Store"},
			"discovered_on": "2019-05-28", "period_start": "2009-05-01", "period_end": "2019-05-27",
			"cause":          map[string]string{"ja": "第三者による不正アクセスが原因です。", "en": "Unauthorized access by a third party."},
			"secondary_harm": map[string]string{"ja": "不正利用の報告は受けておりません。", "en": "No misuse has been reported."},
			"leaked_items":   map[string][]string{"ja": {"カード番号", "有効期限", "名義人名"}, "en": {"Card number", "Expiry date", "Cardholder name"}},
			"actions_taken":  map[string][]string{"ja": {"カード決済を停止いたしました"}, "en": {"Suspended card payments"}},
			"hotline":        "0120-000-000", "hotline_hours": "9:00-18:00", "contact_email": "support@example.jp",
		},
	}
	for k, v := range extra {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	return b
}

// WaitCampaign polls a campaign until cond holds or timeout passes.
func WaitCampaign(t testing.TB, base, id string, timeout time.Duration, cond func(*notice.Campaign) bool) *notice.Campaign {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var c notice.Campaign
	for {
		code, body := Do(t, base, AdminKey, "GET", "/v1/campaigns/"+id, "", nil, &c)
		if code != 200 {
			t.Fatalf("GET campaign: %d %s", code, body)
		}
		if cond(&c) {
			return &c
		}
		if time.Now().After(deadline) {
			t.Fatalf("campaign %s: condition not met after %s: status %s counts %+v", id, timeout, c.Status, c.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eventually polls cond every 20 ms until it holds, or fails the test after
// timeout, naming what it waited for.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AuditCount is how many entries of the audit log (of campaign cid, or all
// when "") have action.
func AuditCount(t testing.TB, base, cid, action string) int {
	t.Helper()
	var audit struct{ Entries []struct{ Action string } }
	path := "/v1/audit"
	if cid != "" {
		path += "?campaign=" + cid
	}
	if code, b := Do(t, base, AdminKey, "GET", path, "", nil, &audit); code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	n := 0
	for _, e := range audit.Entries {
		if e.Action == action {
			n++
		}
	}
	return n
}
