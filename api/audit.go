package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
)

// auditCtx records a state change made on behalf of the key in ctx; it is
// audit for code paths (Resend, Notify) that the support console shares
// with the API and that have no request at hand.
func (s *Server) auditCtx(ctx context.Context, e store.AuditEntry) {
	if k := auth.Actor(ctx); k != nil {
		e.Actor = k.Name
	}
	// The log is append-only and outlives a purge: a card number typed into
	// a reason could never be taken out. Handlers refuse such reasons; this
	// is the net under the ones that cannot (pause, resume, cancel).
	if ingest.LooksLikeCardNumber(e.Reason) {
		e.Reason = cardRemoved
	}
	if err := s.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit log write failed", "action", e.Action, "err", err)
	}
}

// auditFirst records an action before it is carried out, for those that
// must not happen unaudited (an upload of personal data): its error means
// "do not go ahead".
func (s *Server) auditFirst(ctx context.Context, e store.AuditEntry) error {
	if k := auth.Actor(ctx); k != nil {
		e.Actor = k.Name
	}
	if err := s.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// auditLog answers GET /v1/audit?campaign=&actor=&limit=&cursor=, newest
// first; next_cursor pages on (an entry id: older entries come after it).
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := pageLimit(w, q, 100, 1000)
	if !ok {
		return
	}
	before := q.Get("cursor")
	if before != "" && !validStreamID(before) {
		badCursor(w, before)
		return
	}
	entries, next, err := s.store.AuditLog(r.Context(), store.AuditQuery{
		CampaignID: q.Get("campaign"), Actor: q.Get("actor"), Before: before, Limit: limit,
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "next_cursor": nextCursor(next)})
}

// validStreamID accepts "ms" or "ms-seq", the forms of a Redis stream id.
func validStreamID(s string) bool {
	a, b, ok := strings.Cut(s, "-")
	if _, err := strconv.ParseUint(a, 10, 64); err != nil {
		return false
	}
	if ok {
		if _, err := strconv.ParseUint(b, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// cardRemoved stands in an audit entry for a reason that looked like it
// held a full card number.
const cardRemoved = "(removed: it looked like a full card number)"

// cardInText is the answer to free text (a reason, a name) holding what
// looks like a full card number, or nil. A refusal is noted (noteCards).
func (s *Server) cardInText(ctx context.Context, field, v string) []fieldError {
	if ingest.LooksLikeCardNumber(v) {
		fe := []fieldError{{field, "looks like a full card number; write at most the last 4 digits"}}
		s.noteCards(ctx, fe)
		return fe
	}
	return nil
}

// noteCards makes the card numbers refused among errs visible to an
// operator: a metric, and a log line naming the fields and the key, never
// the number. (A refusal's message always says "full card number".)
func (s *Server) noteCards(ctx context.Context, errs []fieldError) {
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
	actor := ""
	if k := auth.Actor(ctx); k != nil {
		actor = k.Name
	}
	s.log.Warn("refused what looked like a full card number", "fields", fields, "key", actor)
}
