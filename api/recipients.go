package api

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// uploadRecipients answers POST /v1/campaigns/{id}/recipients: the body
// (CSV or JSON, gzip or not, at most MAX_UPLOAD_BYTES before and after
// unpacking) streamed into app.Upload.
func (s *Server) uploadRecipients(w http.ResponseWriter, r *http.Request) {
	if _, err := s.app.Uploadable(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, r, err) // before a byte of the body is read
		return
	}
	format, err := ingest.FormatFromContentType(r.Header.Get("Content-Type"))
	if err != nil {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", err.Error(), nil)
		return
	}
	body := http.MaxBytesReader(w, flowReader{r.Body, s.flow(w)}, s.cfg.MaxUploadBytes)
	var in io.Reader = body
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_gzip", "Content-Encoding gzip, but the body is not gzip: "+err.Error(), nil)
			return
		}
		defer zr.Close()
		// The limit holds for what the upload unpacks to as well: a few
		// KB of gzip must not become gigabytes of rows (and rejections)
		// in Redis.
		in = http.MaxBytesReader(w, zr, s.cfg.MaxUploadBytes)
	default:
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding must be gzip or none, not "+enc, nil)
		return
	}
	ans, err := s.app.Upload(r.Context(), r.PathValue("id"), sizeLimited{in}, app.UploadOptions{Format: format, Gzip: enc != "" && enc != "identity"})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// sizeLimited reads through a MaxBytesReader and says its refusal in the
// application's words (app.TooLargeError), which the upload records in the
// campaign's last_upload.
type sizeLimited struct{ io.Reader }

func (l sizeLimited) Read(p []byte) (int, error) {
	n, err := l.Reader.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = &app.TooLargeError{Limit: mbe.Limit}
	}
	return n, err
}

func (s *Server) listRejections(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	limit, ok := pageLimit(w, q, 1000, 10000)
	if !ok {
		return
	}
	// The cursor is the position in the list of kept rejections, which
	// only grows at its end.
	var offset int64
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			badCursor(w, v)
			return
		}
		offset = n
	}
	raw, total, err := s.store.Rejections(r.Context(), id, offset, int64(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]json.RawMessage, len(raw))
	for i := range raw {
		out[i] = json.RawMessage(raw[i])
	}
	counts, err := s.store.RejectionCounts(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var all int64
	for _, c := range counts {
		all += c.Count
	}
	// total: rejections kept in full (each upload's first 1,000);
	// rejected_count and counts: every rejection, by field and error.
	ans := map[string]any{"rejected": out, "total": total, "rejected_count": all, "counts": counts, "next_cursor": nil}
	if next := offset + int64(len(raw)); next < total {
		ans["next_cursor"] = strconv.FormatInt(next, 10)
	}
	writeJSON(w, http.StatusOK, ans)
}

// recipientView is a recipient as the API shows it.
type recipientView struct {
	notice.Recipient
}

func (s *Server) listRecipients(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	want, ok := statusParam(w, q)
	if !ok {
		return
	}
	cursor, err := parseCursor(q.Get("cursor"))
	if err != nil {
		badCursor(w, q.Get("cursor"))
		return
	}
	limit, ok := pageLimit(w, q, 100, 1000)
	if !ok {
		return
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.PurgedAt != nil {
		// Only the statuses are left, and no one to show: say so at once
		// instead of paging through empty pages.
		writeJSON(w, http.StatusOK, map[string]any{"recipients": []notice.Recipient{}, "next_cursor": nil, "purged_at": c.PurgedAt})
		return
	}
	page, err := s.store.Recipients(r.Context(), id, want, cursor, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans := map[string]any{"recipients": orEmpty(page.Recipients)}
	if page.Next > 0 {
		ans["next_cursor"] = strconv.FormatInt(page.Next, 10)
	} else {
		ans["next_cursor"] = nil
	}
	writeJSON(w, http.StatusOK, ans)
}

// statusParam reads the ?status= filter ("" for none); on a bad one it
// answers 400 and returns false.
func statusParam(w http.ResponseWriter, q url.Values) (notice.Status, bool) {
	v := q.Get("status")
	if v == "" {
		return "", true
	}
	st, err := notice.ParseStatus(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_status", err.Error(), []fieldError{{Field: "status", Error: err.Error()}})
		return "", false
	}
	return st, true
}

func orEmpty(rs []notice.Recipient) []notice.Recipient {
	if rs == nil {
		return []notice.Recipient{}
	}
	return rs
}

func parseCursor(s string) (int64, error) {
	if s == "" {
		return 1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("cursor %q is not one this API gave out", s)
	}
	return n, nil
}

func (s *Server) getRecipient(w http.ResponseWriter, r *http.Request) {
	rid, ok := recipientID(w, r)
	if !ok {
		return
	}
	rc, err := s.store.Recipient(r.Context(), r.PathValue("id"), rid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rc)
}

// recipientID reads the {rid} path value; on a bad one it answers 400.
func recipientID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	rid, err := strconv.ParseInt(r.PathValue("rid"), 10, 64)
	if err != nil || rid < 1 {
		writeError(w, http.StatusBadRequest, "bad_id", "recipient id must be a positive number", []fieldError{{Field: "rid", Error: "must be a positive number"}})
		return 0, false
	}
	return rid, true
}

// listSuppressions answers GET /v1/suppressions: the list, a page at a
// time (a Redis HSCAN underneath: limit is how many it asks for, and a
// page may hold a few more or fewer), or with ?email= that address's entry.
func (s *Server) listSuppressions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("email"); e != "" {
		sup, err := s.store.Suppression(r.Context(), app.LookupForm(e))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"suppressions": []store.Suppression{*sup}, "next_cursor": nil})
		return
	}
	limit, ok := pageLimit(w, q, 500, 1000)
	if !ok {
		return
	}
	var cursor uint64
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			badCursor(w, v)
			return
		}
		cursor = n
	}
	list, next, err := s.store.Suppressions(r.Context(), cursor, int64(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans := map[string]any{"suppressions": list, "next_cursor": nil}
	if next != 0 {
		ans["next_cursor"] = strconv.FormatUint(next, 10)
	}
	writeJSON(w, http.StatusOK, ans)
}

// getSuppression answers GET /v1/suppressions/{email}: that address's
// entry, or 404 when it is not suppressed.
func (s *Server) getSuppression(w http.ResponseWriter, r *http.Request) {
	sup, err := s.store.Suppression(r.Context(), app.LookupForm(r.PathValue("email")))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sup)
}

// addSuppression answers POST /v1/suppressions (app.Suppress).
func (s *Server) addSuppression(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email  string `json:"email"`
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	sup, err := s.app.Suppress(r.Context(), req.Email, req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/suppressions/"+url.PathEscape(sup.Email))
	writeJSON(w, http.StatusCreated, sup)
}

// deleteSuppression answers DELETE /v1/suppressions/{email}?reason=…
// (app.Unsuppress).
func (s *Server) deleteSuppression(w http.ResponseWriter, r *http.Request) {
	if err := s.app.Unsuppress(r.Context(), r.PathValue("email"), r.URL.Query().Get("reason")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
