// Package notice holds the domain types shared by every other package of
// oshirase: campaigns, recipients, their statuses, and the asynq task names and
// payloads. It imports no other oshirase package, so anything may import it.
package notice

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // campaign zones load in images without a zoneinfo database
)

// CampaignStatus is the life-cycle state of a campaign.
type CampaignStatus string

const (
	CampaignDraft     CampaignStatus = "draft"
	CampaignSending   CampaignStatus = "sending"
	CampaignPaused    CampaignStatus = "paused"
	CampaignDone      CampaignStatus = "done"
	CampaignCancelled CampaignStatus = "cancelled"
)

// Status is the delivery state of one recipient.
type Status string

const (
	StatusPending    Status = "pending"    // accepted, not yet attempted
	StatusSending    Status = "sending"    // claimed by a worker; an SMTP transaction may be under way
	StatusRetrying   Status = "retrying"   // a transient failure; a retry task is scheduled
	StatusSent       Status = "sent"       // the SMTP server accepted the message
	StatusFailed     Status = "failed"     // permanent failure (5xx) or retries exhausted
	StatusSuppressed Status = "suppressed" // address is on the suppression list; not sent
	StatusCancelled  Status = "cancelled"  // campaign cancelled before it was sent
	// After sent: what came back to the notice's return path (BOUNCE_DOMAIN).
	StatusBounced    Status = "bounced"    // the relay accepted it, then a DSN said it failed (final)
	StatusComplained Status = "complained" // the customer reported it as spam (ARF feedback report)
)

// Statuses lists every recipient status, in the order counts are reported.
var Statuses = []Status{StatusPending, StatusSending, StatusRetrying, StatusSent, StatusFailed, StatusSuppressed, StatusCancelled, StatusBounced, StatusComplained}

// Final reports whether s is a terminal state for a campaign's bulk run.
func (s Status) Final() bool {
	switch s {
	case StatusSent, StatusFailed, StatusSuppressed, StatusCancelled, StatusBounced, StatusComplained:
		return true
	}
	return false
}

// ParseStatus validates a status string from user input.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown status %q (want one of %s)", s, strings.Join(statusNames(), ", "))
}

func statusNames() []string {
	out := make([]string, len(Statuses))
	for i, s := range Statuses {
		out[i] = string(s)
	}
	return out
}

// Locales a notice can be written in.
const (
	LocaleJA = "ja"
	LocaleEN = "en"
)

// ValidLocale reports whether l is a supported locale.
func ValidLocale(l string) bool { return l == LocaleJA || l == LocaleEN }

// Charsets a campaign's messages can be encoded in.
const (
	CharsetUTF8      = "utf-8"
	CharsetISO2022JP = "iso-2022-jp"
)

// Campaign is one mass notice: an incident's data, a template and a sender.
// Recipients are stored apart from it.
type Campaign struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Template      string         `json:"template"`
	DefaultLocale string         `json:"default_locale"`
	From          string         `json:"from"`
	ReplyTo       string         `json:"reply_to,omitempty"`
	Charset       string         `json:"charset,omitempty"`
	Rate          float64        `json:"rate,omitempty"`      // messages per second; 0 means the global SMTP_RATE
	TimeZone      string         `json:"time_zone,omitempty"` // the company's zone: a notice is dated in it (default Asia/Tokyo)
	Kind          string         `json:"kind,omitempty"`      // "" for a mass campaign, KindNotification or KindTest for one notice
	Paragraphs    []string       `json:"extra_paragraphs,omitempty"`
	Data          map[string]any `json:"data"`
	Status        CampaignStatus `json:"status"`
	CreatedAt     time.Time      `json:"created_at"`
	StartedAt     *time.Time     `json:"started_at,omitempty"`
	FinishedAt    *time.Time     `json:"finished_at,omitempty"`
	PurgedAt      *time.Time     `json:"purged_at,omitempty"`    // recipients' personal data removed
	ScheduledAt   *time.Time     `json:"scheduled_at,omitempty"` // a draft that starts by itself then
	// PausedReason says why the system paused the campaign (the relay
	// refuses every message); empty for a pause an operator asked for.
	PausedReason string     `json:"paused_reason,omitempty"`
	PausedAt     *time.Time `json:"paused_at,omitempty"`
	Counts       Counts     `json:"counts"`
	LastUpload   *Upload    `json:"last_upload,omitempty"` // the latest recipients upload, as far as it got

	// FromLocales is the sender per locale when the campaign gave one
	// ({"ja": "株式会社サンプル <n@example.jp>", "en": "Sample Co. <n@example.jp>"}):
	// an English reader sees an English display name. The address is the
	// same in every locale; From is then the ja one.
	FromLocales map[string]string `json:"from_locales,omitempty"`
}

// FromFor is the sender of the campaign's notices in locale.
func (c *Campaign) FromFor(locale string) string {
	if f := c.FromLocales[locale]; f != "" {
		return f
	}
	return c.From
}

// Upload states.
const (
	UploadRunning  = "running"  // still going, or cut off without an answer (see UpdatedAt)
	UploadComplete = "complete" // read to its end
	UploadFailed   = "failed"   // broke off: lines after StoredThroughLine were not stored
	UploadStopped  = "stopped"  // stopped early: (almost) every row was rejected
)

// Upload is how far a campaign's latest recipients upload got, kept with
// the campaign, so that a client that got no answer (a dropped connection,
// a crash) can read which lines are stored and resume after them.
type Upload struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// StoredThroughLine: every line up to and including it was stored, or
	// rejected (and the rejection recorded); none after it was. CSV: the
	// file's line (header = 1); JSON: the array element.
	StoredThroughLine int    `json:"stored_through_line"`
	Accepted          int64  `json:"accepted"`
	Rejected          int64  `json:"rejected"`
	Error             string `json:"error,omitempty"`
}

// Counts is the number of a campaign's recipients in each state.
type Counts struct {
	Total      int64 `json:"total"`
	Pending    int64 `json:"pending"`
	Sending    int64 `json:"sending"`
	Retrying   int64 `json:"retrying"`
	Sent       int64 `json:"sent"`
	Failed     int64 `json:"failed"`
	Suppressed int64 `json:"suppressed"`
	Cancelled  int64 `json:"cancelled"`
	Bounced    int64 `json:"bounced"`
	Complained int64 `json:"complained"`
	// PossibleDuplicate counts recipients that may have been sent their
	// notice twice: an attempt whose outcome was never recorded (a crash
	// between DATA and the status write, a failover that lost the write, a
	// frozen worker) was followed by another. Not a status: such a
	// recipient is also counted under its status (sent, mostly).
	PossibleDuplicate int64 `json:"possible_duplicate"`
}

// Get returns the count for status s.
func (c Counts) Get(s Status) int64 {
	switch s {
	case StatusPending:
		return c.Pending
	case StatusSending:
		return c.Sending
	case StatusRetrying:
		return c.Retrying
	case StatusSent:
		return c.Sent
	case StatusFailed:
		return c.Failed
	case StatusSuppressed:
		return c.Suppressed
	case StatusCancelled:
		return c.Cancelled
	case StatusBounced:
		return c.Bounced
	case StatusComplained:
		return c.Complained
	}
	return 0
}

// Set sets the count for status s.
func (c *Counts) Set(s Status, n int64) {
	switch s {
	case StatusPending:
		c.Pending = n
	case StatusSending:
		c.Sending = n
	case StatusRetrying:
		c.Retrying = n
	case StatusSent:
		c.Sent = n
	case StatusFailed:
		c.Failed = n
	case StatusSuppressed:
		c.Suppressed = n
	case StatusCancelled:
		c.Cancelled = n
	case StatusBounced:
		c.Bounced = n
	case StatusComplained:
		c.Complained = n
	}
}

// Done is the number of recipients in a final state: sent (bounced and
// complained ones were sent too), failed, suppressed or cancelled.
func (c Counts) Done() int64 {
	return c.Sent + c.Failed + c.Suppressed + c.Cancelled + c.Bounced + c.Complained
}

// Open is the number of recipients not yet in a final state.
func (c Counts) Open() int64 { return c.Pending + c.Sending + c.Retrying }

// Recipient is one addressee of a campaign: who they are (from the upload)
// and where their notice stands.
type Recipient struct {
	ID         int64             `json:"id"`
	CampaignID string            `json:"campaign_id"`
	Email      string            `json:"email"`
	Name       string            `json:"name,omitempty"`
	Locale     string            `json:"locale,omitempty"`
	CustomerID string            `json:"customer_id,omitempty"`
	CardBrand  string            `json:"card_brand,omitempty"`
	CardLast4  string            `json:"card_last4,omitempty"`
	Extra      map[string]string `json:"extra,omitempty"`

	Delivery
	// Returned is what came back to the notice's return path after the
	// relay took it (DSNs, complaints, auto-replies), oldest first.
	Returned []Returned `json:"returned,omitempty"`
}

// Returned is one message that came back for a recipient's notice: a DSN
// (bounced, delayed, delivered), a complaint or an auto-reply.
type Returned struct {
	At           time.Time `json:"at"`
	Kind         string    `json:"kind"`                 // bounced, delayed, delivered, complained, auto-reply
	Delivery     int       `json:"delivery"`             // 0: the campaign's own; n: resend n
	Action       string    `json:"action,omitempty"`     // DSN Action
	Status       string    `json:"status,omitempty"`     // DSN Status (RFC 3463)
	Diagnostic   string    `json:"diagnostic,omitempty"` // DSN Diagnostic-Code, addresses masked
	ReportingMTA string    `json:"reporting_mta,omitempty"`
	FeedbackType string    `json:"feedback_type,omitempty"` // ARF Feedback-Type
}

// Delivery is where a recipient's notice stands.
type Delivery struct {
	Status     Status     `json:"status"`
	Attempts   int        `json:"attempts"`
	LastError  string     `json:"last_error,omitempty"`
	LastCode   int        `json:"last_code,omitempty"`     // last SMTP reply code, 0 if none
	Enhanced   string     `json:"last_enhanced,omitempty"` // last enhanced status code (RFC 3463), e.g. 5.1.1
	MessageID  string     `json:"message_id,omitempty"`
	SentAt     *time.Time `json:"sent_at,omitempty"`
	FirstTryAt *time.Time `json:"first_attempt_at,omitempty"`
	History    []Attempt  `json:"history,omitempty"`
	Resends    []Resend   `json:"resends,omitempty"`
	// PossibleDuplicate is set when the notice may have gone out twice
	// (see Counts.PossibleDuplicate): why, and the start of each attempt
	// involved, the one whose outcome was lost first.
	PossibleDuplicate *Doubt `json:"possible_duplicate,omitempty"`
}

// Doubt is the evidence that a recipient may have received its notice more
// than once.
type Doubt struct {
	// Reason: "takeover" (a claim was taken over from an attempt whose
	// outcome was never recorded) or "sent_twice" (two attempts were both
	// recorded as accepted by the relay).
	Reason   string      `json:"reason"`
	Attempts []time.Time `json:"attempts"` // the attempts' start times, oldest first
}

// Attempt is one SMTP delivery attempt.
type Attempt struct {
	At       time.Time `json:"at"`
	To       string    `json:"to,omitempty"` // set when it differs from the recipient's address (a corrected resend)
	OK       bool      `json:"ok"`
	Code     int       `json:"code,omitempty"`
	Enhanced string    `json:"enhanced,omitempty"`
	Text     string    `json:"text,omitempty"`
	Resend   int       `json:"resend,omitempty"` // 1-based index into Resends, 0 for the campaign's own delivery
	// Unknown marks an attempt whose outcome was never recorded (its
	// worker died, or Redis lost the write): it may have reached the relay.
	Unknown bool `json:"outcome_unknown,omitempty"`
}

// Resend is a support-initiated re-delivery of a recipient's notice.
type Resend struct {
	N         int        `json:"n"`
	At        time.Time  `json:"at"`
	Actor     string     `json:"actor"`
	Reason    string     `json:"reason"`
	Email     string     `json:"email"`
	Locale    string     `json:"locale,omitempty"` // the language asked for; "" = the notice's own
	Status    Status     `json:"status"`
	MessageID string     `json:"message_id,omitempty"`
	SentAt    *time.Time `json:"sent_at,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	History   []Attempt  `json:"history,omitempty"`
}

// EffectiveLocale is the recipient's locale, or def when none was given.
func (r *Recipient) EffectiveLocale(def string) string {
	if r.Locale != "" {
		return r.Locale
	}
	return def
}

// MaskEmail hides an address for logs: "taro@example.com" → "t***@example.com".
func MaskEmail(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return "***"
	}
	return addr[:1] + "***" + addr[at:]
}

var addrRE = regexp.MustCompile(`[^\s<>"'(),;:\[\]]+@[A-Za-z0-9.-]+`)

// MaskAddresses masks every address inside a text — an SMTP reply quotes the
// recipient ("550 5.1.1 <taro@example.jp>: User unknown") — for logs and for
// the task errors asynq stores and asynqmon shows.
func MaskAddresses(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return addrRE.ReplaceAllStringFunc(s, MaskEmail)
}

// Rates (messages per second) a campaign's "rate" and SMTP_RATE may take,
// besides 0 for "no limit of its own". The shared limiter keeps messages
// 1/rate apart: the slowest, 0.001, is one message every 1,000 s (16 min 40 s)
// and the fastest one every microsecond. A rate outside these the limiter
// cannot honour (below, its period would not fit; above, its arithmetic).
const (
	MinRate = 0.001
	MaxRate = 1_000_000
)

// EffectiveRate is the rate a campaign is sent at: its own rate when it
// has one below the global SMTP_RATE, else SMTP_RATE (0: no limit).
func EffectiveRate(campaign, global float64) float64 {
	if campaign > 0 && (global == 0 || campaign < global) {
		return campaign
	}
	return global
}

// CheckRate says what is wrong with a rate, or returns nil.
func CheckRate(r float64) error {
	if r == 0 || (r >= MinRate && r <= MaxRate) {
		return nil
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	return fmt.Errorf("must be 0 (no limit of its own) or between %s and %s messages per second; the smallest allowed is %s (one message every %s s), got %s",
		f(MinRate), f(MaxRate), f(MinRate), f(1/MinRate), f(r))
}

// DefaultTimeZone is the zone notices are dated in unless a campaign says
// otherwise: the companies oshirase is for are in Japan, and a notice sent
// at 08:00 JST must not carry yesterday's (UTC) date.
const DefaultTimeZone = "Asia/Tokyo"

var zones sync.Map // name → *time.Location

// Zone is the campaign's time zone (DefaultTimeZone when unset).
func (c *Campaign) Zone() *time.Location { return Zone(c.TimeZone) }

// Zone loads a time zone by IANA name, "" meaning DefaultTimeZone. A name
// that does not load (validated away at creation) falls back to UTC.
func Zone(name string) *time.Location {
	if name == "" {
		name = DefaultTimeZone
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		l = time.UTC
	}
	zones.Store(name, l)
	return l
}

// Kinds of one-recipient campaigns: POST /v1/notifications and test sends.
const (
	KindNotification = "notification"
	KindTest         = "test"
)

// MetricLabel is how the campaign shows in metrics: its id for a mass
// campaign; its kind for one-recipient campaigns, which are made by the
// thousand and would each add series that never go away.
func (c *Campaign) MetricLabel() string {
	if c.Kind != "" {
		return c.Kind
	}
	return c.ID
}
