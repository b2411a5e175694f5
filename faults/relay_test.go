package faults_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/smtpsink"
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
		stage  smtpsink.Stage
		reply  smtp.SMTPError
		kind   string // oshirase_relay_failures_total's label
		reason string // in paused_reason
	}{
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
			h := newHarness(t, setup{Sink: smtpsink.Options{Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
				if !broken.Load() || st != tc.stage {
					return nil
				}
				e := tc.reply
				if st == smtpsink.StageRcpt {
					e.Message = "<" + rcpt + ">: " + e.Message // as Postfix says it: the address differs every time
				}
				return &e
			}}})
			maddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			h.startWorker(env{"METRICS_ADDR": maddr})
			wbase := "http://" + maddr
			waitUp(t, wbase+"/healthz")

			id, addrs := h.createCampaign(n, nil)
			h.action(id, "start")
			c := h.wait(id, 30*time.Second, func(c *notice.Campaign) bool { return c.Status != notice.CampaignSending })
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
				r := readyz(t, base)
				if r.Status != "degraded" || r.Checks["relay"] != "refusing" || r.Checks["redis"] != "ok" {
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
			h.action(id, "resume")
			c = h.wait(id, 30*time.Second, done)
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
