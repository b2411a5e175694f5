package inbound

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// recorder records what came back for a notice — by mail to the bounce
// receiver, or as an Amazon SES or SendGrid event — through one path:
// the same once-only recording, status change, suppression, status
// webhook event and audit entry whichever way it arrived.
type recorder struct {
	store  *store.Store
	log    *slog.Logger
	now    func() time.Time
	events *webhooks.Emitter
}

func (s *Server) rec() recorder {
	return recorder{store: s.cfg.Store, log: s.cfg.Log, now: s.cfg.Now, events: s.cfg.Events}
}

// outcome is one thing that came back for one delivery of a recipient.
type outcome struct {
	ref bounce.Ref
	how string // where the token was found (rcpt, envid, header, ses:source, sendgrid:arg, …)
	rep *bounce.Report
	// hard says the address itself is bad (or its owner complained): a
	// bounce puts it on the suppression list. The mail receiver decides
	// by the DSN's Status (Report.Hard); a provider may know better (SES
	// bounceSubType NoEmail, SendGrid's "Invalid" drop).
	hard bool
	raw  []byte // kept among the campaign's returned messages; nil: not kept
	via  string // mail, ses or sendgrid: for the audit log
}

// errRetry says recording failed on our side (storage): the sender should
// try again later (SMTP 451, HTTP 500).
var errRetry = errors.New("cannot record it now, try again later")

// errEarly says the notice's sending is not recorded yet (the relay
// bounced it before the worker recorded the relay's 250): recorded now,
// the bounce would be overwritten by "sent" a moment later, and the next
// copy of the DSN would be a duplicate. The sender keeps it and tries
// again (SMTP 451, HTTP 503).
var errEarly = errors.New("the notice's sending is not recorded yet, try again later")

// record records o once: a second arrival of the same kind for the same
// delivery changes nothing.
func (rc recorder) record(ctx context.Context, o outcome) error {
	ref, rep := o.ref, o.rep
	kind := string(rep.Kind)
	ev := notice.Returned{
		At: rc.now().UTC(), Kind: kind, Delivery: ref.Delivery, Action: rep.Action, Status: rep.Status,
		Diagnostic: rep.Diagnostic, ReportingMTA: rep.ReportingMTA, FeedbackType: rep.FeedbackType,
	}
	var set notice.Status
	switch rep.Kind {
	case bounce.KindBounce:
		set = notice.StatusBounced
	case bounce.KindComplaint:
		set = notice.StatusComplained
	}
	r, err := rc.store.Recipient(ctx, ref.Campaign, ref.Recipient)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		rc.log.Error("returned message: read recipient", "via", o.via, "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
		metrics.Returned.WithLabelValues(kind, "error").Inc()
		return errRetry
	}
	if r != nil && ref.Delivery < len(r.Resends) {
		// A later resend is what counts now (perhaps to a corrected
		// address): an old delivery's bounce is history, not the status.
		set = ""
	}
	if set != "" && r != nil && ref.Delivery == 0 && r.Status == notice.StatusSending {
		metrics.Returned.WithLabelValues(kind, "early").Inc()
		rc.log.Info("returned message for a notice whose sending is not recorded yet: asked to try again later", "via", o.via,
			"campaign", ref.Campaign, "recipient", ref.Recipient, "kind", kind)
		return errEarly
	}
	out, err := rc.store.RecordReturned(ctx, ref.Campaign, ref.Recipient, ev, set, o.raw)
	switch {
	case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrPurged):
		metrics.Returned.WithLabelValues(kind, "gone").Inc()
		rc.log.Warn("returned message for a campaign or recipient that is gone: not recorded", "via", o.via, "campaign", ref.Campaign,
			"recipient", ref.Recipient, "kind", kind, "err", err)
		return nil
	case err != nil:
		metrics.Returned.WithLabelValues(kind, "error").Inc()
		rc.log.Error("returned message: record", "via", o.via, "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
		return errRetry
	case out.Duplicate:
		metrics.Returned.WithLabelValues(kind, "duplicate").Inc()
		return nil
	}
	metrics.Returned.WithLabelValues(kind, "recorded").Inc()
	rc.log.Info("returned message recorded", "via", o.via, "campaign", ref.Campaign, "recipient", ref.Recipient, "delivery", ref.Delivery,
		"kind", kind, "status", rep.Status, "token_from", o.how, "before", out.Before, "after", out.After)
	suppress := out.After != out.Before && r != nil && (o.hard || rep.Kind == bounce.KindComplaint)
	if typ := returnedEvents[rep.Kind]; typ != "" && (out.After != out.Before || rep.Kind == bounce.KindDelayed) {
		rc.events.Emit(webhooks.Event{Type: typ, Data: webhooks.Data{CampaignID: ref.Campaign, RecipientID: ref.Recipient,
			Status: string(out.After), EnhancedCode: rep.Status, Resend: ref.Delivery}})
	}
	if out.After != out.Before {
		// Delivery outcomes by campaign count the bounces and complaints
		// too, next to the worker's sent and failed.
		label := ref.Campaign
		if c, err := rc.store.Campaign(ctx, ref.Campaign); err == nil {
			label = c.MetricLabel()
		}
		metrics.Messages.WithLabelValues(label, string(out.After)).Inc()
		// The proof of notification changed: audited like any other
		// change of a recipient's outcome (no address: the ids say who).
		details, _ := json.Marshal(map[string]any{"delivery": ref.Delivery, "action": rep.Action, "status": rep.Status,
			"reporting_mta": rep.ReportingMTA, "feedback_type": rep.FeedbackType, "suppressed": suppress, "token_from": o.how, "via": o.via})
		if err := rc.store.Audit(ctx, store.AuditEntry{Actor: "inbound", Action: "recipient." + string(out.After),
			CampaignID: ref.Campaign, Recipient: ref.Recipient, Details: details}); err != nil {
			rc.log.Error("audit log write failed", "action", "recipient."+string(out.After), "err", err)
		}
	}
	if suppress {
		addr := r.Email
		if ref.Delivery > 0 && ref.Delivery <= len(r.Resends) && r.Resends[ref.Delivery-1].Email != "" {
			addr = r.Resends[ref.Delivery-1].Email
		}
		sup := store.Suppression{Email: addr, CampaignID: ref.Campaign, Enhanced: rep.Status,
			Reason: "bounced: " + strings.TrimSpace(rep.Status+" "+notice.MaskAddresses(rep.Diagnostic))}
		if rep.Kind == bounce.KindComplaint {
			sup.Reason = "complained: " + firstNonEmpty(rep.FeedbackType, "abuse")
		}
		if err := rc.store.Suppress(ctx, sup); err != nil {
			// The status is recorded; the suppression is what a retry of
			// this message would add, so ask for one.
			rc.log.Error("returned message: suppress address", "via", o.via, "campaign", ref.Campaign, "recipient", ref.Recipient, "err", err)
			return errRetry
		}
	}
	return nil
}

// unmatched counts, logs (no address) and keeps aside something that came
// back tied to no notice: outcome is no_token or bad_token. It fails only
// when it could not be kept.
func (rc recorder) unmatched(ctx context.Context, kind, outcome, how string, raw []byte, cause error, attrs ...any) error {
	metrics.Returned.WithLabelValues(kind, outcome).Inc()
	rc.log.Warn("returned message tied to no notice: kept aside, no recipient changed", append([]any{"kind", kind, "outcome", outcome,
		"token_from", how, "bytes", len(raw), "err", notice.MaskAddresses(cause.Error())}, attrs...)...)
	if err := rc.store.KeepUnmatched(ctx, rc.now().UTC(), kind, outcome, raw); err != nil {
		rc.log.Error("returned message tied to no notice: keep", "err", err)
		return errRetry
	}
	return nil
}
