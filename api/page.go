package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/oshirase/oshirase/app"
)

// Every list that can grow pages the same way: ?limit= (how many, 1 to a
// per-list maximum; default when absent) and ?cursor= (absent for the first
// page, then the answer's next_cursor, which is null on the last page). A
// cursor is opaque to clients. A limit or cursor that is not one of these
// is a 400 naming the parameter, never silently replaced.

// pageLimit reads ?limit=: def when absent, 1..max otherwise. On a bad
// value it answers 400 and returns false.
func pageLimit(w http.ResponseWriter, q url.Values, def, max int) (int, bool) {
	// The paging parameters of earlier versions: a client still sending
	// them would get the first page for ever.
	for _, old := range []string{"offset", "before"} {
		if q.Has(old) {
			msg := old + " is no longer taken: page with cursor (the answer's next_cursor)"
			writeError(w, http.StatusBadRequest, "bad_param", msg, []fieldError{{Field: old, Error: msg}})
			return 0, false
		}
	}
	v := q.Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		msg := fmt.Sprintf("limit must be a whole number from 1 to %d, not %s", max, app.Quote(v))
		writeError(w, http.StatusBadRequest, "bad_limit", msg, []fieldError{{Field: "limit", Error: msg}})
		return 0, false
	}
	return n, true
}

// badCursor answers a cursor this API did not give out.
func badCursor(w http.ResponseWriter, v string) {
	msg := fmt.Sprintf("cursor %s is not one this API gave out; leave it out for the first page, then pass next_cursor", app.Quote(v))
	writeError(w, http.StatusBadRequest, "bad_cursor", msg, []fieldError{{Field: "cursor", Error: msg}})
}

// nextCursor is next_cursor's value: null at the end.
func nextCursor(next string) any {
	if next == "" {
		return nil
	}
	return next
}
