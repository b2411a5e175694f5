package tasks

// Task type names. Payloads carry ids only, never personal data: asynqmon and
// the asynq CLI show payloads to operators.
const (
	TypeStart   = "campaign:start"    // payload StartPayload
	TypeFanout  = "campaign:fanout"   // payload FanoutPayload
	TypeChunk   = "campaign:chunk"    // payload ChunkPayload
	TypeDeliver = "recipient:deliver" // payload DeliverPayload
)

// Queue names. Resends and single notices go through QueueUrgent so that they
// do not wait behind a bulk campaign.
const (
	QueueUrgent = "urgent"
	QueueBulk   = "bulk"
	// QueuePaced holds the rest of a chunk that gave its slot back while it
	// waited for its campaign's rate: its turn has come, so the bulk
	// servers take it before the bulk queue's backlog (it can hold nobody
	// up for long: its rate bounds it).
	QueuePaced = "paced"
	// QueueRecipients holds the tasks of one recipient each: a retry after
	// a temporary refusal, the report of a permanent one (archived with the
	// reply), a recipient recovered from a dead worker. Apart from the bulk
	// queue's chunk tasks, so that each queue's counts in asynqmon are of
	// one kind: failed runs of chunk tasks on bulk, failed recipients here.
	QueueRecipients = "recipients"
)

// FailureReportQueues are where a recipient's archived failure report may
// be: QueueRecipients, or QueueBulk for reports made before it existed.
var FailureReportQueues = []string{QueueRecipients, QueueBulk}

// StartPayload asks a worker to start a campaign scheduled for At (Unix
// milliseconds); a campaign since rescheduled, unscheduled, started or
// cancelled is left alone.
type StartPayload struct {
	CampaignID string `json:"campaign_id"`
	At         int64  `json:"at"`
}

// FanoutPayload asks a worker to split a campaign into chunk tasks.
type FanoutPayload struct {
	CampaignID string `json:"campaign_id"`
	Gen        int64  `json:"gen"` // start/resume generation; tasks of older generations stop early
}

// ChunkPayload asks a worker to deliver recipients [From, To) of a campaign.
type ChunkPayload struct {
	CampaignID string `json:"campaign_id"`
	Gen        int64  `json:"gen"`
	From       int64  `json:"from"`
	To         int64  `json:"to"`
}

// DeliverPayload asks a worker to deliver to one recipient: a retry, a resend
// (Resend > 0) or a single notice.
type DeliverPayload struct {
	CampaignID  string `json:"campaign_id"`
	RecipientID int64  `json:"recipient_id"`
	Resend      int    `json:"resend,omitempty"`
	// Attempt and LastReply are for operators reading a scheduled retry in
	// asynqmon (a task scheduled afresh has no error of its own): the
	// attempt that failed and the server's reply, addresses masked. The
	// handler reads neither: the recipient's record is the truth.
	Attempt   int    `json:"attempt,omitempty"`
	LastReply string `json:"last_reply,omitempty"`
}
