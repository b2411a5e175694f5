package api

import (
	"encoding/json"
	"net/http"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// TestPrefix starts the name of every campaign made for a test send.
const TestPrefix = "test: "

// testSendRequest is the body of POST /v1/campaigns/{id}/test: send the
// campaign's notice to a reviewer before it goes to everyone.
type testSendRequest struct {
	Email  string `json:"email"`
	Locale string `json:"locale"` // default: the campaign's
	// Recipient is whose notice to show (name, card brand, …); by default
	// the sample recipient of the locale. Its email is ignored.
	Recipient *NotificationRecipient `json:"recipient"`
}

// testSend sends a campaign's notice, exactly as its recipients will get
// it (template, data, extra paragraphs, charset, From, DKIM), to one
// reviewer's address, so that a person reads it in a real mail client
// before thousands of copies leave. It is a one-recipient campaign of its
// own, tracked like a notification; the campaign under test is untouched
// and may still be a draft.
func (s *Server) testSend(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var req testSendRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	locale := req.Locale
	if locale == "" {
		locale = c.DefaultLocale
	}
	if !notice.ValidLocale(locale) {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "locale must be ja or en", []fieldError{{"locale", "must be ja or en"}})
		return
	}
	sample := templates.SampleRecipient(locale)
	rc := NotificationRecipient{Name: sample.Name, CustomerID: sample.CustomerID, CardBrand: sample.CardBrand, CardLast4: sample.CardLast4}
	if req.Recipient != nil {
		rc = *req.Recipient
	}
	rc.Email, rc.Locale = req.Email, locale
	ans, err := s.sendOne(r.Context(), TestPrefix+c.Name, notice.KindTest, NotificationRequest{
		Template: c.Template, Locale: locale, From: c.FromFor(locale), ReplyTo: c.ReplyTo, Charset: c.Charset,
		Paragraphs: c.Paragraphs, Data: c.Data, Recipient: rc,
	})
	if err != nil {
		s.supportError(w, r, err)
		return
	}
	details, _ := json.Marshal(map[string]string{"test_campaign_id": ans.CampaignID, "email": notice.MaskEmail(rc.Email), "locale": locale})
	s.audit(r, store.AuditEntry{Action: "campaign.test", CampaignID: id, Details: details})
	w.Header().Set("Location", ans.URL)
	writeJSON(w, http.StatusAccepted, ans)
}
