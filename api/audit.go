package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/store"
)

// auditCtx records a state change made on behalf of the key in ctx; it is
// audit for code paths (Resend, Notify) that the support console shares
// with the API and that have no request at hand.
func (s *Server) auditCtx(ctx context.Context, e store.AuditEntry) {
	if k := Actor(ctx); k != nil {
		e.Actor = k.Name
	}
	if err := s.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit log write failed", "action", e.Action, "err", err)
	}
}

// auditLog answers GET /v1/audit?campaign=&actor=&before=&limit=, newest
// first. next_before pages on.
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "bad_limit", "limit must be 1 to 1000", nil)
			return
		}
		limit = n
	}
	before := q.Get("before")
	if before != "" && !validStreamID(before) {
		writeError(w, http.StatusBadRequest, "bad_cursor", "before must be an entry id (or next_before) from this API", nil)
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
	ans := map[string]any{"entries": entries, "next_before": nil}
	if next != "" {
		ans["next_before"] = next
	}
	writeJSON(w, http.StatusOK, ans)
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
