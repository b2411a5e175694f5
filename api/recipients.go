package api

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

const (
	uploadBatch     = 500  // recipients per Redis script call
	answerRejection = 1000 // rejections in the upload answer; all are kept
)

// uploadAnswer is the body of a recipients upload's answer.
type uploadAnswer struct {
	Accepted      int                `json:"accepted"`
	RejectedCount int                `json:"rejected_count"`
	Rejected      []ingest.Rejection `json:"rejected"`
	RejectionsURL string             `json:"rejections_url,omitempty"`
	// Warnings: what was changed in accepted rows (an address typed in
	// full-width characters, an IDN domain in punycode), first 1000.
	Warnings     []ingest.Warning  `json:"warnings,omitempty"`
	WarningCount int               `json:"warning_count,omitempty"`
	Charset      string            `json:"charset,omitempty"`
	Lines        int               `json:"lines"`
	Incomplete   *incompleteUpload `json:"incomplete,omitempty"`
	Total        int64             `json:"total_recipients"`
	// AlreadyAddressed warns of recipients whom other campaigns have
	// already addressed: a follow-up is meant to, the same notice twice is
	// the mistake oshirase exists to prevent.
	AlreadyAddressed *alreadyAddressed `json:"already_addressed,omitempty"`

	earlier map[string]int64 // campaign id → accepted recipients it had addressed
	cards   int              // rows refused for a card number
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

// incompleteUpload says how far an upload that broke off got.
type incompleteUpload struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// uploadRecipients streams a CSV or JSON upload into the campaign in
// batches: memory stays flat whatever the size, and rows accepted before a
// break-off stay accepted.
func (s *Server) uploadRecipients(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	c, err := s.store.Campaign(ctx, id)
	if err != nil {
		s.storeError(w, r, err)
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
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	var in io.Reader = body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
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
	p, err := ingest.NewParser(in, format)
	if err != nil {
		s.uploadFailed(w, r, err, &uploadAnswer{Rejected: []ingest.Rejection{}, Total: c.Counts.Total})
		return
	}

	ans := &uploadAnswer{Rejected: []ingest.Rejection{}}
	repeats, perr := s.ingest(ctx, c, p, ans)
	s.describeEarlier(ctx, ans, repeats)
	ans.Lines = p.Line()
	ans.Charset = p.Charset()
	if ans.RejectedCount > 0 {
		ans.RejectionsURL = "/v1/campaigns/" + id + "/rejections"
	}
	metrics.Ingested.WithLabelValues("accepted").Add(float64(ans.Accepted))
	metrics.Ingested.WithLabelValues("rejected").Add(float64(ans.RejectedCount))
	if ans.cards > 0 {
		// One line per upload, not per row: where and how many, never
		// the numbers (the rejections list says which lines).
		metrics.CardRefused.WithLabelValues("upload").Add(float64(ans.cards))
		actor := ""
		if k := Actor(ctx); k != nil {
			actor = k.Name
		}
		s.log.Warn("upload refused rows that looked like they held a full card number", "campaign", id, "rows", ans.cards, "key", actor)
	}
	details, _ := json.Marshal(map[string]any{"accepted": ans.Accepted, "rejected": ans.RejectedCount, "lines": ans.Lines,
		"complete": perr == nil, "already_addressed": repeats})
	s.audit(r, store.AuditEntry{Action: "recipients.upload", CampaignID: id, Details: details})
	if c2, err := s.store.Campaign(ctx, id); err == nil {
		ans.Total = c2.Counts.Total
	}
	if perr != nil {
		s.uploadFailed(w, r, perr, ans)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// upBatch is one batch of an upload on its way to Redis, with the
// rejections the parser found since the previous one.
type upBatch struct {
	rs    []notice.Recipient
	lines []int
	rej   []ingest.Rejection
}

// ingest reads the upload and stores it. Parsing and Redis writes overlap:
// the parser fills the next batch while the previous one is written, and at
// most two batches wait in between, so memory stays flat. Writes do not
// follow the request's context: when a client breaks off, what was parsed
// before the break is still stored (and the answer, if anyone still reads
// it, says how far it got).
// It returns how many accepted recipients other campaigns had addressed
// (counted per campaign in ans.earlier).
func (s *Server) ingest(ctx context.Context, c *notice.Campaign, p *ingest.Parser, ans *uploadAnswer) (int64, error) {
	id := c.ID
	wctx := context.WithoutCancel(ctx)
	var mu sync.Mutex // guards ans.Rejected and ans.RejectedCount
	var repeats int64 // written by the writer goroutine, read after done
	reject := func(rej ingest.Rejection) {
		mu.Lock()
		if rej.Card {
			ans.cards++
		}
		ans.RejectedCount++
		if len(ans.Rejected) < answerRejection {
			ans.Rejected = append(ans.Rejected, rej)
		}
		mu.Unlock()
	}
	batches := make(chan *upBatch, 2)
	var werr error // set by the writer before it closes done
	var failed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var enc []string
		for b := range batches {
			if werr != nil {
				continue // drain: the parser stops at its next batch
			}
			if len(b.rs) > 0 {
				added, err := s.store.AddRecipients(wctx, id, b.rs)
				if err != nil {
					werr = err
					failed.Store(true)
					continue
				}
				repeats += added.Repeats
				for c, n := range added.Earlier {
					if ans.earlier == nil {
						ans.earlier = map[string]int64{}
					}
					ans.earlier[c] += n
				}
				for i, rid := range added.IDs {
					if rid == 0 {
						rej := ingest.Rejection{Line: b.lines[i], Field: "email", Error: "address already in this campaign"}
						reject(rej)
						b.rej = append(b.rej, rej)
					} else {
						mu.Lock()
						ans.Accepted++
						mu.Unlock()
					}
				}
			}
			enc = enc[:0]
			// Duplicates found by the store join the parser's rejections of
			// the batch: keep the stored list in line order.
			slices.SortStableFunc(b.rej, func(a, b ingest.Rejection) int { return a.Line - b.Line })
			for _, rej := range b.rej {
				j, _ := json.Marshal(rej)
				enc = append(enc, string(j))
			}
			if err := s.store.AddRejections(wctx, id, enc); err != nil {
				werr = err
				failed.Store(true)
			}
		}
	}()
	newBatch := func() *upBatch {
		return &upBatch{rs: make([]notice.Recipient, 0, uploadBatch), lines: make([]int, 0, uploadBatch)}
	}
	cur := newBatch()
	var perr error
	for !failed.Load() {
		row, rej, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			perr = err
			break
		}
		if rej == nil && c.Charset == notice.CharsetISO2022JP {
			if f, msg := templates.RecipientCharsetProblem(&row.Recipient, c.Charset); f != "" {
				rej = &ingest.Rejection{Line: row.Line, Field: f, Error: msg}
			}
		}
		if rej != nil {
			reject(*rej)
			cur.rej = append(cur.rej, *rej)
			if len(cur.rej) >= uploadBatch {
				batches <- cur
				cur = newBatch()
			}
			continue
		}
		if len(row.Warnings) > 0 {
			mu.Lock()
			ans.WarningCount += len(row.Warnings)
			if room := answerRejection - len(ans.Warnings); room > 0 {
				ans.Warnings = append(ans.Warnings, row.Warnings[:min(room, len(row.Warnings))]...)
			}
			mu.Unlock()
		}
		cur.rs = append(cur.rs, row.Recipient)
		cur.lines = append(cur.lines, row.Line)
		if len(cur.rs) == uploadBatch {
			batches <- cur
			cur = newBatch()
		}
	}
	if len(cur.rs) > 0 || len(cur.rej) > 0 {
		batches <- cur
	}
	close(batches)
	<-done
	slices.SortStableFunc(ans.Rejected, func(a, b ingest.Rejection) int { return a.Line - b.Line })
	if werr != nil {
		return repeats, werr // a store error outranks a parse error after it
	}
	return repeats, perr
}

// uploadFailed answers an upload that could not be read to its end. What was
// accepted before stays accepted; the answer says how far it got.
func (s *Server) uploadFailed(w http.ResponseWriter, r *http.Request, err error, ans *uploadAnswer) {
	var mbe *http.MaxBytesError
	ans.Incomplete = &incompleteUpload{Line: ans.Lines, Error: err.Error()}
	switch {
	case errors.As(err, &mbe):
		ans.Incomplete.Error = fmt.Sprintf("upload larger than the limit of %d bytes", mbe.Limit)
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", ans.Incomplete.Error, ans)
	case errors.Is(err, store.ErrNotDraft):
		writeError(w, http.StatusConflict, "not_draft", "the campaign was started during the upload; rows after that were not added", ans)
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "unexpected EOF"):
		writeError(w, http.StatusBadRequest, "incomplete_upload", "the upload broke off; rows before it were kept", ans)
	default:
		var ie *ingest.Error
		if errors.As(err, &ie) || !isInternal(err) {
			writeError(w, http.StatusBadRequest, "bad_upload", err.Error(), ans)
			return
		}
		s.storeError(w, r, err)
	}
}

func isInternal(err error) bool {
	return strings.Contains(err.Error(), "redis") || strings.Contains(err.Error(), "connection")
}

func (s *Server) listRejections(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	offset, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	limit, _ := strconv.ParseInt(r.URL.Query().Get("limit"), 10, 64)
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	raw, total, err := s.store.Rejections(r.Context(), id, max(offset, 0), limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]json.RawMessage, len(raw))
	for i := range raw {
		out[i] = json.RawMessage(raw[i])
	}
	ans := map[string]any{"rejected": out, "total": total, "offset": offset}
	if next := offset + int64(len(raw)); next < total {
		ans["next_offset"] = next
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
		writeError(w, http.StatusBadRequest, "bad_cursor", err.Error(), nil)
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
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
		s.storeError(w, r, err)
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
		writeError(w, http.StatusBadRequest, "bad_status", err.Error(), nil)
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
	rid, err := strconv.ParseInt(r.PathValue("rid"), 10, 64)
	if err != nil || rid < 1 {
		writeError(w, http.StatusBadRequest, "bad_id", "recipient id must be a positive number", nil)
		return
	}
	rc, err := s.store.Recipient(r.Context(), r.PathValue("id"), rid)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rc)
}

func (s *Server) listSuppressions(w http.ResponseWriter, r *http.Request) {
	if e := r.URL.Query().Get("email"); e != "" {
		sup, err := s.store.Suppression(r.Context(), lookupForm(e))
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"suppressions": []store.Suppression{*sup}})
		return
	}
	cursor, _ := strconv.ParseUint(r.URL.Query().Get("cursor"), 10, 64)
	list, next, err := s.store.Suppressions(r.Context(), cursor, 500)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	ans := map[string]any{"suppressions": list, "next_cursor": nil}
	if next != 0 {
		ans["next_cursor"] = strconv.FormatUint(next, 10)
	}
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) addSuppression(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email  string `json:"email"`
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	rc := notice.Recipient{Email: req.Email}
	if rej := ingest.Validate(&rc); rej != nil && rej.Field == "email" {
		writeError(w, http.StatusUnprocessableEntity, "invalid_email", rej.Error, []fieldError{{"email", rej.Error}})
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusUnprocessableEntity, "reason_required", "a reason is required", []fieldError{{"reason", "required"}})
		return
	}
	if fe := s.cardInText(r.Context(), "reason", req.Reason); fe != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_reason", "the reason looks like it holds a full card number", fe)
		return
	}
	// Answer with the address as it is kept (and listed, and matched).
	sup := store.Suppression{Email: store.EmailKey(rc.Email), Reason: req.Reason, At: time.Now().UTC()}
	if k := Actor(r.Context()); k != nil {
		sup.Actor = k.Name
	}
	if err := s.store.Suppress(r.Context(), sup); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.audit(r, store.AuditEntry{Action: "suppression.add", Reason: req.Reason, Details: maskedDetails(sup.Email)})
	writeJSON(w, http.StatusCreated, sup)
}

func (s *Server) deleteSuppression(w http.ResponseWriter, r *http.Request) {
	addr := store.EmailKey(lookupForm(r.PathValue("email")))
	// Sending to an address that bounced, or that asked not to be written
	// to, is a decision someone must own: the audit log says why.
	reason := strings.TrimSpace(r.URL.Query().Get("reason"))
	if reason == "" {
		writeError(w, http.StatusUnprocessableEntity, "reason_required", "a reason is required (?reason=…)", []fieldError{{"reason", "required"}})
		return
	}
	if fe := s.cardInText(r.Context(), "reason", reason); fe != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_reason", "the reason looks like it holds a full card number", fe)
		return
	}
	ok, err := s.store.Unsuppress(r.Context(), addr)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "that address is not suppressed", nil)
		return
	}
	s.audit(r, store.AuditEntry{Action: "suppression.remove", Reason: reason, Details: maskedDetails(addr)})
	w.WriteHeader(http.StatusNoContent)
}

// maskedDetails records which address an action touched, masked: the audit
// log is read by more people than the recipient list.
func maskedDetails(addr string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"email": notice.MaskEmail(addr)})
	return b
}
