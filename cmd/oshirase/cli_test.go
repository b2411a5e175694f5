package main

import (
	"bytes"
	"encoding/csv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// cliStack runs a whole oshirase (API and worker, real Redis on DBCLI, a
// real SMTP sink) and points the client commands at it.
func cliStack(t *testing.T, prefix string) (*teststack.Stack, *smtpsink.Sink) {
	t.Helper()
	_, rurl := testenv.Redis(t, testenv.DBCLI)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": rurl, "SMTP_URL": sink.URL(), "KEY_PREFIX": prefix,
		"WEBHOOK_ALLOW_PRIVATE": "true", "CHUNK_SIZE": "4"}), service.Options{API: true, Worker: true})
	t.Setenv("OSHIRASE_URL", st.Base)
	t.Setenv("OSHIRASE_KEY", teststack.AdminKey)
	return st, sink
}

// runCLI runs one client command as the binary would and returns its exit
// code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("oshirase %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// TestCLIWalkthrough runs the README's walkthrough with the files in
// examples/: create from incident.json, upload customers.csv, start,
// status --watch until done, report; then a support look-up and resend.
func TestCLIWalkthrough(t *testing.T) {
	_, sink := cliStack(t, "cliw")
	examples := filepath.Join("..", "..", "examples")
	rows := readCSV(t, filepath.Join(examples, "customers.csv"))

	id := strings.TrimSpace(mustCLI(t, "campaign", "create", "--data", filepath.Join(examples, "incident.json")))
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(id) {
		t.Fatalf("create printed %q, want the campaign id alone", id)
	}
	out := mustCLI(t, "campaign", "upload", id, filepath.Join(examples, "customers.csv"))
	if want := regexp.MustCompile(`(\d+) accepted, 0 rejected`).FindStringSubmatch(out); want == nil || want[1] != itoa(len(rows)-1) {
		t.Fatalf("upload: %s", out)
	}
	mustCLI(t, "campaign", "start", id)
	out = mustCLI(t, "campaign", "status", id, "--watch", "--interval", "200ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, id+" done") || !strings.Contains(last, "sent "+itoa(len(rows)-1)) {
		t.Fatalf("status --watch ended with %q:\n%s", last, out)
	}
	if sink.Count() != int64(len(rows)-1) {
		t.Errorf("%d messages at the sink, want %d", sink.Count(), len(rows)-1)
	}
	report := filepath.Join(t.TempDir(), "report.csv")
	mustCLI(t, "campaign", "report", id, "-o", report)
	rep := readCSV(t, report)
	if len(rep) != len(rows) {
		t.Fatalf("report has %d rows, want %d", len(rep), len(rows))
	}
	col := -1
	for i, h := range rep[0] {
		if h == "status" {
			col = i
		}
	}
	for _, r := range rep[1:] {
		if col < 0 || r[col] != "sent" {
			t.Errorf("report row %v: want status sent", r)
		}
	}

	// Support: find a customer, resend the notice.
	t.Setenv("OSHIRASE_KEY", teststack.SupportKey)
	out = mustCLI(t, "recipient", "find", "hanako.yamada@example.jp")
	m := regexp.MustCompile(id + `\s+.*?\s+(\d+)\s+MS-100231\s+sent`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("find: %s", out)
	}
	if code, _, errs := runCLI(t, "recipient", "resend", id, m[1]); code != 1 || !strings.Contains(errs, "reason") {
		t.Errorf("resend without a reason: exit %d %s, want 1 naming the reason", code, errs)
	}
	out = mustCLI(t, "recipient", "resend", id, m[1], "--reason", "customer called: mail deleted by mistake")
	if !strings.Contains(out, "resend #1") {
		t.Errorf("resend: %s", out)
	}
	teststack.Eventually(t, "the resend at the sink", 20*time.Second, func() bool { return sink.CountFor("hanako.yamada@example.jp") == 2 })
}

func readCSV(t *testing.T, file string) [][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("\ufeff")))).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return rows
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestCLIUploadRetried: the server answers the upload, the answer is lost
// (a proxy holds it until the client's time limit passes), the client
// retries with the same Idempotency-Key and gets the first answer back:
// one upload, not two.
func TestCLIUploadRetried(t *testing.T) {
	st, _ := cliStack(t, "clir")
	target, _ := url.Parse(st.Base)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var keys []string
	var replayed []string
	uploads := 0
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || !strings.HasSuffix(r.URL.Path, "/recipients") {
			rp.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		uploads++
		n := uploads
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // the server answers in full
		mu.Lock()
		replayed = append(replayed, rec.Header().Get("Idempotent-Replayed"))
		mu.Unlock()
		if n == 1 {
			<-r.Context().Done() // and the answer never reaches the client
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(proxy.Close)

	id := strings.TrimSpace(mustCLI(t, "campaign", "create", "--data", filepath.Join("..", "..", "examples", "incident.json")))
	code, out, errs := runCLI(t, "campaign", "upload", id, filepath.Join("..", "..", "examples", "customers.csv"),
		"--url", proxy.URL, "--timeout", "1s", "--retries", "3")
	if code != 0 || !strings.Contains(out, "8 accepted") || !strings.Contains(errs, "retrying") {
		t.Fatalf("upload through the lossy proxy: exit %d\n%s%s", code, out, errs)
	}
	mu.Lock()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] || replayed[0] != "" || replayed[1] != "true" {
		t.Errorf("Idempotency-Keys %q, replayed %q: want one key sent twice, the second answer replayed", keys, replayed)
	}
	mu.Unlock()
	n := teststack.AuditCount(t, st.Base, id, "recipients.upload")
	if n != 1 {
		t.Errorf("%d uploads ran, want 1", n)
	}
}

// TestCLIErrors: the API's refusals are shown plainly (message, then each
// field), with the documented exit codes.
func TestCLIErrors(t *testing.T) {
	cliStack(t, "clie")
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"name":"x","template":"card-reissue","from":"n@example.jp","data":{"company":"株式会社テスト"}}`), 0o600)
	code, _, errs := runCLI(t, "campaign", "create", "--data", bad)
	if code != exitRefused || !strings.Contains(errs, "422") || !regexp.MustCompile(`\n  data\.hotline: .*required`).MatchString(errs) {
		t.Errorf("invalid campaign: exit %d\n%s", code, errs)
	}
	for _, args := range [][]string{{"campaign"}, {"campaign", "frob"}, {"campaign", "start"}, {"campaign", "create"},
		{"campaign", "start", "x", "--at", "tomorrow"}, {"webhook", "add"}} {
		if code, _, errs := runCLI(t, args...); code != exitUsage {
			t.Errorf("oshirase %s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, errs)
		}
	}
	if code, _, errs := runCLI(t, "campaign", "status", "nosuch"); code != exitRefused || !strings.Contains(errs, "404") {
		t.Errorf("unknown campaign: exit %d %s", code, errs)
	}
	if code, _, errs := runCLI(t, "campaign", "status", "x", "--url", "http://127.0.0.1:1", "--retries", "1"); code != exitUnavailable || !strings.Contains(errs, "retrying") {
		t.Errorf("unreachable API: exit %d %s, want %d after a retry", code, errs, exitUnavailable)
	}
	t.Setenv("OSHIRASE_KEY", "")
	if code, _, errs := runCLI(t, "campaign", "status", "x"); code != exitUsage || !strings.Contains(errs, "OSHIRASE_KEY") {
		t.Errorf("no key: exit %d %s", code, errs)
	}
	t.Setenv("OSHIRASE_KEY", teststack.AdminKey)

	// A cancelled campaign ends a watch with exit 4.
	id := strings.TrimSpace(mustCLI(t, "campaign", "create", "--data", filepath.Join("..", "..", "examples", "incident.json")))
	mustCLI(t, "campaign", "cancel", id)
	if code, out, errs := runCLI(t, "campaign", "status", id, "--watch"); code != exitNotDone || !strings.Contains(out, "cancelled") {
		t.Errorf("watch a cancelled campaign: exit %d %s %s", code, out, errs)
	}
}

// TestCLIWebhooks: add an endpoint (a real receiver), see its deliveries,
// redeliver one, rotate, delete.
func TestCLIWebhooks(t *testing.T) {
	cliStack(t, "clih")
	var mu sync.Mutex
	var got []string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.Header.Get("webhook-id"))
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	out := mustCLI(t, "webhook", "add", "--endpoint", rcv.URL, "--events", "campaign.cancelled")
	m := regexp.MustCompile(`id:\s+(wh_\S+)[\s\S]*secret: (whsec_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("add: %s", out)
	}
	wh := m[1]
	if out := mustCLI(t, "webhook", "list"); !strings.Contains(out, wh) || !strings.Contains(out, "active") {
		t.Errorf("list: %s", out)
	}
	id := strings.TrimSpace(mustCLI(t, "campaign", "create", "--data", filepath.Join("..", "..", "examples", "incident.json")))
	mustCLI(t, "campaign", "cancel", id)
	var dm []string
	teststack.Eventually(t, "the delivery in the log", 20*time.Second, func() bool {
		out = mustCLI(t, "webhook", "deliveries", wh)
		dm = regexp.MustCompile(`(msg_\S+)\s+1\s+1\s+200\s+\d+ms`).FindStringSubmatch(out)
		return dm != nil
	})
	mustCLI(t, "webhook", "redeliver", wh, dm[1])
	teststack.Eventually(t, "the redelivery received", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2 && got[0] == dm[1] && got[1] == dm[1]
	})
	if out := mustCLI(t, "webhook", "rotate", wh); !strings.Contains(out, "whsec_") || strings.Contains(out, m[2]) {
		t.Errorf("rotate: %s", out)
	}
	mustCLI(t, "webhook", "delete", wh)
	if code, _, errs := runCLI(t, "webhook", "delete", wh); code != exitRefused || !strings.Contains(errs, "404") {
		t.Errorf("delete twice: exit %d %s", code, errs)
	}
}
