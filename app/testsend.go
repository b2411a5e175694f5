package app

import (
	"context"
	"encoding/json"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// TestPrefix starts the name of every campaign made for a test send.
const TestPrefix = "test: "

// TestSendRequest is the body of POST /v1/campaigns/{id}/test: send the
// campaign's notice to a reviewer before it goes to everyone.
type TestSendRequest struct {
	Email  string `json:"email"`
	Locale string `json:"locale"` // default: the campaign's
	// Recipient is whose notice to show (name, card brand, …); by default
	// the sample recipient of the locale. Its email is ignored.
	Recipient *NotificationRecipient `json:"recipient"`
}

// TestSend sends a campaign's notice, exactly as its recipients will get
// it (template, data, extra paragraphs, charset, From, DKIM), to one
// reviewer's address, so that a person reads it in a real mail client
// before thousands of copies leave. It is a one-recipient campaign of its
// own, tracked like a notification; the campaign under test is untouched
// and may still be a draft.
func (a *App) TestSend(ctx context.Context, id string, req TestSendRequest) (*NotificationAnswer, error) {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	locale := req.Locale
	if locale == "" {
		locale = c.DefaultLocale
	}
	if !notice.ValidLocale(locale) {
		return nil, E(Invalid, "invalid", "locale must be ja or en", FieldError{"locale", "must be ja or en"})
	}
	sample := templates.SampleRecipient(locale)
	rc := NotificationRecipient{Name: sample.Name, CustomerID: sample.CustomerID, CardBrand: sample.CardBrand, CardLast4: sample.CardLast4}
	if req.Recipient != nil {
		rc = *req.Recipient
	}
	rc.Email, rc.Locale = req.Email, locale
	ans, err := a.sendOne(ctx, TestPrefix+c.Name, notice.KindTest, NotificationRequest{
		Template: c.Template, Locale: locale, From: c.FromFor(locale), ReplyTo: c.ReplyTo, Charset: c.Charset,
		Paragraphs: c.Paragraphs, Data: c.Data, Recipient: rc,
	})
	if err != nil {
		return nil, err
	}
	details, _ := json.Marshal(map[string]string{"test_campaign_id": ans.CampaignID, "email": notice.MaskEmail(rc.Email), "locale": locale})
	a.Audit(ctx, store.AuditEntry{Action: "campaign.test", CampaignID: id, Details: details})
	return ans, nil
}
