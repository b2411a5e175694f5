package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// RelayRun is how many different recipients in a row must get the same
// policy refusal (5.7.x, or a "relay" reply without an enhanced code; the
// recipient's address in it does not count), with no message of the
// campaign sent between, before the campaign is paused for the relay. A few
// recipients refused for themselves among deliverable ones never make such
// a run: every message sent starts it again. A refusal before any recipient
// was named (connection, AUTH, MAIL FROM) or an authentication answer (530,
// 535) is proof on its own.
const RelayRun = 5

// relayHold decides whether a failed attempt of a mass campaign shows the
// relay, not the recipient, is the problem. If so the recipient must not be
// marked failed but go back to pending (held): the campaign is paused for
// the relay — by this call, or already — and resume sends it again. Single
// notices and test sends fail as before: their caller is told at once.
func (w *Worker) relayHold(ctx context.Context, c *notice.Campaign, rid int64, e *mailer.Error) bool {
	if c.Kind != "" {
		return false
	}
	kind, certain := e.Relay()
	if kind == "" {
		return false
	}
	reason := "the relay refuses every message: " + replyText(e) + " (" + stageName(e.Stage)
	if !certain {
		held, n, err := w.store.RelayStreak(ctx, c.ID, relaySignature(e), rid)
		if err != nil {
			w.log.Warn("relay check", "campaign", c.ID, "err", err)
			return false
		}
		if !held && n < RelayRun {
			return false // so far, it may be about these recipients only
		}
		if held {
			metrics.RelayFailures.WithLabelValues(kind).Inc()
			return true
		}
		reason += fmt.Sprintf(", %d different recipients in a row", n)
	}
	reason += ")"
	metrics.RelayFailures.WithLabelValues(kind).Inc()
	w.pauseForRelay(ctx, c, kind, e, reason)
	return true
}

// pauseForRelay pauses c for the relay, once: the first caller logs it,
// audits it, and removes the asynq reports of recipients whose refusal was
// recorded as a failure before the pause (they are pending again).
func (w *Worker) pauseForRelay(ctx context.Context, c *notice.Campaign, kind string, e *mailer.Error, reason string) {
	changed, reverted, err := w.store.PauseForRelay(ctx, c.ID, reason)
	if err != nil {
		// The recipient is held anyway: pending is never lost (resume,
		// or the watchdog's stall recovery, sends it).
		w.log.Error("pause campaign for the relay", "campaign", c.ID, "err", err)
		return
	}
	if !changed {
		return
	}
	metrics.RelayFailures.WithLabelValues(kind).Add(float64(len(reverted)))
	w.log.Error("campaign paused: the relay refuses every message; fix the relay, then resume the campaign",
		"campaign", c.ID, "actor", "system", "kind", kind, "stage", e.Stage, "code", e.Code, "enhanced", e.Enhanced,
		"reply", replyText(e), "put_back", len(reverted))
	details, _ := json.Marshal(map[string]any{"kind": kind, "stage": e.Stage, "code": e.Code, "enhanced": e.Enhanced, "put_back": len(reverted)})
	if err := w.store.Audit(ctx, store.AuditEntry{
		Actor: "system", Action: "campaign.pause", CampaignID: c.ID, Reason: reason, Details: details,
	}); err != nil {
		w.log.Error("audit log write failed", "action", "campaign.pause", "err", err)
	}
	for _, rid := range reverted {
		for _, q := range tasks.FailureReportQueues {
			err := w.inspector.DeleteTask(q, fmt.Sprintf("failed:%s:%d", c.ID, rid))
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				w.log.Warn("remove the failure report of a recipient put back", "campaign", c.ID, "recipient", rid, "err", err)
			}
		}
	}
}

// addrRE matches an address in a reply, with its brackets and a colon after
// ("<taro@example.jp>: ").
var addrRE = regexp.MustCompile(`<?[^\s<>"'(),;:\[\]]+@[A-Za-z0-9.-]+>?:?`)

// replyText is an SMTP reply without the addresses in it, for the pause
// reason shown in the API and the audit log (never personal data).
func replyText(e *mailer.Error) string {
	t := strings.Join(strings.Fields(addrRE.ReplaceAllString(e.Text, "")), " ")
	if len(t) > 200 {
		t = t[:200]
	}
	var b strings.Builder
	if e.Code > 0 {
		fmt.Fprintf(&b, "%d ", e.Code)
	}
	if e.Enhanced != "" {
		b.WriteString(e.Enhanced + " ")
	}
	b.WriteString(t)
	return strings.TrimSpace(b.String())
}

// relaySignature is what makes two refusals "the same answer": stage, code,
// enhanced code and the text without addresses, case and spacing.
func relaySignature(e *mailer.Error) string {
	return e.Stage + "|" + strings.ToLower(replyText(e))
}

func stageName(s string) string {
	switch s {
	case mailer.StageConnect:
		return "when connecting"
	case mailer.StageAuth:
		return "at AUTH"
	case mailer.StageMail:
		return "at MAIL FROM"
	case mailer.StageRcpt:
		return "at RCPT TO"
	case mailer.StageData:
		return "at DATA"
	}
	return "sending"
}
