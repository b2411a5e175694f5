package notice

// transitions is the recipient state machine: for each status, the
// statuses a recipient in it may move to. It is the one definition: the
// store generates the Lua its scripts check every status write against from
// it (store/status.go), and docs/design.md draws it. A new status or a new
// move is added here (and, for a new status, in Statuses and Counts).
//
// Why each move exists:
//   - pending, sending, retrying are open: a worker claims (→ sending),
//     records an outcome (→ sent, failed, retrying), hands a claim back
//     (→ pending, retrying: a shutdown, a pause, a relay refusal held), the
//     campaign is cancelled (→ cancelled) or the address is suppressed.
//   - sent → bounced, complained: what came back to the return path later.
//   - bounced → complained: a complaint is worse news and may follow a bounce.
//   - failed → pending: a refusal of the relay (not of the mailbox) recorded
//     just before the campaign was paused for the relay is held again;
//     failed → retrying: support asks for failed recipients to be retried.
//   - cancelled → sent: a message in flight when the campaign was cancelled
//     reached the relay; "sent" is a fact about the world.
var transitions = map[Status][]Status{
	StatusPending:    {StatusSending, StatusRetrying, StatusSent, StatusFailed, StatusSuppressed, StatusCancelled},
	StatusSending:    {StatusPending, StatusRetrying, StatusSent, StatusFailed, StatusSuppressed, StatusCancelled},
	StatusRetrying:   {StatusPending, StatusSending, StatusSent, StatusFailed, StatusSuppressed, StatusCancelled},
	StatusSent:       {StatusBounced, StatusComplained},
	StatusFailed:     {StatusPending, StatusRetrying},
	StatusSuppressed: nil,
	StatusCancelled:  {StatusSent},
	StatusBounced:    {StatusComplained},
	StatusComplained: nil,
}

// CanBecome reports whether a recipient in status s may move to t. Staying
// in the same status is always allowed (it changes nothing).
func (s Status) CanBecome(t Status) bool {
	if s == t {
		_, known := transitions[s]
		return known
	}
	for _, n := range transitions[s] {
		if n == t {
			return true
		}
	}
	return false
}

// Next lists the statuses a recipient in status s may move to.
func (s Status) Next() []Status { return append([]Status(nil), transitions[s]...) }
