package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// Codes of refusals the support console explains in its own words (the
// API answers with them as they are).
const (
	// CodeSuppressed: Resend or Notify to an address on the suppression
	// list, without override_suppression (Conflict).
	CodeSuppressed = "suppressed"
	// CodeNotSent: Resend of a notice that is not final yet (Conflict).
	CodeNotSent = "not_sent"
	// CodeCancelled: Resend of a notice cancelled with its campaign.
	CodeCancelled = "cancelled"
	// CodePurging: Resend in a campaign being purged.
	CodePurging = "purging"
)

// trackGrace is how long a queued resend or single notice is trusted to be
// outstanding without asking asynq: the worker moves it on while the task
// retries and removes it when done; past it, a purge checks that the task
// still exists (a lost task must not block a purge for ever).
const trackGrace = 5 * time.Minute

// CampaignRef is the part of a campaign a look-up shows.
type CampaignRef struct {
	ID            string                `json:"id"`
	Name          string                `json:"name"`
	Template      string                `json:"template"`
	Status        notice.CampaignStatus `json:"status"`
	DefaultLocale string                `json:"default_locale,omitempty"`
	ScheduledAt   *time.Time            `json:"scheduled_at,omitempty"`
}

// Notice is one recipient record found by a look-up: the campaign it
// belongs to, and the recipient with its delivery, attempts and resends.
type Notice struct {
	Campaign CampaignRef `json:"campaign"`
	notice.Recipient
	// NoticeLocale is the language the notice went out (or goes out) in:
	// the recipient's, else the campaign's default.
	NoticeLocale string `json:"notice_locale"`
	// CurrentStatus is where the customer stands now: the notice's status,
	// or "sent" once a resend was sent (CurrentResend names it) after the
	// notice itself failed, bounced or was suppressed.
	CurrentStatus notice.Status `json:"current_status"`
	CurrentResend int           `json:"current_resend,omitempty"`
	// ExpectedAt is, for a recipient not sent yet, when it should go: the
	// scheduled start, or an estimate from the campaign's rate so far.
	ExpectedAt *time.Time `json:"expected_at,omitempty"`
	// Suppression: the recipient's address is on the suppression list.
	Suppression *store.Suppression `json:"suppression,omitempty"`
}

// LookupResult is every notice ever addressed to one address.
type LookupResult struct {
	Email       string             `json:"email"`
	Notices     []Notice           `json:"notices"`
	Suppression *store.Suppression `json:"suppression,omitempty"`
}

// Lookup finds every notice addressed to addr through the address index:
// one hash read, then one read per notice found — never a scan.
func (a *App) Lookup(ctx context.Context, addr string) (*LookupResult, error) {
	addr = LookupForm(addr)
	refs, err := a.store.Lookup(ctx, addr)
	if err != nil {
		return nil, err
	}
	res := &LookupResult{Email: store.EmailKey(addr)}
	if res.Notices, err = a.notices(ctx, refs); err != nil {
		return nil, err
	}
	sup, err := a.store.Suppression(ctx, addr)
	switch {
	case err == nil:
		res.Suppression = sup
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	return res, nil
}

// notices reads the notices refs name (one read per campaign and per
// recipient), skipping those of deleted campaigns and purged recipients.
func (a *App) notices(ctx context.Context, refs []store.Ref) ([]Notice, error) {
	out := []Notice{}
	campaigns := map[string]*notice.Campaign{}
	for _, ref := range refs {
		c, ok := campaigns[ref.CampaignID]
		if !ok {
			var err error
			c, err = a.store.Campaign(ctx, ref.CampaignID)
			if errors.Is(err, store.ErrNotFound) {
				campaigns[ref.CampaignID] = nil // deleted campaign: its index entries are stale
				continue
			}
			if err != nil {
				return nil, err
			}
			campaigns[ref.CampaignID] = c
		}
		if c == nil {
			continue
		}
		rc, err := a.store.Recipient(ctx, ref.CampaignID, ref.RecipientID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, noticeOf(c, rc, time.Now()))
	}
	addrs := make([]string, len(out))
	for i := range out {
		addrs[i] = out[i].Email
	}
	sups, err := a.store.Suppressed(ctx, addrs)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Suppression = sups[out[i].Email]
	}
	return out, nil
}

// noticeOf is a recipient as support sees it (see Notice).
func noticeOf(c *notice.Campaign, rc *notice.Recipient, now time.Time) Notice {
	n := Notice{
		Campaign: CampaignRef{ID: c.ID, Name: c.Name, Template: c.Template, Status: c.Status,
			DefaultLocale: c.DefaultLocale, ScheduledAt: c.ScheduledAt},
		Recipient:     *rc,
		NoticeLocale:  rc.EffectiveLocale(c.DefaultLocale),
		CurrentStatus: rc.Status,
	}
	if rc.Status != notice.StatusSent {
		for i := len(rc.Resends) - 1; i >= 0; i-- {
			if rc.Resends[i].Status == notice.StatusSent {
				n.CurrentStatus, n.CurrentResend = notice.StatusSent, rc.Resends[i].N
				break
			}
		}
	}
	if rc.Status == notice.StatusPending {
		switch {
		case c.Status == notice.CampaignDraft && c.ScheduledAt != nil:
			n.ExpectedAt = c.ScheduledAt
		case c.Status == notice.CampaignSending:
			// Recipients go out roughly in id order: those ahead of this
			// one at the rate so far.
			if p := ProgressOf(c, now, nil); p != nil && p.RatePerSecond > 0 {
				ahead := max(0, float64(rc.ID-p.Done))
				t := now.Add(time.Duration(ahead / p.RatePerSecond * float64(time.Second))).Truncate(time.Second)
				n.ExpectedAt = &t
			}
		}
	}
	return n
}

// LookupForm is addr as recipients are stored and indexed (NFKC, an IDN
// domain in punycode; the index then takes it in lower case), so that
// support finds "keep@ｅｘａｍｐｌｅ.com" and "idn@bücher.example" as typed.
// What could not be a stored address is looked up as given.
func LookupForm(addr string) string {
	if n := ingest.NormalizeEmail(addr); n != "" {
		return n
	}
	return addr
}

// ResendRequest is the body of POST /v1/campaigns/{id}/recipients/{rid}/resend.
type ResendRequest struct {
	Reason              string `json:"reason"`
	Email               string `json:"email,omitempty"` // a corrected address; "" = the recipient's own
	OverrideSuppression bool   `json:"override_suppression,omitempty"`
	// Locale sends the notice in another language than it went in (ja,
	// en): a customer who cannot read the first one.
	Locale string `json:"locale,omitempty"`
}

// Resend records a new delivery of a recipient's notice and queues it on
// the urgent queue. The actor is the key in ctx (auth.WithActor). The original
// delivery stays as it was; the resend has its own status and Message-ID.
func (a *App) Resend(ctx context.Context, cid string, rid int64, req ResendRequest) (*notice.Resend, error) {
	req.Reason = strings.TrimSpace(req.Reason)
	if req.Reason == "" {
		return nil, &Error{Kind: Invalid, Code: "reason_required", Msg: "a reason is required", Fields: []FieldError{{"reason", "required"}}}
	}
	if len(req.Reason) > 1000 {
		return nil, &Error{Kind: Invalid, Code: "invalid_reason", Msg: "the reason is longer than 1000 bytes", Fields: []FieldError{{"reason", "at most 1000 bytes"}}}
	}
	if fe := a.CardInText(ctx, "reason", req.Reason); fe != nil {
		return nil, &Error{Kind: Invalid, Code: "invalid_reason", Msg: "the reason looks like it holds a full card number; write at most the last 4 digits", Fields: fe}
	}
	if req.Locale != "" && !notice.ValidLocale(req.Locale) {
		return nil, &Error{Kind: Invalid, Code: "invalid_locale", Msg: "locale must be ja or en", Fields: []FieldError{{"locale", "must be ja or en"}}}
	}
	c, rc, err := a.recipient(ctx, cid, rid)
	if err != nil {
		return nil, err
	}
	switch rc.Status {
	case notice.StatusSent, notice.StatusFailed, notice.StatusSuppressed, notice.StatusBounced, notice.StatusComplained:
	case notice.StatusCancelled:
		return nil, E(Conflict, CodeCancelled, fmt.Sprintf("recipient %d of campaign %s was cancelled with its campaign (%s)", rid, cid, c.Status))
	default:
		// Resending it now could deliver it twice.
		return nil, E(Conflict, CodeNotSent, fmt.Sprintf("recipient %d of campaign %s is %s: the notice has not been sent yet; a resend is for a notice already sent, failed or suppressed", rid, cid, rc.Status))
	}
	to := rc.Email
	if e := strings.TrimSpace(req.Email); e != "" {
		v := notice.Recipient{Email: e}
		if rej := ingest.Validate(&v); rej != nil && rej.Field == "email" {
			return nil, &Error{Kind: Invalid, Code: "invalid_email", Msg: "corrected address: " + rej.Error, Fields: []FieldError{{"email", rej.Error}}}
		}
		to = v.Email
	}
	if !req.OverrideSuppression {
		sup, err := a.store.Suppression(ctx, to)
		if err == nil {
			return nil, E(Conflict, CodeSuppressed, fmt.Sprintf("address is on the suppression list since %s (%s); set override_suppression to send anyway", sup.At.Format(time.RFC3339), sup.Reason))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	// Last before the resend is recorded: a refused request costs nothing.
	if err := a.quota(ctx, limitResends); err != nil {
		return nil, err
	}
	rs := notice.Resend{At: time.Now().UTC().Truncate(time.Millisecond), Reason: req.Reason, Email: to, Status: notice.StatusPending}
	if req.Locale != "" && req.Locale != rc.EffectiveLocale(c.DefaultLocale) {
		rs.Locale = req.Locale
	}
	if k := auth.Actor(ctx); k != nil {
		rs.Actor = k.Name
	}
	n, err := a.store.AddResend(ctx, cid, rid, rs)
	if err != nil {
		return nil, err
	}
	rs.N = n
	id := fmt.Sprintf("resend:%s:%d:%d", cid, rid, n)
	p := tasks.DeliverPayload{CampaignID: cid, RecipientID: rid, Resend: n}
	bg := context.WithoutCancel(ctx)
	notQueued := func(why string) {
		a.store.UpdateResend(bg, cid, rid, n, func(x *notice.Resend) {
			x.Status, x.LastError = notice.StatusFailed, why
		})
	}
	// Tracked before it is queued: a purge from now on waits for it (or,
	// begun already, makes us refuse), so an accepted resend always goes out.
	if err := a.store.TrackDelivery(ctx, cid, id, time.Now().Add(trackGrace)); err != nil {
		if errors.Is(err, store.ErrPurging) {
			notQueued("not queued: the campaign is being purged")
			return nil, &Error{Kind: Conflict, Code: CodePurging, Msg: fmt.Sprintf("campaign %s is being purged; nothing of it can be resent", cid), Err: err}
		}
		notQueued("could not be queued")
		return nil, err
	}
	if err := tasks.Deliver(ctx, a.queue, p, tasks.QueueUrgent, id, 0); err != nil {
		notQueued("could not be queued")
		a.store.UntrackDelivery(bg, cid, id)
		return nil, err
	}
	d := map[string]any{
		"resend": n, "email": notice.MaskEmail(to), "corrected": to != rc.Email,
		"override_suppression": req.OverrideSuppression,
	}
	if rs.Locale != "" {
		d["locale"] = rs.Locale
	}
	if !strings.EqualFold(domainOf(to), domainOf(rc.Email)) {
		// A notice (name, card brand, last 4) leaving for another domain
		// is how a stolen support key would harvest it: the admins'
		// audit log keeps where it went, whole, beside the reason.
		d["outside_domain"], d["target"] = true, to
	}
	details, _ := json.Marshal(d)
	a.Audit(ctx, store.AuditEntry{Action: "recipient.resend", CampaignID: cid, Recipient: rid, Reason: req.Reason, Details: details})
	return &rs, nil
}

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// recipient reads recipient rid of campaign cid, and the campaign.
func (a *App) recipient(ctx context.Context, cid string, rid int64) (*notice.Campaign, *notice.Recipient, error) {
	c, err := a.store.Campaign(ctx, cid)
	if err != nil {
		return nil, nil, err
	}
	rc, err := a.store.Recipient(ctx, cid, rid)
	if err != nil {
		return nil, nil, err
	}
	return c, rc, nil
}
