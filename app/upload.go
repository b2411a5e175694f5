package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

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
	// An upload whose rows are almost all invalid is stopped early (Invalid too_many_rejections):
	// at once when its first headerRows data rows are all invalid (a wrong
	// header, a wrong file), and otherwise once junkRows rows were invalid
	// and they are more than half of the rows read. Addresses already in the
	// campaign do not count: a client resuming a broken upload from its
	// start sends them again on purpose.
	headerRows = 100
	junkRows   = 10000
)

// UploadAnswer is what an upload did: the body of the API's answer.
type UploadAnswer struct {
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
	Incomplete        *IncompleteUpload `json:"incomplete,omitempty"`
	// Warnings: what was changed in accepted rows (an address typed in
	// full-width characters, an IDN domain in punycode), first 1000.
	Warnings     []ingest.Warning `json:"warnings,omitempty"`
	WarningCount int              `json:"warning_count,omitempty"`
	Total        int64            `json:"total_recipients"`
	// AlreadyAddressed warns of recipients whom other campaigns have
	// already addressed: a follow-up is meant to, the same notice twice is
	// the mistake oshirase exists to prevent.
	AlreadyAddressed *AlreadyAddressed `json:"already_addressed,omitempty"`

	earlier map[string]int64 // campaign id → accepted recipients it had addressed
	counts  map[[2]string]int64
	cards   int // rows refused for a card number
}

// AlreadyAddressed is how many of an upload's recipients other campaigns had
// addressed, and which campaigns (the ten with most of them).
type AlreadyAddressed struct {
	Recipients int64             `json:"recipients"`
	Campaigns  []EarlierCampaign `json:"campaigns"`
}

type EarlierCampaign struct {
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
func (a *App) describeEarlier(ctx context.Context, ans *UploadAnswer, repeats int64) {
	if repeats == 0 {
		return
	}
	ids := slices.Collect(maps.Keys(ans.earlier))
	slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(ans.earlier[b], ans.earlier[a]), cmp.Compare(a, b)) })
	aa := &AlreadyAddressed{Recipients: repeats, Campaigns: []EarlierCampaign{}}
	for _, id := range ids[:min(len(ids), maxEarlierCampaigns)] {
		c, err := a.store.Campaign(ctx, id)
		if err != nil {
			continue // deleted since
		}
		aa.Campaigns = append(aa.Campaigns, EarlierCampaign{ID: c.ID, Name: c.Name, Template: c.Template, Status: c.Status,
			CreatedAt: c.CreatedAt, Recipients: ans.earlier[id]})
	}
	ans.AlreadyAddressed = aa
}

// IncompleteUpload says how far an upload that broke off got: Line is the
// last line stored (or rejected); resume with the lines after it.
type IncompleteUpload struct {
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

// Uploadable is campaign id if recipients may be uploaded to it (a draft):
// an adapter asks before it reads a byte of the upload.
func (a *App) Uploadable(ctx context.Context, id string) (*notice.Campaign, error) {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Status != notice.CampaignDraft {
		return nil, E(Conflict, "not_draft", fmt.Sprintf("campaign %s is %s; recipients can only be added to a draft", id, c.Status))
	}
	return c, nil
}

// UploadOptions says how an upload's bytes are to be read.
type UploadOptions struct {
	Format ingest.Format
	Gzip   bool // for the audit entry: the adapter has unpacked it already
}

// TooLargeError is what an adapter's reader returns past its size limit
// (the API's MAX_UPLOAD_BYTES, before and after gzip).
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("upload larger than the limit of %d bytes", e.Limit)
}

// Upload streams a CSV or JSON upload from in into draft id in batches:
// memory stays flat whatever the size, and rows accepted before a
// break-off stay accepted. The upload is audited before anything is
// stored, and its progress is kept with the campaign (last_upload) as it
// goes. An upload that does not finish returns its answer so far (with
// Incomplete saying through which line rows are stored) and an *Error
// whose Details is that answer: Unavailable (storing failed), Invalid
// too_many_rejections (junk), TooLarge, Timeout (no data came), Conflict
// not_draft (started meanwhile), BadRequest (the bytes could not be read).
func (a *App) Upload(ctx context.Context, id string, in io.Reader, o UploadOptions) (*UploadAnswer, error) {
	c, err := a.Uploadable(ctx, id)
	if err != nil {
		return nil, err
	}
	// Personal data is not stored unaudited: the entry comes first, and
	// without it nothing is stored. A previous upload's recipients that
	// a failure left out of the look-up index go in first too.
	ans := &UploadAnswer{UploadID: newUploadID(), Rejected: []ingest.Rejection{}, RejectionCounts: []store.RejectionCount{}, Total: c.Counts.Total}
	wctx := context.WithoutCancel(ctx)
	startDetails, _ := json.Marshal(map[string]any{"upload_id": ans.UploadID, "format": o.Format.String(), "gzip": o.Gzip})
	if err := a.auditFirst(wctx, store.AuditEntry{Action: "recipients.upload.start", CampaignID: id, Details: startDetails}); err != nil {
		return nil, &Error{Kind: Unavailable, Code: "unavailable", Err: err,
			Msg: "the upload could not be recorded in the audit log; nothing was stored; try again later"}
	}
	notBegun := func(err error) error {
		return &Error{Kind: Unavailable, Code: "unavailable", Err: err, Msg: "the upload could not begin; nothing was stored; try again later"}
	}
	if err := a.store.RepairIndex(wctx, id); err != nil {
		return nil, notBegun(err)
	}
	if err := a.store.BeginUpload(wctx, id, ans.UploadID); err != nil {
		return nil, notBegun(err)
	}

	var repeats int64
	p, perr := ingest.NewParser(in, o.Format)
	if perr == nil {
		repeats, perr = a.ingest(ctx, c, p, ans)
		a.describeEarlier(wctx, ans, repeats)
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
		a.log.Warn("upload refused rows that looked like they held a full card number", "campaign", id, "rows", ans.cards, "key", actorName(ctx))
	}
	if c2, err := a.store.Campaign(wctx, id); err == nil {
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
	if err := a.store.EndUpload(wctx, id, state, why); err != nil {
		a.log.Error("record the end of an upload", "campaign", id, "upload", ans.UploadID, "err", err)
	}
	details, _ := json.Marshal(map[string]any{"upload_id": ans.UploadID, "accepted": ans.Accepted, "rejected": ans.RejectedCount, "lines": ans.Lines,
		"stored_through_line": ans.StoredThroughLine, "complete": perr == nil, "state": state, "already_addressed": repeats})
	a.Audit(ctx, store.AuditEntry{Action: "recipients.upload", CampaignID: id, Details: details})
	if perr != nil {
		return ans, uploadFailed(perr, ans)
	}
	return ans, nil
}

// uploadFailed is the error of an upload that could not be read or stored
// to its end. What was stored before stays; the answer (its Details) says
// through which line.
func uploadFailed(err error, ans *UploadAnswer) error {
	var ie *ingest.Error
	var se *errStore
	var stopped *errStopped
	var tl *TooLargeError
	var timeout interface{ Timeout() bool }
	ans.Incomplete = &IncompleteUpload{Line: ans.StoredThroughLine, Error: uploadErrorText(err)}
	resume := fmt.Sprintf("; lines through %d are stored, send the ones after it", ans.StoredThroughLine)
	e := &Error{Kind: BadRequest, Code: "bad_upload", Msg: ans.Incomplete.Error, Details: ans, Err: err}
	switch {
	case errors.As(err, &se):
		e.Kind, e.Code, e.Msg = Unavailable, "unavailable", "the server could not store the upload"+resume+" again later"
	case errors.As(err, &stopped):
		e.Kind, e.Code, e.Msg = Invalid, "too_many_rejections", stopped.msg
	case errors.As(err, &tl):
		e.Kind, e.Code = TooLarge, "too_large"
	case errors.Is(err, store.ErrNotDraft):
		e.Kind, e.Code, e.Msg = Conflict, "not_draft", "the campaign was started during the upload; rows after that were not added"
	case errors.Is(err, store.ErrNotFound):
		return err
	case errors.As(err, &timeout) && timeout.Timeout():
		e.Kind, e.Code, e.Msg = Timeout, "upload_stalled", "no data came for too long"+resume
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "unexpected EOF"):
		e.Code, e.Msg = "incomplete_upload", "the upload broke off"+resume
	case errors.As(err, &ie):
		e.Msg = err.Error()
	}
	// Otherwise reading the body failed (a corrupt gzip stream, say): the
	// client's bytes, not our state.
	return e
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
func (a *App) ingest(ctx context.Context, c *notice.Campaign, p *ingest.Parser, ans *UploadAnswer) (int64, error) {
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
			if err := a.storeBatch(wctx, id, b, ans, &repeats); err != nil {
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
func (a *App) storeBatch(ctx context.Context, cid string, b *upBatch, ans *UploadAnswer, repeats *int64) error {
	var stored error // set when the rows are stored but something after failed
	if len(b.rs) > 0 {
		added, err := a.store.AddUploadRows(ctx, cid, b.rs, b.through)
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
	if err := a.store.AddRejections(ctx, cid, full, list); err != nil {
		return &errStore{err}
	}
	if err := a.store.UploadProgress(ctx, cid, b.through, int64(ans.RejectedCount)); err != nil {
		return &errStore{err}
	}
	return nil
}

// uploadErrorText is what the campaign's last_upload says of a failure:
// the uploader's problem in their words, never a server's internals.
func uploadErrorText(err error) string {
	var tl *TooLargeError
	var ie *ingest.Error
	var se *errStore
	var timeout interface{ Timeout() bool }
	switch {
	case errors.As(err, &se):
		return "the server could not store the rest (see its log)"
	case errors.As(err, &tl):
		return tl.Error()
	case errors.Is(err, store.ErrNotDraft):
		return "the campaign was started during the upload"
	case errors.As(err, &timeout) && timeout.Timeout():
		return "the upload stalled: no data came for too long"
	case errors.As(err, &ie):
		return ie.Error()
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "unexpected EOF"):
		return "the upload broke off"
	}
	return "the upload could not be read: " + err.Error()
}
