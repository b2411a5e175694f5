package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/tasks"
)

// failingSMTP is an SMTP server that refuses recipients the way real ones
// do: with the address in the reply text.
type failingSMTP struct {
	mu       sync.Mutex
	accepted map[string]int
}

func (b *failingSMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return &failingSession{b: b}, nil }

type failingSession struct {
	b  *failingSMTP
	to []string
}

func (s *failingSession) Reset()                               { s.to = nil }
func (s *failingSession) Logout() error                        { return nil }
func (s *failingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *failingSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "bounce"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown"}
	case strings.HasPrefix(to, "grey"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "<" + to + ">: Greylisted, try again later"}
	}
	s.to = append(s.to, to)
	return nil
}
func (s *failingSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	for _, t := range s.to {
		s.b.accepted[t]++
	}
	return nil
}

var anyAddress = regexp.MustCompile(`(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}`)

// TestLogsHoldNoPersonalData runs a campaign against an SMTP server that
// bounces and greylists, resends, looks up and uses the support console,
// all with JSON logging at debug level, and then reads every log line: no
// address (only masked ones), no name, no key.
func TestLogsHoldNoPersonalData(t *testing.T) {
	_, redisURL := testenv.Redis(t, testenv.DBSupport)
	backend := &failingSMTP{accepted: map[string]int{}}
	srv := smtp.NewServer(backend)
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testenv.Config(t, map[string]string{
		"REDIS_URL": redisURL, "SMTP_URL": "smtp://" + ln.Addr().String() + "?tls=none", "KEY_PREFIX": "logs",
		"WORKER_CONCURRENCY": "4", "RETRY_BASE": "50ms", "RETRY_MAX_DELAY": "100ms", "RETRY_MAX_AGE": "400ms",
		"LISTEN_ADDR": "127.0.0.1:0", "OSHIRASE_API_KEYS": teststack.APIKeys, "LOG_LEVEL": "debug",
	})
	svc, err := service.New(context.Background(), cfg, log, service.Options{API: true, Worker: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done; svc.Close() })
	t.Cleanup(stop)
	base := "http://" + svc.Addr()

	secrets := []string{"山田 太郎", "Hanako Sato", "Grey Person", teststack.AdminKey, teststack.SupportKey}
	rcpts := []notice.Recipient{
		{Email: "ok.person@example.jp", Name: "山田 太郎", Locale: "ja", CardLast4: "1234"},
		{Email: "bounce.person@example.jp", Name: "Hanako Sato", Locale: "en", CardLast4: "5678"},
		{Email: "grey.person@example.com", Name: "Grey Person", Locale: "en", CardLast4: "9999"},
	}
	var c notice.Campaign
	if code, body := teststack.Do(t, base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	added, err := svc.Store.AddRecipients(context.Background(), c.ID, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	ids := added.IDs
	teststack.Do(t, base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)
	got := teststack.WaitCampaign(t, base, c.ID, 20*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	if got.Counts.Sent != 1 || got.Counts.Failed != 2 {
		t.Fatalf("counts %+v, want 1 sent and 2 failed", got.Counts)
	}

	// A resend to another bouncing address, a look-up, the console.
	path := fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", c.ID, ids[1])
	if code, body := teststack.Do(t, base, teststack.SupportKey, "POST", path, "application/json",
		[]byte(`{"reason":"typo","email":"bounce.again@example.jp","override_suppression":true}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "resend failed", 10*time.Second, func() bool {
		var rc notice.Recipient
		teststack.Do(t, base, teststack.SupportKey, "GET", fmt.Sprintf("/v1/campaigns/%s/recipients/%d", c.ID, ids[1]), "", nil, &rc)
		return len(rc.Resends) == 1 && rc.Resends[0].Status == notice.StatusFailed
	})
	// A resend to an address that is greylisted for ever retries, then
	// gives up after RETRY_MAX_AGE like any delivery.
	path = fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", c.ID, ids[2])
	if code, body := teststack.Do(t, base, teststack.SupportKey, "POST", path, "application/json", []byte(`{"reason":"asked again"}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "greylisted resend given up", 10*time.Second, func() bool {
		var rc notice.Recipient
		teststack.Do(t, base, teststack.SupportKey, "GET", fmt.Sprintf("/v1/campaigns/%s/recipients/%d", c.ID, ids[2]), "", nil, &rc)
		return len(rc.Resends) == 1 && rc.Resends[0].Status == notice.StatusFailed &&
			len(rc.Resends[0].History) > 1 && strings.Contains(rc.Resends[0].LastError, "451")
	})
	teststack.Do(t, base, teststack.SupportKey, "GET", "/v1/recipients?email=bounce.person@example.jp", "", nil, nil)
	consoleSearch(t, base, "grey.person@example.com")
	// Searches by name, through the API and the console, log no name.
	for _, q := range []string{"山田 太郎", "Hanako Sato"} {
		if code, body := teststack.Do(t, base, teststack.SupportKey, "GET", "/v1/recipients?q="+url.QueryEscape(q), "", nil, nil); code != 200 {
			t.Fatalf("search: %d %s", code, body)
		}
	}
	consoleSearch(t, base, "Grey Person")
	consoleSearch(t, base, "") // a failed sign-in is logged too

	addrs := []string{"bounce.again@example.jp"}
	for _, r := range rcpts {
		addrs = append(addrs, strings.ToLower(r.Email))
	}

	// What operators see of failed tasks in asynqmon: the SMTP reply, no
	// payload data. (The reply text itself is the SMTP server's.)
	for _, q := range []string{tasks.QueueBulk, tasks.QueueUrgent, tasks.QueueRecipients} {
		for _, state := range []string{"archived_tasks", "retry_tasks", "scheduled_tasks"} {
			req, _ := http.NewRequest("GET", base+"/monitoring/api/queues/"+q+"/"+state, nil)
			req.SetBasicAuth("", teststack.OperatorKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var ans struct {
				Tasks []struct {
					Payload json.RawMessage `json:"payload"`
				} `json:"tasks"`
			}
			json.Unmarshal(b, &ans)
			for _, tk := range ans.Tasks {
				if m := anyAddress.Find(tk.Payload); m != nil {
					t.Errorf("asynqmon %s %s payload holds an address: %s", q, state, tk.Payload)
				}
			}
			// The task's error message is the SMTP reply, which often
			// quotes the address: the worker must mask it before asynq
			// stores it (the recipient's own record keeps it in full).
			for _, a := range addrs {
				if bytes.Contains(bytes.ToLower(b), []byte(a)) {
					t.Errorf("asynqmon %s %s shows the address %s in a task's error message", q, state, a)
				}
			}
		}
	}

	stop() // the shutdown's log lines are checked too
	out := logs.String()
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines++
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
		}
		line := strings.ToLower(sc.Text())
		for _, a := range addrs {
			if strings.Contains(line, a) {
				t.Errorf("log line holds the address %s: %s", a, sc.Text())
			}
		}
		for _, s := range secrets {
			if strings.Contains(sc.Text(), s) {
				t.Errorf("log line holds %q: %s", s, sc.Text())
			}
		}
	}
	if lines == 0 || !strings.Contains(out, `b***@example.jp`) {
		t.Fatalf("expected the failed sends to be logged with masked addresses; got %d lines:\n%s", lines, out)
	}
}

// consoleSearch signs in to the support console (with the support key, or a
// wrong one when addr is "") and searches addr.
func consoleSearch(t *testing.T, base, addr string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := page(cl.Get(base + "/support/"))
	tok := hidden(body, "login_token")
	key := teststack.SupportKey
	if addr == "" {
		key = "wrong-key-0123456789abcdef"
	}
	body = page(cl.PostForm(base+"/support/login", url.Values{"login_token": {tok}, "key": {key}}))
	if addr == "" {
		return
	}
	body = page(cl.PostForm(base+"/support/search", url.Values{"csrf": {hidden(body, "csrf")}, "email": {addr}}))
	if !strings.Contains(body, addr) {
		t.Fatalf("console search for the address does not show it:\n%.500s", body)
	}
}

var hiddenRE = regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`)

func hidden(body, name string) string {
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		if m[1] == name {
			return m[2]
		}
	}
	panic(errors.New("no hidden field " + name))
}
