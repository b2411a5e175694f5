// Package webhooks sends signed status events to the company's own systems
// (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>").
//
// The hot path only hands an event to an in-process Emitter (a channel
// send, also while no endpoint is registered: another process may register
// one at any moment, and the emitter decides per batch). The emitter batches
// events (up to BatchSize per request, or what arrived within a second) and
// enqueues one asynq task per endpoint and batch on the "webhooks" queue,
// which a small server of its own serves: a slow receiver never holds a
// sending slot. Task payloads carry ids, statuses and codes only; the
// deliverer adds the customer id (and the address, for endpoints that ask)
// from Redis when it sends.
package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Queue is the asynq queue webhook deliveries run on.
const Queue = "webhooks"

// TaskDeliver is the asynq task type of one delivery (a batch to one endpoint).
const TaskDeliver = "webhook:deliver"

// Event types (the names). Bounces, complaints and delays are
// accepted in subscriptions now and emitted once bounce processing lands.
const (
	RecipientSent       = "recipient.sent"
	RecipientFailed     = "recipient.failed"
	RecipientBounced    = "recipient.bounced"
	RecipientComplained = "recipient.complained"
	RecipientDelayed    = "recipient.delayed"
	RecipientSuppressed = "recipient.suppressed"
	RecipientResent     = "recipient.resent"
	CampaignStarted     = "campaign.started"
	CampaignPaused      = "campaign.paused"
	CampaignResumed     = "campaign.resumed"
	CampaignDone        = "campaign.done"
	CampaignCancelled   = "campaign.cancelled"
	CampaignPurged      = "campaign.purged"
)

// Types lists every event type an endpoint may subscribe to.
var Types = []string{RecipientSent, RecipientFailed, RecipientBounced, RecipientComplained, RecipientDelayed,
	RecipientSuppressed, RecipientResent, CampaignStarted, CampaignPaused, CampaignResumed, CampaignDone,
	CampaignCancelled, CampaignPurged}

// ValidType reports whether t is an event type (or "*": all of them).
func ValidType(t string) bool { return t == "*" || slices.Contains(Types, t) }

// Event is what a receiver gets (a JSON array of them per request).
type Event struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is an event's content. Recipient events carry recipient_id, status
// and the SMTP reply; campaign events the campaign's status.
type Data struct {
	CampaignID   string     `json:"campaign_id"`
	RecipientID  int64      `json:"recipient_id,omitempty"`
	CustomerID   string     `json:"customer_id,omitempty"` // filled in when delivered
	Email        string     `json:"email,omitempty"`       // only for endpoints with include_address
	Status       string     `json:"status,omitempty"`
	Resend       int        `json:"resend,omitempty"` // recipient.resent: which resend (1-based)
	SMTPCode     int        `json:"smtp_code,omitempty"`
	EnhancedCode string     `json:"enhanced_code,omitempty"`
	MessageID    string     `json:"message_id,omitempty"`
	SentAt       *time.Time `json:"sent_at,omitempty"`
	FirstTryAt   *time.Time `json:"first_attempt_at,omitempty"`
	Attempts     int        `json:"attempts,omitempty"`
}

// NewSecret returns a new signing secret, whsec_ and 32 random bytes in
// base64 (the Standard Webhooks form).
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

// Sign returns the webhook-signature header value for a message: one
// "v1,<sig>" per secret, space-separated (during a rotation's overlap both
// the new and the old secret sign; a receiver accepts either).
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	var sigs []string
	for _, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			return "", fmt.Errorf("webhook secret: %w", err)
		}
		m := hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.", id, ts.Unix())
		m.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(sigs, " "), nil
}
