package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
)

// Audit records a state change made on behalf of the actor in ctx. A
// failure to audit is logged loudly but does not undo the change already
// made.
func (a *App) Audit(ctx context.Context, e store.AuditEntry) {
	if n := actorName(ctx); n != "" {
		e.Actor = n
	}
	// The log is append-only and outlives a purge: a card number typed into
	// a reason could never be taken out. Actions refuse such reasons; this
	// is the net under the ones that cannot (pause, resume, cancel).
	if ingest.LooksLikeCardNumber(e.Reason) {
		e.Reason = cardRemoved
	}
	if err := a.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		a.log.Error("audit log write failed", "action", e.Action, "err", err)
	}
}

// auditFirst records an action before it is carried out, for those that
// must not happen unaudited (an upload of personal data): its error means
// "do not go ahead".
func (a *App) auditFirst(ctx context.Context, e store.AuditEntry) error {
	if n := actorName(ctx); n != "" {
		e.Actor = n
	}
	if err := a.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// cardRemoved stands in an audit entry for a reason that looked like it
// held a full card number.
const cardRemoved = "(removed: it looked like a full card number)"

// CardInText is the answer to free text (a reason, a name) holding what
// looks like a full card number, or nil. A refusal is noted (NoteCards).
func (a *App) CardInText(ctx context.Context, field, v string) []FieldError {
	if ingest.LooksLikeCardNumber(v) {
		fe := []FieldError{{field, "looks like a full card number; write at most the last 4 digits"}}
		a.NoteCards(ctx, fe)
		return fe
	}
	return nil
}

// NoteCards makes the card numbers refused among errs visible to an
// operator: a metric, and a log line naming the fields and the key, never
// the number. (A refusal's message always says "full card number".)
func (a *App) NoteCards(ctx context.Context, errs []FieldError) {
	var fields []string
	for _, e := range errs {
		if strings.Contains(e.Error, "full card number") {
			fields = append(fields, e.Field)
		}
	}
	if len(fields) == 0 {
		return
	}
	metrics.CardRefused.WithLabelValues("request").Add(float64(len(fields)))
	a.log.Warn("refused what looked like a full card number", "fields", fields, "key", actorName(ctx))
}
