package inbound

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/mailer"
)

// sesEvent is the part of an SES notification (notificationType) or
// event-publishing record (eventType) we read.
type sesEvent struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Mail             struct {
		Source  string `json:"source"` // the envelope sender: our return path b-<token>@BOUNCE_DOMAIN
		Headers []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"headers"` // only when the identity includes original headers
	} `json:"mail"`
	Bounce *struct {
		BounceType        string `json:"bounceType"`    // Permanent, Transient, Undetermined
		BounceSubType     string `json:"bounceSubType"` // General, NoEmail, Suppressed, OnAccountSuppressionList, MailboxFull, …
		ReportingMTA      string `json:"reportingMTA"`
		BouncedRecipients []struct {
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	Complaint *struct {
		ComplaintFeedbackType string `json:"complaintFeedbackType"`
		ComplaintSubType      string `json:"complaintSubType"`
	} `json:"complaint"`
	Delivery *struct {
		SMTPResponse string `json:"smtpResponse"`
		ReportingMTA string `json:"reportingMTA"`
	} `json:"delivery"`
	DeliveryDelay *struct {
		DelayType         string `json:"delayType"`
		ReportingMTA      string `json:"reportingMTA"`
		DelayedRecipients []struct {
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"delayedRecipients"`
	} `json:"deliveryDelay"`
}

// SES handles POST /v1/inbound/ses: SNS messages of the topics in
// SES_TOPIC_ARNS, verified (see snsVerifier). A SubscriptionConfirmation
// is confirmed; a Notification carrying an SES Bounce, Complaint,
// Delivery or DeliveryDelay is recorded for the notice its token names.
func (p *Providers) SES() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := p.readBody(w, r, p.sns != nil, "Amazon SES", "SES_TOPIC_ARNS")
		if !ok {
			return
		}
		var m snsMessage
		if err := json.Unmarshal(body, &m); err != nil {
			p.log.Warn("SES webhook: body is not an SNS message, nothing changed", "remote", r.RemoteAddr, "err", err)
			writeError(w, http.StatusBadRequest, "bad_request", "body is not an SNS message (JSON): "+err.Error())
			return
		}
		if err := p.sns.verify(r.Context(), &m); err != nil {
			if errors.Is(err, errUnverified) {
				p.refuse(w, r, "ses", err)
				return
			}
			// The certificate could not be fetched from SNS: ask for a retry.
			p.log.Error("SES webhook: cannot verify now", "err", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot verify the message now; try again later")
			return
		}
		switch m.Type {
		case snsSubscribe:
			if err := p.sns.confirm(r.Context(), &m); err != nil {
				if errors.Is(err, errUnverified) {
					p.refuse(w, r, "ses", err)
					return
				}
				p.log.Error("SES webhook: SNS subscription not confirmed", "topic", m.TopicArn, "err", err)
				writeError(w, http.StatusBadGateway, "confirm_failed", "could not confirm the subscription with SNS; try again later")
				return
			}
			p.log.Info("SES webhook: SNS subscription confirmed", "topic", m.TopicArn)
			writeJSON(w, http.StatusOK, map[string]any{"confirmed": true, "topic_arn": m.TopicArn})
		case snsUnsubscribeAck:
			p.log.Warn("SES webhook: SNS says this endpoint was unsubscribed", "topic", m.TopicArn)
			writeJSON(w, http.StatusOK, map[string]any{"unsubscribed": true, "topic_arn": m.TopicArn})
		default: // Notification: verify accepted no other type
			p.sesNotification(w, r, &m)
		}
	})
}

func (p *Providers) sesNotification(w http.ResponseWriter, r *http.Request, m *snsMessage) {
	var ev sesEvent
	if err := json.Unmarshal([]byte(m.Message), &ev); err != nil {
		p.log.Warn("SES webhook: notification's Message is not an SES event, nothing changed", "topic", m.TopicArn, "message_id", m.MessageID, "err", err)
		writeError(w, http.StatusBadRequest, "bad_request", "Message is not an SES event (JSON): "+err.Error())
		return
	}
	typ := firstNonEmpty(ev.EventType, ev.NotificationType)
	pe, ok := sesOutcome(&ev, []byte(m.Message))
	if !ok {
		// Send, Reject, Open, Click, …: nothing we record.
		p.log.Debug("SES webhook: event type not recorded", "type", typ)
		writeJSON(w, http.StatusOK, map[string]any{"ignored": typ})
		return
	}
	tok, how := p.sesToken(&ev)
	if err := p.take(r.Context(), "ses", tok, how, pe); err != nil {
		if errors.Is(err, errEarly) {
			// SNS retries a 5xx: by then the worker has recorded the 250.
			writeError(w, http.StatusServiceUnavailable, "not_yet", "the notice's sending is not recorded yet; try again later")
			return
		}
		writeError(w, http.StatusInternalServerError, "internal", "cannot record the event now; try again later")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": typ})
}

// sesToken finds our token: in mail.source, the envelope sender SES was
// given (our return path), else in the original X-Oshirase-Token header
// (when the identity includes original headers).
func (p *Providers) sesToken(ev *sesEvent) (tok, how string) {
	if p.codec.InDomain(ev.Mail.Source) {
		addr := strings.ToLower(strings.Trim(strings.TrimSpace(ev.Mail.Source), "<>"))
		if local, ok := strings.CutPrefix(addr[:strings.LastIndexByte(addr, '@')], "b-"); ok {
			return local, "ses:source"
		}
	}
	for _, h := range ev.Mail.Headers {
		if strings.EqualFold(h.Name, mailer.TokenHeader) {
			return strings.ToLower(strings.TrimSpace(h.Value)), "ses:header"
		}
	}
	return "", ""
}

// sesOutcome maps an SES event to what is recorded. Our notices have one
// recipient each, so the first (only) recipient entry is the one.
//   - Bounce Permanent: bounced; the address is put on the suppression
//     list when the status says it is bad (5.1.x, 5.2.1) or SES says so
//     (NoEmail, Suppressed, OnAccountSuppressionList).
//   - Bounce Transient or Undetermined: bounced (SES has stopped trying
//     this notice; it did not arrive), not suppressed.
//   - Complaint: complained, suppressed.
//   - DeliveryDelay: a delayed event; Delivery: a delivered event, the
//     evidence the notice reached the recipient's server (not kept raw:
//     there is one per notice, and the raw list is for doubtful bounces).
func sesOutcome(ev *sesEvent, raw []byte) (providerEvent, bool) {
	switch firstNonEmpty(ev.EventType, ev.NotificationType) {
	case "Bounce":
		if ev.Bounce == nil {
			return providerEvent{}, false
		}
		b := ev.Bounce
		rep := &bounce.Report{Kind: bounce.KindBounce, Action: "failed", ReportingMTA: mtaName(b.ReportingMTA)}
		if len(b.BouncedRecipients) > 0 {
			br := b.BouncedRecipients[0]
			rep.Action = firstNonEmpty(br.Action, rep.Action)
			rep.Status = firstNonEmpty(br.Status, codeIn(br.DiagnosticCode))
			rep.Diagnostic = br.DiagnosticCode
		}
		if rep.Diagnostic == "" {
			rep.Diagnostic = strings.TrimSpace("SES " + b.BounceType + " " + b.BounceSubType)
		}
		hard := false
		if b.BounceType == "Permanent" {
			if rep.Status == "" {
				rep.Status = "5.0.0"
			}
			switch b.BounceSubType {
			case "NoEmail", "Suppressed", "OnAccountSuppressionList":
				hard = true
			default:
				hard = rep.Hard()
			}
		}
		return providerEvent{rep: rep, hard: hard, raw: raw}, true
	case "Complaint":
		if ev.Complaint == nil {
			return providerEvent{}, false
		}
		fb := firstNonEmpty(ev.Complaint.ComplaintFeedbackType, ev.Complaint.ComplaintSubType, "abuse")
		return providerEvent{rep: &bounce.Report{Kind: bounce.KindComplaint, FeedbackType: fb}, hard: true, raw: raw}, true
	case "DeliveryDelay":
		if ev.DeliveryDelay == nil {
			return providerEvent{}, false
		}
		d := ev.DeliveryDelay
		rep := &bounce.Report{Kind: bounce.KindDelayed, Action: "delayed", ReportingMTA: mtaName(d.ReportingMTA), Diagnostic: "SES " + d.DelayType}
		if len(d.DelayedRecipients) > 0 {
			dr := d.DelayedRecipients[0]
			rep.Status = firstNonEmpty(dr.Status, codeIn(dr.DiagnosticCode))
			rep.Diagnostic = firstNonEmpty(dr.DiagnosticCode, rep.Diagnostic)
		}
		return providerEvent{rep: rep, raw: raw}, true
	case "Delivery":
		if ev.Delivery == nil {
			return providerEvent{}, false
		}
		d := ev.Delivery
		return providerEvent{rep: &bounce.Report{Kind: bounce.KindDelivered, Action: "delivered", Status: codeIn(d.SMTPResponse),
			Diagnostic: d.SMTPResponse, ReportingMTA: mtaName(d.ReportingMTA)}}, true
	}
	return providerEvent{}, false
}

// mtaName drops the type of a reporting MTA ("dsn; a27-23.smtp-out…"), as
// the DSN parser does.
func mtaName(v string) string {
	if _, a, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(a)
	}
	return strings.TrimSpace(v)
}
