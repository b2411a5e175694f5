package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/store"
)

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
		s.fail(w, r, err)
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
