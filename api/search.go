package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/app"
)

// lookupRecipients answers GET /v1/recipients?email=… (every notice to one
// address) and GET /v1/recipients?q=…&cursor=&limit= (a search).
func (s *Server) lookupRecipients(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	if qv.Has("q") {
		limit, ok := pageLimit(w, qv, app.SearchLimit, app.MaxSearchLimit)
		if !ok {
			return
		}
		cursor := 0
		if v := qv.Get("cursor"); v != "" {
			var err error
			if cursor, err = strconv.Atoi(v); err != nil || cursor < 0 {
				badCursor(w, v)
				return
			}
		}
		res, err := s.app.Search(r.Context(), qv.Get("q"), cursor, limit)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	addr := strings.TrimSpace(qv.Get("email"))
	if addr == "" || !strings.Contains(addr, "@") {
		writeError(w, http.StatusBadRequest, "email_required", "query parameter q (a customer id, name, part of an address or phone number) or email (an address) is required", nil)
		return
	}
	res, err := s.app.Lookup(r.Context(), addr)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
