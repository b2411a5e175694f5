package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// NotificationPrefix starts the name of every campaign made for a single
// notice, so lists can tell them from mass campaigns.
const NotificationPrefix = "notification: "

// NotificationRequest is the body of POST /v1/notifications: one notice, to
// one recipient, now.
type NotificationRequest struct {
	Template            string                `json:"template"`
	Locale              string                `json:"locale"`
	From                string                `json:"from"`
	ReplyTo             string                `json:"reply_to"`
	Charset             string                `json:"charset"`
	Paragraphs          []string              `json:"extra_paragraphs"`
	Data                map[string]any        `json:"data"`
	Recipient           NotificationRecipient `json:"recipient"`
	OverrideSuppression bool                  `json:"override_suppression"`
}

// NotificationRecipient is who the single notice is for: the fields of an
// upload row.
type NotificationRecipient struct {
	Email      string            `json:"email"`
	Name       string            `json:"name"`
	Locale     string            `json:"locale"`
	CustomerID string            `json:"customer_id"`
	CardBrand  string            `json:"card_brand"`
	CardLast4  string            `json:"card_last4"`
	Extra      map[string]string `json:"extra"`
}

// NotificationAnswer says where the single notice is tracked.
type NotificationAnswer struct {
	CampaignID  string        `json:"campaign_id"`
	RecipientID int64         `json:"recipient_id"`
	Status      notice.Status `json:"status"`
	URL         string        `json:"url"`
}

// Notify sends one notice now: a campaign of one recipient, started at once
// and delivered through the urgent queue, so it is tracked, looked up,
// resent and audited like any other recipient.
func (a *App) Notify(ctx context.Context, req NotificationRequest) (*NotificationAnswer, error) {
	tmpl := req.Template
	if tmpl == "" {
		tmpl = "card-reissue"
	}
	ans, err := a.sendOne(ctx, NotificationPrefix+tmpl, notice.KindNotification, req)
	if err != nil {
		return nil, err
	}
	details, _ := json.Marshal(map[string]string{"template": tmpl, "email": notice.MaskEmail(req.Recipient.Email)})
	a.Audit(ctx, store.AuditEntry{Action: "notification.send", CampaignID: ans.CampaignID, Recipient: ans.RecipientID, Details: details})
	return ans, nil
}

// sendOne sends req as the one recipient of a new campaign called name.
func (a *App) sendOne(ctx context.Context, name, kind string, req NotificationRequest) (*NotificationAnswer, error) {
	creq := CampaignRequest{
		Name: name, Template: req.Template, DefaultLocale: req.Locale,
		From: senderField{one: req.From}, ReplyTo: req.ReplyTo, Charset: req.Charset, Paragraphs: req.Paragraphs, Data: req.Data,
	}
	errs := creq.Validate(a.templates, a.cfg.DKIMDomains)
	for i := range errs {
		if errs[i].Field == "default_locale" {
			errs[i].Field = "locale"
		}
	}
	rc := notice.Recipient{
		Email: req.Recipient.Email, Name: req.Recipient.Name, Locale: req.Recipient.Locale,
		CustomerID: req.Recipient.CustomerID, CardBrand: req.Recipient.CardBrand, CardLast4: req.Recipient.CardLast4,
		Extra: req.Recipient.Extra,
	}
	if rej := ingest.Validate(&rc); rej != nil {
		errs = append(errs, FieldError{"recipient." + rej.Field, rej.Error})
	} else if f, msg := templates.RecipientCharsetProblem(&rc, req.Charset); f != "" {
		errs = append(errs, FieldError{"recipient." + f, msg})
	}
	if len(errs) > 0 {
		a.NoteCards(ctx, errs)
		return nil, &Error{Kind: Invalid, Code: "invalid_notification", Msg: "the notification has invalid fields", Fields: errs}
	}
	if !req.OverrideSuppression {
		sup, err := a.store.Suppression(ctx, rc.Email)
		if err == nil {
			return nil, E(Conflict, CodeSuppressed, fmt.Sprintf("address is on the suppression list (%s); set override_suppression to send anyway", sup.Reason))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	// Single notices and test sends share one allowance per key: a stolen
	// admin key must not be a spam cannon.
	if err := a.quota(ctx, limitNotifications); err != nil {
		return nil, err
	}
	c := creq.Campaign()
	c.Kind = kind
	if c.Charset == notice.CharsetISO2022JP {
		if problems := a.charsetProblems(&c); problems != nil {
			return nil, &Error{Kind: Invalid, Code: "charset", Msg: "the notice has characters ISO-2022-JP cannot carry", Fields: problems}
		}
	}
	if err := a.store.CreateCampaign(ctx, &c); err != nil {
		return nil, err
	}
	added, err := a.store.AddRecipients(ctx, c.ID, []notice.Recipient{rc})
	if err != nil {
		return nil, err
	}
	ids := added.IDs
	if len(ids) != 1 || ids[0] < 1 {
		return nil, fmt.Errorf("notification %s: recipient not added", c.ID)
	}
	rid := ids[0]
	t, err := a.store.Start(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	ans := &NotificationAnswer{
		CampaignID: c.ID, RecipientID: rid, Status: notice.StatusPending,
		URL: fmt.Sprintf("/v1/campaigns/%s/recipients/%d", c.ID, rid),
	}
	// The campaign is sending: the notice goes out one way or another, so
	// nothing below may answer with an error a caller would retry (a second
	// notice). What fails is left to the watchdog's fan-out.
	bg := context.WithoutCancel(ctx)
	// Its one recipient goes through the urgent queue, not a fan-out: mark
	// the fan-out done so the watchdog does not start one on the bulk queue.
	if err := a.store.SetFanoutCursor(bg, c.ID, t.Gen, rid+1); err != nil {
		a.log.Warn("single notice left to the fan-out", "campaign", c.ID, "err", err)
		return ans, nil
	}
	p := tasks.DeliverPayload{CampaignID: c.ID, RecipientID: rid}
	id := fmt.Sprintf("notify:%s:%d", c.ID, rid)
	// Tracked like a resend, so a purge waits for it (the campaign is sending
	// until it is final anyway: this is for the retries' sake).
	if err := a.store.TrackDelivery(bg, c.ID, id, time.Now().Add(trackGrace)); err != nil {
		a.log.Warn("single notice not tracked", "campaign", c.ID, "err", err)
	}
	if err := tasks.Deliver(bg, a.queue, p, tasks.QueueUrgent, id, 0); err != nil {
		// The watchdog re-enqueues a fan-out whose cursor is behind (and
		// finds a pending recipient of a stalled campaign if even this
		// write fails).
		a.log.Warn("single notice left to the fan-out", "campaign", c.ID, "err", err)
		a.store.SetFanoutCursor(bg, c.ID, t.Gen, 1)
	}
	return ans, nil
}
