package faults_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/tasks"
)

// campaignJSON is GET /v1/campaigns/{id} as a client reads it.
type campaignJSON struct {
	Status       notice.CampaignStatus `json:"status"`
	PausedReason string                `json:"paused_reason"`
	FinishedAt   *time.Time            `json:"finished_at"`
	Counts       notice.Counts         `json:"counts"`
}

func (h *harness) getCampaign(id string) campaignJSON {
	h.t.Helper()
	var c campaignJSON
	if code, body := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "GET", "/v1/campaigns/"+id, "", nil, &c); code != 200 {
		h.t.Fatalf("GET campaign: %d %s", code, body)
	}
	return c
}

// readiness is a /readyz answer.
type readiness struct {
	code   int
	Ready  bool              `json:"ready"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func readyz(t *testing.T, base string) readiness {
	t.Helper()
	code, body := get(t, base+"/readyz", "")
	var r readiness
	json.Unmarshal([]byte(body), &r)
	r.code = code
	return r
}

// auditActions returns the campaign's audit entries, newest first.
func (h *harness) audit(id string) []map[string]any {
	h.t.Helper()
	var out struct {
		Entries []map[string]any `json:"entries"`
	}
	if code, body := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "GET", "/v1/audit?campaign="+id, "", nil, &out); code != 200 {
		h.t.Fatalf("audit: %d %s", code, body)
	}
	return out.Entries
}

// TestRelayRefusesEverything: a relay that refuses every message for a
// reason of its own — relaying denied at RCPT, authentication required, the
// sender refused at MAIL FROM — must not burn the campaign. It is paused
// with the reason (GET, audit log by the system), readiness of the API and
// of the worker says degraded, the refusals are counted, and no recipient is
// failed. Once the relay is fixed, resume sends every recipient exactly once.
func TestRelayRefusesEverything(t *testing.T) {
	const n = 200
	for _, tc := range []struct {
		name   string
		stage  smtpsink.Stage // or -1: at AUTH
		reply  smtp.SMTPError
		kind   string // oshirase_relay_failures_total's label
		reason string // in paused_reason
	}{
		{"535 5.7.8 at AUTH", -1, smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"},
			"auth", "Authentication credentials invalid"},
		{"554 5.7.1 at RCPT", smtpsink.StageRcpt, smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"},
			"policy", "Relay access denied"},
		{"530 5.7.0 at MAIL FROM", smtpsink.StageMail, smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"},
			"auth", "Authentication required"},
		{"550 5.7.1 at MAIL FROM", smtpsink.StageMail, smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected: not owned by user"},
			"sender", "Sender address rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var broken atomic.Bool
			broken.Store(true)
			sink := smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
				if !broken.Load() || st != tc.stage {
					return nil
				}
				e := tc.reply
				if st == smtpsink.StageRcpt {
					e.Message = "<" + rcpt + ">: " + e.Message // as Postfix says it: the address differs every time
				}
				return &e
			}}
			auth := tc.stage < 0
			if auth {
				tlsc, err := smtpsink.SelfSigned()
				if err != nil {
					t.Fatal(err)
				}
				sink.TLS = tlsc
				sink.Auth = func(user, pass string) *smtp.SMTPError {
					if broken.Load() {
						e := tc.reply
						return &e
					}
					return nil
				}
			}
			h := newHarness(t, setup{Sink: sink})
			maddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			wenv := env{"METRICS_ADDR": maddr}
			if auth {
				wenv["SMTP_URL"] = "smtp://oshirase:secret@" + h.sink.Addr() + "?tls=required&insecure_skip_verify=1"
			}
			h.startWorker(wenv)
			wbase := "http://" + maddr
			waitUp(t, wbase+"/healthz")

			id, addrs := h.createCampaign(n, nil)
			t0 := time.Now()
			h.action(id, "start")
			c := h.wait(id, 30*time.Second, func(c *notice.Campaign) bool { return c.Status != notice.CampaignSending })
			t.Logf("stopped sending %s after start", time.Since(t0))
			got := h.getCampaign(id)
			if got.Status != notice.CampaignPaused || got.Counts.Failed != 0 || got.Counts.Sent != 0 {
				t.Fatalf("after the relay refused: status %s, counts %+v; want paused with 0 failed", got.Status, got.Counts)
			}
			if !strings.Contains(got.PausedReason, tc.reason) || strings.Contains(got.PausedReason, "@") {
				t.Errorf("paused_reason %q: want the relay's reply, without addresses", got.PausedReason)
			}
			if c.Counts.Pending+c.Counts.Retrying+c.Counts.Sending != n {
				t.Errorf("counts %+v: every recipient should still be open", c.Counts)
			}
			// Settled: nothing in flight, nobody failed late.
			time.Sleep(time.Second)
			if c := h.getCampaign(id); c.Counts.Failed != 0 || c.Counts.Sending != 0 || c.Status != notice.CampaignPaused {
				t.Fatalf("a second later: %s %+v", c.Status, c.Counts)
			}
			// Those that got the refusal keep it in their history.
			tried := 0
			for _, r := range h.recipients(id) {
				if len(r.History) > 0 {
					tried++
					if a := r.History[len(r.History)-1]; a.OK || a.Code != tc.reply.Code {
						t.Errorf("recipient %d: last attempt %+v", r.ID, a)
					}
				}
			}
			if tried == 0 {
				t.Error("no recipient records the refusal")
			}
			var system bool
			for _, e := range h.audit(id) {
				if e["action"] == "campaign.pause" && e["actor"] == "system" && strings.Contains(fmt.Sprint(e["reason"]), tc.reason) {
					system = true
				}
			}
			if !system {
				t.Errorf("no campaign.pause by the system in the audit log: %v", h.audit(id))
			}
			for who, base := range map[string]string{"API": h.api.Base, "worker": wbase} {
				// A worker whose login is refused cannot even ping: down
				// is worse than degraded, and says so.
				r := readyz(t, base)
				if (r.Status != "degraded" && !(auth && who == "worker" && r.Status == "down" && r.code == 503)) ||
					r.Checks["relay"] != "refusing" || r.Checks["redis"] != "ok" {
					t.Errorf("%s /readyz while paused for the relay: %d %+v", who, r.code, r)
				}
			}
			_, wm := get(t, wbase+"/metrics", testenv.OperatorKey)
			if !strings.Contains(wm, `oshirase_relay_failures_total{kind="`+tc.kind+`"}`) {
				t.Errorf("worker /metrics lacks oshirase_relay_failures_total{kind=%q}", tc.kind)
			}
			_, am := get(t, h.api.Base+"/metrics", testenv.OperatorKey)
			if !strings.Contains(am, "oshirase_campaigns_relay_paused 1") {
				t.Errorf("API /metrics lacks oshirase_campaigns_relay_paused 1")
			}

			// The relay is fixed: resume sends everyone, once.
			broken.Store(false)
			t0 = time.Now()
			h.action(id, "resume")
			c = h.wait(id, 30*time.Second, done)
			t.Logf("done %s after resume", time.Since(t0))
			if c.Counts.Sent != n || c.Counts.Failed != 0 {
				t.Fatalf("after resume: counts %+v", c.Counts)
			}
			if twice, _ := h.duplicates(addrs); twice != 0 {
				t.Errorf("%d recipients received more than one message", twice)
			}
			if got := h.getCampaign(id); got.PausedReason != "" {
				t.Errorf("paused_reason %q after resume", got.PausedReason)
			}
			for who, base := range map[string]string{"API": h.api.Base, "worker": wbase} {
				if r := readyz(t, base); r.code != 200 || r.Status != "ok" || r.Checks["relay"] != "ok" {
					t.Errorf("%s /readyz after resume: %d %+v", who, r.code, r)
				}
			}
		})
	}
}

// TestRecipientRefusalsAreNotRelayFaults: answers about recipients, however
// many, never pause a campaign. 40 addresses in a row that do not exist
// (550 5.1.1, each naming its address), and a policy refusal (554 5.7.1)
// for every tenth address among deliverable ones, fail as before; the
// rest is sent.
func TestRecipientRefusalsAreNotRelayFaults(t *testing.T) {
	const n = 200
	num := func(addr string) int {
		var i int
		fmt.Sscanf(addr, "u%05d@", &i)
		return i
	}
	h := newHarness(t, setup{Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
		if st != smtpsink.StageRcpt {
			return nil
		}
		switch i := num(rcpt); {
		case i > 50 && i <= 90:
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + rcpt + ">: Recipient address rejected: User unknown"}
		case i%10 == 5:
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + rcpt + ">: Recipient address rejected: Access denied"}
		}
		return nil
	}}})
	// One chunk at a time, so the 40 unknown users come strictly in a row.
	h.startWorker(env{"WORKER_CONCURRENCY": "1"})
	id, _ := h.createCampaign(n, nil)
	h.action(id, "start")
	c := h.wait(id, 60*time.Second, func(c *notice.Campaign) bool { return c.Status != notice.CampaignSending })
	policy := 0
	for i := 1; i <= n; i++ {
		if i%10 == 5 && (i <= 50 || i > 90) {
			policy++
		}
	}
	if c.Status != notice.CampaignDone || c.Counts.Failed != int64(40+policy) || c.Counts.Sent != int64(n-40-policy) {
		t.Fatalf("status %s counts %+v; want done with %d failed", c.Status, c.Counts, 40+policy)
	}
	if r := readyz(t, h.api.Base); r.Status == "degraded" {
		t.Errorf("/readyz degraded after recipients' refusals: %+v", r)
	}
}

// retryAnswer is POST /v1/campaigns/{id}/retry's answer.
type retryAnswer struct {
	Matched           int64 `json:"matched"`
	Queued            int64 `json:"queued"`
	SkippedSuppressed int64 `json:"skipped_suppressed"`
}

func (h *harness) retry(id, body string) (int, retryAnswer, string) {
	h.t.Helper()
	var a retryAnswer
	code, b := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+id+"/retry", "application/json", []byte(body), &a)
	return code, a, string(b)
}

// TestRetryFailedRecipients: POST /v1/campaigns/{id}/retry sends failed
// recipients again, chosen by their last reply; it never sends to a
// suppressed address (counted as skipped), takes a done campaign back to
// sending until they are through, sends each exactly once, and is audited
// with the selector and the counts.
func TestRetryFailedRecipients(t *testing.T) {
	const n = 100
	num := func(addr string) int {
		var i int
		fmt.Sscanf(addr, "u%05d@", &i)
		return i
	}
	var broken atomic.Bool
	broken.Store(true)
	h := newHarness(t, setup{Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
		if st != smtpsink.StageRcpt {
			return nil
		}
		switch i := num(rcpt); {
		case i%10 == 7: // never deliverable, whatever happens
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + rcpt + ">: User unknown"}
		case !broken.Load():
		case i%10 == 3:
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + rcpt + ">: Recipient address rejected: Access denied"}
		case i%20 == 9:
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
		}
		return nil
	}}})
	h.startWorker(nil)
	draft, _ := h.createCampaign(3, nil)
	id, addrs := h.createCampaign(n, nil)
	h.action(id, "start")
	first := h.wait(id, 30*time.Second, done)
	if first.Counts.Failed != 25 || first.Counts.Sent != 75 {
		t.Fatalf("counts %+v; want 25 failed (10 × 5.7.1, 10 × 5.1.1, 5 × 5.2.2)", first.Counts)
	}
	// Support suppresses one of the 5.7.1 addresses meanwhile.
	if code, body := teststack.Do(t, h.api.Base, testenv.AdminKey, "POST", "/v1/suppressions", "application/json",
		[]byte(`{"email":"u00003@example.jp","reason":"customer asked by phone"}`), nil); code != 201 && code != 200 {
		t.Fatalf("suppress: %d %s", code, body)
	}

	for _, tc := range []struct{ body, field string }{
		{`{"codes":[250]}`, "codes[0]"},
		{`{"enhanced":["5.x.1"]}`, "enhanced[0]"},
		{`{"enhanced":["7.1"]}`, "enhanced[0]"},
		{`{"class":"2"}`, "class"},
	} {
		if code, _, body := h.retry(id, tc.body); code != 422 || !strings.Contains(body, tc.field) {
			t.Errorf("retry %s: %d %s; want 422 naming %s", tc.body, code, body, tc.field)
		}
	}
	if code, _, body := h.retry(id, `{"code":[554]}`); code != 400 {
		t.Errorf("retry with an unknown field: %d %s; want 400", code, body)
	}
	if code, _, body := h.retry(draft, `{}`); code != 409 {
		t.Errorf("retry of a draft: %d %s; want 409", code, body)
	}

	broken.Store(false) // the policy was fixed, the mailboxes emptied
	code, a, body := h.retry(id, `{"codes":[554],"enhanced":["5.7"],"class":"5","reason":"relay policy fixed"}`)
	if code != 202 || a.Matched != 10 || a.SkippedSuppressed != 1 || a.Queued != 9 {
		t.Fatalf("retry 5.7: %d %s; want 10 matched, 1 skipped, 9 queued", code, body)
	}
	c := h.wait(id, 30*time.Second, func(c *notice.Campaign) bool {
		return c.Status == notice.CampaignDone && c.Counts.Open() == 0 && c.Counts.Sent == 84
	})
	if c.Counts.Failed != 16 || c.FinishedAt == nil || !c.FinishedAt.After(*first.FinishedAt) {
		t.Errorf("after retry: counts %+v, finished_at %v (first %v)", c.Counts, c.FinishedAt, first.FinishedAt)
	}
	// Everything else that failed: the 5.1.1 addresses are suppressed
	// (bounced), so only the full mailboxes go.
	code, a, body = h.retry(id, `{"class":"5"}`)
	if code != 202 || a.Matched != 16 || a.SkippedSuppressed != 11 || a.Queued != 5 {
		t.Fatalf("retry class 5: %d %s; want 16 matched, 11 skipped, 5 queued", code, body)
	}
	c = h.wait(id, 30*time.Second, func(c *notice.Campaign) bool {
		return c.Status == notice.CampaignDone && c.Counts.Open() == 0 && c.Counts.Sent == 89
	})
	if code, a, body = h.retry(id, `{}`); code != 202 || a.Queued != 0 || a.Matched != 11 {
		t.Errorf("retry of what is left (suppressed only): %d %s", code, body)
	}

	per := h.sink.PerRecipient()
	for _, addr := range addrs {
		want := 1
		if i := num(addr); i%10 == 7 || i == 3 {
			want = 0
		}
		if got := per[addr]; got != want {
			t.Errorf("%s received %d messages, want %d", addr, got, want)
		}
	}
	for _, r := range h.recipients(id) {
		if i := num(r.Email); i%10 == 3 && i != 3 {
			if r.Status != notice.StatusSent || r.Attempts != 2 || r.History[0].Code != 554 || !r.History[1].OK {
				t.Errorf("recipient %d: %s after %d attempts, history %+v", r.ID, r.Status, r.Attempts, r.History)
			}
		}
	}
	var entries []map[string]any
	for _, e := range h.audit(id) {
		if e["action"] == "campaign.retry" {
			entries = append(entries, e)
		}
	}
	if len(entries) != 3 {
		t.Fatalf("%d campaign.retry audit entries, want 3", len(entries))
	}
	last := entries[len(entries)-1] // newest first: this is the first retry
	d, _ := json.Marshal(last["details"])
	if last["actor"] != "admin" || last["reason"] != "relay policy fixed" ||
		!strings.Contains(string(d), `"queued":9`) || !strings.Contains(string(d), `"skipped_suppressed":1`) || !strings.Contains(string(d), `"codes":[554]`) {
		t.Errorf("audit entry %v", last)
	}
}

// TestAsynqmonRunRetriesFailed: "Run" on the archived task of a failed
// recipient in asynqmon sends it again (once, audited), where it used to
// archive the task again and do nothing; a suppressed address is still
// never sent to, and its task is archived again saying why.
func TestAsynqmonRunRetriesFailed(t *testing.T) {
	const n = 20
	var broken atomic.Bool
	broken.Store(true)
	h := newHarness(t, setup{Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
		switch {
		case st != smtpsink.StageRcpt:
		case rcpt == "u00004@example.jp":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		case broken.Load() && (rcpt == "u00007@example.jp" || rcpt == "u00012@example.jp"):
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
		}
		return nil
	}}})
	h.startWorker(nil)
	id, _ := h.createCampaign(n, nil)
	h.action(id, "start")
	c := h.wait(id, 30*time.Second, done)
	if c.Counts.Failed != 3 {
		t.Fatalf("counts %+v", c.Counts)
	}
	byAddr := map[string]int64{}
	for _, r := range h.recipients(id) {
		byAddr[r.Email] = r.ID
	}
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	archived := func(rid int64) *asynq.TaskInfo {
		ti, err := insp.GetTaskInfo(tasks.QueueRecipients, fmt.Sprintf("failed:%s:%d", id, rid))
		if err != nil || ti.State != asynq.TaskStateArchived {
			return nil
		}
		return ti
	}
	teststack.Eventually(t, "the three failures archived", 10*time.Second, func() bool {
		return archived(byAddr["u00004@example.jp"]) != nil && archived(byAddr["u00007@example.jp"]) != nil && archived(byAddr["u00012@example.jp"]) != nil
	})
	run := func(rid int64) {
		t.Helper()
		code, _, body := call(t, h.api.Base, "POST", fmt.Sprintf("/monitoring/api/queues/recipients/archived_tasks/failed:%s:%d:run", id, rid))
		if code != 204 {
			t.Fatalf("Run: %d %s", code, body)
		}
	}

	broken.Store(false)
	run(byAddr["u00007@example.jp"])
	teststack.Eventually(t, "u00007 sent after Run", 15*time.Second, func() bool { return h.sink.CountFor("u00007@example.jp") == 1 })
	c = h.wait(id, 15*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone && c.Counts.Failed == 2 })
	if c.Counts.Sent != n-2 {
		t.Errorf("counts %+v", c.Counts)
	}
	if archived(byAddr["u00007@example.jp"]) != nil {
		t.Error("the task of a recipient now sent is still archived")
	}
	// The suppressed address (5.1.1): nothing sent, archived again with why.
	run(byAddr["u00004@example.jp"])
	var ti *asynq.TaskInfo
	teststack.Eventually(t, "the suppressed one's task archived again", 15*time.Second, func() bool {
		ti = archived(byAddr["u00004@example.jp"])
		return ti != nil && strings.Contains(ti.LastErr, "suppression")
	})
	time.Sleep(500 * time.Millisecond)
	if h.sink.CountFor("u00004@example.jp") != 0 || h.sink.CountFor("u00007@example.jp") != 1 {
		t.Errorf("sent to u00004 %d times, to u00007 %d times", h.sink.CountFor("u00004@example.jp"), h.sink.CountFor("u00007@example.jp"))
	}
	var audited bool
	for _, e := range h.audit(id) {
		if e["action"] == "recipient.retry" && e["actor"] == "asynqmon" && e["recipient_id"] == float64(byAddr["u00007@example.jp"]) {
			audited = true
		}
	}
	if !audited {
		t.Error("no recipient.retry audit entry for the Run")
	}
}

// call makes an admin request from asynqmon's own page.
func call(t *testing.T, base, method, path string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	req.SetBasicAuth("", testenv.AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
