package inbound

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/bounce"
)

// SendGrid's signed event webhook: an ECDSA (P-256, SHA-256) signature,
// base64 of its ASN.1 form, over the timestamp header followed by the raw
// body.
const (
	SendGridSignatureHeader = "X-Twilio-Email-Event-Webhook-Signature"
	SendGridTimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp"
	// SendGridTokenArg is the unique_args (custom_args) key our token
	// travels in: the worker sets it in the X-SMTPAPI header when
	// SENDGRID_SMTPAPI is on, and SendGrid copies it into every event.
	SendGridTokenArg = "oshirase_token"
)

// sendGridTolerance is how far a request's timestamp may be from now: a
// captured request cannot be replayed later (SendGrid signs each retry
// afresh).
const sendGridTolerance = 10 * time.Minute

// sendGridEvent is the part of one SendGrid event we read.
type sendGridEvent struct {
	Event    string `json:"event"`
	Type     string `json:"type"` // bounce: bounce or blocked
	Status   string `json:"status"`
	Reason   string `json:"reason"`
	Response string `json:"response"`
	Token    any    `json:"oshirase_token"`
}

// verifySendGrid checks a request's signature and timestamp.
func (p *Providers) verifySendGrid(r *http.Request, body []byte) error {
	sigB64, tsS := r.Header.Get(SendGridSignatureHeader), r.Header.Get(SendGridTimestampHeader)
	if sigB64 == "" || tsS == "" {
		return fmt.Errorf("%w: %s and %s are required", errUnverified, SendGridSignatureHeader, SendGridTimestampHeader)
	}
	ts, err := strconv.ParseInt(tsS, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", errUnverified, SendGridTimestampHeader, tsS)
	}
	if d := p.now().Sub(time.Unix(ts, 0)); d > sendGridTolerance || d < -sendGridTolerance {
		return fmt.Errorf("%w: %s is %s away from now, past the %s accepted", errUnverified, SendGridTimestampHeader, d.Round(time.Second), sendGridTolerance)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return fmt.Errorf("%w: %s is not base64", errUnverified, SendGridSignatureHeader)
	}
	h := sha256.New()
	h.Write([]byte(tsS))
	h.Write(body)
	if !ecdsa.VerifyASN1(p.sg, h.Sum(nil), sig) {
		return fmt.Errorf("%w: signature does not match SENDGRID_WEBHOOK_PUBLIC_KEY", errUnverified)
	}
	return nil
}

// SendGrid handles POST /v1/inbound/sendgrid: a signed batch of events.
// Each event carrying our token is recorded for the notice it names; a
// storage failure answers 500 so SendGrid posts the batch again (what was
// recorded is recorded once).
func (p *Providers) SendGrid() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := p.readBody(w, r, p.sg != nil, "SendGrid", "SENDGRID_WEBHOOK_PUBLIC_KEY")
		if !ok {
			return
		}
		if err := p.verifySendGrid(r, body); err != nil {
			p.refuse(w, r, "sendgrid", err)
			return
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			p.log.Warn("SendGrid webhook: body is not a JSON array of events, nothing changed", "err", err)
			writeError(w, http.StatusBadRequest, "bad_request", "body is not a JSON array of events: "+err.Error())
			return
		}
		failed, early := 0, 0
		for i, raw := range raws {
			var ev sendGridEvent
			if err := json.Unmarshal(raw, &ev); err != nil {
				p.log.Warn("SendGrid webhook: event is not an object, skipped", "index", i, "err", err)
				continue
			}
			pe, ok := sendGridOutcome(&ev, raw)
			if !ok {
				continue // processed, open, click, …: nothing we record
			}
			tok, _ := ev.Token.(string)
			if err := p.take(r.Context(), "sendgrid", strings.ToLower(strings.TrimSpace(tok)), "sendgrid:arg", pe); err != nil {
				failed++
				if errors.Is(err, errEarly) {
					early++
				}
			}
		}
		if early > 0 && failed == early {
			// SendGrid retries a 5xx batch: by then the worker has
			// recorded the 250s (the rest is recorded once).
			writeError(w, http.StatusServiceUnavailable, "not_yet", "a notice's sending is not recorded yet; try again later")
			return
		}
		if failed > 0 {
			writeError(w, http.StatusInternalServerError, "internal", "cannot record every event now; try again later")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"received": len(raws)})
	})
}

// dropHard are SendGrid's drop reasons that say the address is bad (or its
// owner complained): such a drop puts it on the suppression list.
var dropHard = map[string]bool{"Bounced Address": true, "Invalid": true, "Spam Reporting Address": true}

// sendGridOutcome maps a SendGrid event to what is recorded:
//   - bounce (type bounce): bounced, suppressed when the status (or the
//     code in the reason, SendGrid often says 5.0.0) is 5.1.x or 5.2.1;
//     type blocked: bounced, not suppressed (a refusal of the message);
//   - dropped: SendGrid did not send it: bounced, suppressed when the
//     reason is "Bounced Address", "Invalid" or "Spam Reporting Address";
//   - spamreport: complained, suppressed;
//   - deferred: a delayed event; delivered: a delivered event (not kept raw).
func sendGridOutcome(ev *sendGridEvent, raw []byte) (providerEvent, bool) {
	switch ev.Event {
	case "bounce":
		status := ev.Status
		if c := codeIn(ev.Reason); c != "" && (status == "" || strings.HasSuffix(status, ".0.0")) {
			status = c
		}
		rep := &bounce.Report{Kind: bounce.KindBounce, Action: "failed", Status: status, Diagnostic: ev.Reason, ReportingMTA: "sendgrid"}
		if ev.Type == "blocked" {
			rep.Action = "blocked"
			return providerEvent{rep: rep, raw: raw}, true
		}
		return providerEvent{rep: rep, hard: rep.Hard(), raw: raw}, true
	case "dropped":
		rep := &bounce.Report{Kind: bounce.KindBounce, Action: "dropped", Diagnostic: "dropped by SendGrid: " + ev.Reason, ReportingMTA: "sendgrid"}
		return providerEvent{rep: rep, hard: dropHard[ev.Reason], raw: raw}, true
	case "spamreport":
		return providerEvent{rep: &bounce.Report{Kind: bounce.KindComplaint, FeedbackType: "abuse", ReportingMTA: "sendgrid"}, hard: true, raw: raw}, true
	case "deferred":
		return providerEvent{rep: &bounce.Report{Kind: bounce.KindDelayed, Action: "delayed", Status: codeIn(ev.Response),
			Diagnostic: ev.Response, ReportingMTA: "sendgrid"}, raw: raw}, true
	case "delivered":
		return providerEvent{rep: &bounce.Report{Kind: bounce.KindDelivered, Action: "delivered", Status: codeIn(ev.Response),
			Diagnostic: ev.Response, ReportingMTA: "sendgrid"}}, true
	}
	return providerEvent{}, false
}
