package api

import (
	"cmp"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

const (
	uploadBatch = 500 // recipients per Redis script call
	// keptRejections is how many rejections of an upload are kept in full,
	// in the answer and in Redis (GET …/rejections); every rejection is also
	// counted by field and error. A few KB of gzip can hold millions of
	// junk rows: their rejections must not fill Redis.
	keptRejections = 1000
	// An upload whose rows are almost all invalid is stopped early (422):
	// at once when its first headerRows data rows are all invalid (a wrong
	// header, a wrong file), and otherwise once junkRows rows were invalid
	// and they are more than half of the rows read. Addresses already in the
	// campaign do not count: a client resuming a broken upload from its
	// start sends them again on purpose.
	headerRows = 100
	junkRows   = 10000
)

// uploadAnswer is the body of a recipients upload's answer.
type uploadAnswer struct {
	UploadID        string                 `json:"upload_id"`
	Accepted        int                    `json:"accepted"`
	RejectedCount   int                    `json:"rejected_count"`
	Rejected        []ingest.Rejection     `json:"rejected"`
	RejectionCounts []store.RejectionCount `json:"rejection_counts"`
	RejectionsURL   string                 `json:"rejections_url,omitempty"`
	Charset         string                 `json:"charset,omitempty"`
	Lines           int                    `json:"lines"`
	// StoredThroughLine: every line up to it is stored or rejected (and
	// the rejection recorded), none after it; the campaign's last_upload
	// says the same for a client that got no answer.
	StoredThroughLine int               `json:"stored_through_line"`
	Incomplete        *incompleteUpload `json:"incomplete,omitempty"`
	// Warnings: what was changed in accepted rows (an address typed in
	// full-width characters, an IDN domain in punycode), first 1000.
	Warnings     []ingest.Warning `json:"warnings,omitempty"`
	WarningCount int              `json:"warning_count,omitempty"`
	Total        int64            `json:"total_recipients"`
	// AlreadyAddressed warns of recipients whom other campaigns have
	// already addressed: a follow-up is meant to, the same notice twice is
	// the mistake oshirase exists to prevent.
	AlreadyAddressed *alreadyAddressed `json:"already_addressed,omitempty"`

	earlier map[string]int64 // campaign id → accepted recipients it had addressed
	counts  map[[2]string]int64
	cards   int // rows refused for a card number
}

// alreadyAddressed is how many of an upload's recipients other campaigns had
// addressed, and which campaigns (the ten with most of them).
type alreadyAddressed struct {
	Recipients int64             `json:"recipients"`
	Campaigns  []earlierCampaign `json:"campaigns"`
}

type earlierCampaign struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Template   string                `json:"template"`
	Status     notice.CampaignStatus `json:"status"`
	CreatedAt  time.Time             `json:"created_at"`
	Recipients int64                 `json:"recipients"`
}

// maxEarlierCampaigns bounds the campaigns an upload answer names.
const maxEarlierCampaigns = 10

// describeEarlier fills ans.AlreadyAddressed from ans.earlier.
func (s *Server) describeEarlier(ctx context.Context, ans *uploadAnswer, repeats int64) {
	if repeats == 0 {
		return
	}
	ids := slices.Collect(maps.Keys(ans.earlier))
	slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(ans.earlier[b], ans.earlier[a]), cmp.Compare(a, b)) })
	aa := &alreadyAddressed{Recipients: repeats, Campaigns: []earlierCampaign{}}
	for _, id := range ids[:min(len(ids), maxEarlierCampaigns)] {
		c, err := s.store.Campaign(ctx, id)
		if err != nil {
			continue // deleted since
		}
		aa.Campaigns = append(aa.Campaigns, earlierCampaign{ID: c.ID, Name: c.Name, Template: c.Template, Status: c.Status,
			CreatedAt: c.CreatedAt, Recipients: ans.earlier[id]})
	}
	ans.AlreadyAddressed = aa
}

// incompleteUpload says how far an upload that broke off got: Line is the
// last line stored (or rejected); resume with the lines after it.
type incompleteUpload struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// errStopped is an upload stopped early because its rows are almost all
// invalid; its message says why.
type errStopped struct{ msg string }

func (e *errStopped) Error() string { return e.msg }

// errStore is a failure to store what was read (Redis out of memory or
// away): the server's problem, not the upload's.
type errStore struct{ err error }

func (e *errStore) Error() string { return e.err.Error() }
func (e *errStore) Unwrap() error { return e.err }

// uploadRecipients streams a CSV or JSON upload into the campaign in
// batches: memory stays flat whatever the size, and rows accepted before a
// break-off stay accepted. The upload is audited before anything is
// stored, and its progress is kept with the campaign (last_upload) as it
// goes.
func (s *Server) uploadRecipients(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	c, err := s.store.Campaign(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.Status != notice.CampaignDraft {
		writeError(w, http.StatusConflict, "not_draft", fmt.Sprintf("campaign %s is %s; recipients can only be added to a draft", id, c.Status), nil)
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

	// Personal data is not stored unaudited: the entry comes first, and
	// without it nothing is stored. A previous upload's recipients that
	// a failure left out of the look-up index go in first too.
	ans := &uploadAnswer{UploadID: newUploadID(), Rejected: []ingest.Rejection{}, RejectionCounts: []store.RejectionCount{}, Total: c.Counts.Total}
	wctx := context.WithoutCancel(ctx)
	startDetails, _ := json.Marshal(map[string]any{"upload_id": ans.UploadID, "format": format.String(), "gzip": enc != "" && enc != "identity"})
	if err := s.app.AuditFirst(wctx, store.AuditEntry{Action: "recipients.upload.start", CampaignID: id, Details: startDetails}); err != nil {
		s.unavailable(w, r, "the upload could not be recorded in the audit log; nothing was stored; try again later", err, nil)
		return
	}
	if err := s.store.RepairIndex(wctx, id); err != nil {
		s.unavailable(w, r, "the upload could not begin; nothing was stored; try again later", err, nil)
		return
	}
	if err := s.store.BeginUpload(wctx, id, ans.UploadID); err != nil {
		s.unavailable(w, r, "the upload could not begin; nothing was stored; try again later", err, nil)
		return
	}

	var repeats int64
	p, perr := ingest.NewParser(in, format)
	if perr == nil {
		repeats, perr = s.ingest(ctx, c, p, ans)
		s.describeEarlier(wctx, ans, repeats)
		ans.Lines = p.Line()
		ans.Charset = p.Charset()
	}
	if ans.RejectedCount > 0 {
		ans.RejectionsURL = "/v1/campaigns/" + id + "/rejections"
	}
	for k, n := range ans.counts {
		ans.RejectionCounts = append(ans.RejectionCounts, store.RejectionCount{Field: k[0], Error: k[1], Count: n})
	}
	store.SortRejectionCounts(ans.RejectionCounts)
	metrics.Ingested.WithLabelValues("accepted").Add(float64(ans.Accepted))
	metrics.Ingested.WithLabelValues("rejected").Add(float64(ans.RejectedCount))
	if ans.cards > 0 {
		// One line per upload, not per row: where and how many, never
		// the numbers (the rejections list says which lines).
		metrics.CardRefused.WithLabelValues("upload").Add(float64(ans.cards))
		actor := ""
		if k := auth.Actor(ctx); k != nil {
			actor = k.Name
		}
		s.log.Warn("upload refused rows that looked like they held a full card number", "campaign", id, "rows", ans.cards, "key", actor)
	}
	if c2, err := s.store.Campaign(wctx, id); err == nil {
		ans.Total = c2.Counts.Total
	}
	state, why := notice.UploadComplete, ""
	var stopped *errStopped
	switch {
	case errors.As(perr, &stopped):
		state, why = notice.UploadStopped, stopped.msg
	case perr != nil:
		state, why = notice.UploadFailed, uploadErrorText(perr)
	}
	if err := s.store.EndUpload(wctx, id, state, why); err != nil {
		s.log.Error("record the end of an upload", "campaign", id, "upload", ans.UploadID, "err", err)
	}
	details, _ := json.Marshal(map[string]any{"upload_id": ans.UploadID, "accepted": ans.Accepted, "rejected": ans.RejectedCount, "lines": ans.Lines,
		"stored_through_line": ans.StoredThroughLine, "complete": perr == nil, "state": state, "already_addressed": repeats})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "recipients.upload", CampaignID: id, Details: details})
	if perr != nil {
		s.uploadFailed(w, r, perr, ans)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func newUploadID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// upBatch is one batch of an upload on its way to Redis, with the
// rejections the parser found since the previous one.
type upBatch struct {
	rs      []notice.Recipient
	lines   []int
	rej     []ingest.Rejection
	through int // every line up to it is in this batch or an earlier one
}

// ingest reads the upload and stores it. Parsing and Redis writes overlap:
// the parser fills the next batch while the previous one is written, and at
// most two batches wait in between, so memory stays flat. Writes do not
// follow the request's context: when a client breaks off, what was parsed
// before the break is still stored (and the answer, if anyone still reads
// it, says how far it got). Batches are stored in order, and after each
// one the upload's stored-through line moves on to its last line.
// It returns how many accepted recipients other campaigns had addressed
// (counted per campaign in ans.earlier).
func (s *Server) ingest(ctx context.Context, c *notice.Campaign, p *ingest.Parser, ans *uploadAnswer) (int64, error) {
	id := c.ID
	wctx := context.WithoutCancel(ctx)
	var repeats int64 // written by the writer goroutine, read after done
	batches := make(chan *upBatch, 2)
	var werr error // set by the writer before it closes done
	var failed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range batches {
			if werr != nil {
				continue // drain: the parser stops at its next batch
			}
			if err := s.storeBatch(wctx, id, b, ans, &repeats); err != nil {
				werr = err
				failed.Store(true)
			}
		}
	}()
	newBatch := func() *upBatch {
		return &upBatch{rs: make([]notice.Recipient, 0, uploadBatch), lines: make([]int, 0, uploadBatch)}
	}
	cur := newBatch()
	// The line of the last record read whole (the header's at first): a
	// record the parser broke on is not the batch's.
	last := p.Line()
	send := func() {
		cur.through = last
		batches <- cur
		cur = newBatch()
	}
	var perr error
	var rows, invalid int
	kinds := map[string]int{} // the first rows' rejections, for the stop message
	for !failed.Load() {
		row, rej, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			perr = err
			break
		}
		last = p.Line()
		rows++
		if rej == nil && c.Charset == notice.CharsetISO2022JP {
			if f, msg := templates.RecipientCharsetProblem(&row.Recipient, c.Charset); f != "" {
				rej = &ingest.Rejection{Line: row.Line, Field: f, Error: msg}
			}
		}
		if rej != nil {
			invalid++
			if rej.Card {
				ans.cards++ // read after the parse, like the warnings
			}
			if rows <= headerRows {
				kinds[strings.TrimPrefix(rej.Field+": ", ": ")+rej.Error]++
			}
			cur.rej = append(cur.rej, *rej)
			if len(cur.rej) >= uploadBatch {
				send()
			}
			if stop := junk(rows, invalid, kinds, p); stop != nil {
				perr = stop
				break
			}
			continue
		}
		if len(row.Warnings) > 0 {
			// Only this goroutine writes them; they are read after done.
			ans.WarningCount += len(row.Warnings)
			if room := keptRejections - len(ans.Warnings); room > 0 {
				ans.Warnings = append(ans.Warnings, row.Warnings[:min(room, len(row.Warnings))]...)
			}
		}
		cur.rs = append(cur.rs, row.Recipient)
		cur.lines = append(cur.lines, row.Line)
		if len(cur.rs) == uploadBatch {
			send()
		}
	}
	if len(cur.rs) > 0 || len(cur.rej) > 0 || perr == nil {
		send() // the last batch; without rows it still moves the line on
	}
	close(batches)
	<-done
	slices.SortStableFunc(ans.Rejected, func(a, b ingest.Rejection) int { return a.Line - b.Line })
	if werr != nil {
		return repeats, werr // a store error outranks a parse error after it
	}
	return repeats, perr
}

// junk says whether an upload should stop: its first headerRows rows all
// invalid, or junkRows invalid and more than half of the rows read.
func junk(rows, invalid int, kinds map[string]int, p *ingest.Parser) error {
	if rows == headerRows && invalid == rows {
		most, n := "", 0
		for k, c := range kinds {
			if c > n || (c == n && k < most) {
				most, n = k, c
			}
		}
		msg := fmt.Sprintf("the first %d rows were all rejected (%d of them: %s); is this the right file", headerRows, n, most)
		if cols := p.Columns(); cols != nil {
			msg += fmt.Sprintf(", with the right header? It reads: %s", strings.Join(cols, ","))
		} else {
			msg += "?"
		}
		return &errStopped{msg}
	}
	if invalid >= junkRows && invalid*2 > rows {
		return &errStopped{fmt.Sprintf("stopped after %d rejected rows, more than half of the %d read; fix the file and upload the rest", invalid, rows)}
	}
	return nil
}

// storeBatch stores one batch's recipients, then its rejections (the
// upload's first keptRejections in full, all of them counted), then moves
// the upload's stored-through line on. The answer counts only what was
// stored.
func (s *Server) storeBatch(ctx context.Context, cid string, b *upBatch, ans *uploadAnswer, repeats *int64) error {
	var stored error // set when the rows are stored but something after failed
	if len(b.rs) > 0 {
		added, err := s.store.AddUploadRows(ctx, cid, b.rs, b.through)
		if added == nil {
			if errors.Is(err, store.ErrNotDraft) || errors.Is(err, store.ErrNotFound) {
				return err
			}
			return &errStore{err}
		}
		// Stored, even when indexing them failed after (see
		// store.RepairIndex): the answer must agree with the campaign's
		// total and its last_upload.
		*repeats += added.Repeats
		for c, n := range added.Earlier {
			if ans.earlier == nil {
				ans.earlier = map[string]int64{}
			}
			ans.earlier[c] += n
		}
		for i, rid := range added.IDs {
			if rid == 0 {
				b.rej = append(b.rej, ingest.Rejection{Line: b.lines[i], Field: "email", Error: "address already in this campaign"})
			} else {
				ans.Accepted++
			}
		}
		if err != nil {
			stored = &errStore{err}
		}
	}
	// Every row of the batch is now stored or rejected: the answer says so
	// whatever happens to the record of the rejections below.
	ans.StoredThroughLine = b.through
	// Duplicates found by the store join the parser's rejections of the
	// batch: keep the stored list in line order.
	slices.SortStableFunc(b.rej, func(a, b ingest.Rejection) int { return a.Line - b.Line })
	var full []string
	counts := map[[2]string]int64{}
	for _, rej := range b.rej {
		if len(ans.Rejected)+len(full) < keptRejections {
			j, _ := json.Marshal(rej)
			full = append(full, string(j))
		}
		counts[[2]string{rej.Field, rej.Error}]++
	}
	ans.Rejected = append(ans.Rejected, b.rej[:len(full)]...)
	ans.RejectedCount += len(b.rej)
	if ans.counts == nil {
		ans.counts = map[[2]string]int64{}
	}
	list := make([]store.RejectionCount, 0, len(counts))
	for k, n := range counts {
		ans.counts[k] += n
		list = append(list, store.RejectionCount{Field: k[0], Error: k[1], Count: n})
	}
	if stored != nil {
		return stored
	}
	if err := s.store.AddRejections(ctx, cid, full, list); err != nil {
		return &errStore{err}
	}
	if err := s.store.UploadProgress(ctx, cid, b.through, int64(ans.RejectedCount)); err != nil {
		return &errStore{err}
	}
	return nil
}

// uploadErrorText is what the campaign's last_upload says of a failure:
// the uploader's problem in their words, never a server's internals.
func uploadErrorText(err error) string {
	var mbe *http.MaxBytesError
	var ie *ingest.Error
	var se *errStore
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return "the server could not store the rest (see its log)"
	case errors.As(err, &mbe):
		return fmt.Sprintf("upload larger than the limit of %d bytes", mbe.Limit)
	case errors.Is(err, store.ErrNotDraft):
		return "the campaign was started during the upload"
	case errors.As(err, &ne) && ne.Timeout():
		return "the upload stalled: no data came for too long"
	case errors.As(err, &ie):
		return ie.Error()
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "unexpected EOF"):
		return "the upload broke off"
	}
	return "the upload could not be read: " + err.Error()
}

// uploadFailed answers an upload that could not be read or stored to its
// end. What was stored before stays; the answer says through which line.
func (s *Server) uploadFailed(w http.ResponseWriter, r *http.Request, err error, ans *uploadAnswer) {
	var mbe *http.MaxBytesError
	var ie *ingest.Error
	var se *errStore
	var stopped *errStopped
	var ne net.Error
	ans.Incomplete = &incompleteUpload{Line: ans.StoredThroughLine, Error: uploadErrorText(err)}
	resume := fmt.Sprintf("; lines through %d are stored, send the ones after it", ans.StoredThroughLine)
	switch {
	case errors.As(err, &se):
		s.unavailable(w, r, "the server could not store the upload"+resume+" again later", err, ans)
	case errors.As(err, &stopped):
		writeError(w, http.StatusUnprocessableEntity, "too_many_rejections", stopped.msg, ans)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", ans.Incomplete.Error, ans)
	case errors.Is(err, store.ErrNotDraft):
		writeError(w, http.StatusConflict, "not_draft", "the campaign was started during the upload; rows after that were not added", ans)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
	case errors.As(err, &ne) && ne.Timeout():
		writeError(w, http.StatusRequestTimeout, "upload_stalled", "no data came for too long"+resume, ans)
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "unexpected EOF"):
		writeError(w, http.StatusBadRequest, "incomplete_upload", "the upload broke off"+resume, ans)
	case errors.As(err, &ie):
		writeError(w, http.StatusBadRequest, "bad_upload", err.Error(), ans)
	default:
		// Reading the body failed (a corrupt gzip stream, say): the
		// client's bytes, not our state.
		writeError(w, http.StatusBadRequest, "bad_upload", ans.Incomplete.Error, ans)
	}
}

// unavailable answers a server-side failure (Redis out of memory or away)
// with 503 and a message for the client; the error itself goes to the log.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, msg string, err error, details any) {
	s.log.Error("request failed", "route", r.Pattern, "err", err)
	writeError(w, http.StatusServiceUnavailable, "unavailable", msg, details)
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
