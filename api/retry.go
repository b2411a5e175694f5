package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// retryRequest is the body of POST /v1/campaigns/{id}/retry: which failed
// recipients to send again, by their last SMTP reply. Every field given
// must match (codes: any of them; enhanced: any of them, "5.7" matching
// 5.7.x); an empty body selects every failed recipient.
type retryRequest struct {
	Codes    []int    `json:"codes,omitempty"`    // last reply code, e.g. 554
	Enhanced []string `json:"enhanced,omitempty"` // last enhanced code or its prefix, e.g. "5.7.1", "5.7"
	Class    string   `json:"class,omitempty"`    // "4" or "5": the first digit of the last reply code
	Reason   string   `json:"reason,omitempty"`
}

func (q *retryRequest) validate() []fieldError {
	var errs []fieldError
	for i, c := range q.Codes {
		if c < 400 || c > 599 {
			errs = append(errs, fieldError{Field: fmt.Sprintf("codes[%d]", i), Error: fmt.Sprintf("%d is not an SMTP failure code (400-599)", c)})
		}
	}
	for i, e := range q.Enhanced {
		if !enhancedSelector(e) {
			errs = append(errs, fieldError{Field: fmt.Sprintf("enhanced[%d]", i), Error: fmt.Sprintf("%q is not an enhanced status code or its class.subject (like 5.7.1 or 5.7)", e)})
		}
	}
	if q.Class != "" && q.Class != "4" && q.Class != "5" {
		errs = append(errs, fieldError{Field: "class", Error: fmt.Sprintf("%q: want 4 or 5", q.Class)})
	}
	if ingest.LooksLikeCardNumber(q.Reason) {
		errs = append(errs, fieldError{Field: "reason", Error: "looks like a full card number; write at most the last 4 digits"})
	}
	return errs
}

// enhancedSelector accepts "4.x.y"/"5.x.y" (RFC 3463) or its "5.x" prefix.
func enhancedSelector(s string) bool {
	p := strings.Split(s, ".")
	if len(p) < 2 || len(p) > 3 || (p[0] != "4" && p[0] != "5") {
		return false
	}
	for _, x := range p[1:] {
		if n, err := strconv.Atoi(x); err != nil || n < 0 || n > 999 || len(x) > 3 {
			return false
		}
	}
	return true
}

func (q *retryRequest) matches(r *notice.Recipient) bool {
	if len(q.Codes) > 0 && !slices.Contains(q.Codes, r.LastCode) {
		return false
	}
	if len(q.Enhanced) > 0 && !slices.ContainsFunc(q.Enhanced, func(e string) bool {
		return r.Enhanced == e || strings.HasPrefix(r.Enhanced, e+".")
	}) {
		return false
	}
	if q.Class != "" && (r.LastCode < 400 || strconv.Itoa(r.LastCode)[:1] != q.Class) {
		return false
	}
	return true
}

// retryCampaign sends failed recipients again: each is a new attempt of the
// same delivery (same Message-ID), through a retry task of its own. A done
// campaign goes back to sending until they finish; in a paused one they go
// out when it is resumed. An address on the suppression list is never sent
// to: it stays failed and is counted as skipped. Audited with the selector
// and the counts.
func (s *Server) retryCampaign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var q retryRequest
	if !decodeOptionalJSON(w, r, &q) {
		return
	}
	if errs := q.validate(); len(errs) > 0 {
		s.app.NoteCards(r.Context(), errs)
		writeError(w, http.StatusUnprocessableEntity, "invalid", "the selector has invalid fields", errs)
		return
	}
	ctx := r.Context()
	c, err := s.store.Campaign(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case c.PurgedAt != nil:
		writeError(w, http.StatusConflict, "conflict", "campaign "+id+" was purged: its recipients' addresses are gone", nil)
		return
	case c.Status != notice.CampaignSending && c.Status != notice.CampaignPaused && c.Status != notice.CampaignDone:
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("campaign %s is %s; only a sending, paused or done campaign retries", id, c.Status), nil)
		return
	}
	// Past this point a client that goes away must not leave recipients
	// moved to retrying without their tasks.
	bg := context.WithoutCancel(ctx)
	var matched, skipped, queued int64
	var failure error
	for cursor := int64(1); ; {
		page, err := s.store.Recipients(bg, id, notice.StatusFailed, cursor, 1000)
		if err != nil {
			failure = err
			break
		}
		n, k, err := s.retryPage(bg, c, &q, page.Recipients)
		matched += int64(len(page.Recipients)) - n.unmatched
		skipped += k
		queued += n.queued
		if err != nil {
			failure = err
			break
		}
		if page.Next == 0 {
			break
		}
		cursor = page.Next
	}
	if queued > 0 || failure == nil {
		sel := q
		sel.Reason = ""
		details, _ := json.Marshal(map[string]any{"selector": sel, "matched": matched, "queued": queued, "skipped_suppressed": skipped, "complete": failure == nil})
		s.app.Audit(r.Context(), store.AuditEntry{Action: "campaign.retry", CampaignID: id, Reason: q.Reason, Details: details})
	}
	if failure != nil {
		s.fail(w, r, failure)
		return
	}
	c, err = s.store.Campaign(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"matched": matched, "queued": queued, "skipped_suppressed": skipped, "campaign": c})
}

type pageCounts struct{ unmatched, queued int64 }

// retryPage retries the recipients of one page of failed ones that q
// selects and that are not suppressed. It returns what it queued and how
// many it skipped as suppressed.
func (s *Server) retryPage(ctx context.Context, c *notice.Campaign, q *retryRequest, rs []notice.Recipient) (pageCounts, int64, error) {
	var n pageCounts
	var pick []*notice.Recipient
	addrs := make([]string, 0, len(rs))
	for i := range rs {
		if q.matches(&rs[i]) {
			pick = append(pick, &rs[i])
			addrs = append(addrs, rs[i].Email)
		} else {
			n.unmatched++
		}
	}
	sup, err := s.store.Suppressed(ctx, addrs)
	if err != nil {
		return n, 0, err
	}
	var skipped int64
	var ids []int64
	attempts := map[int64]int{}
	for _, r := range pick {
		if sup[r.Email] != nil {
			skipped++
			continue
		}
		ids = append(ids, r.ID)
		attempts[r.ID] = r.Attempts
	}
	moved, err := s.store.RetryFailed(ctx, c.ID, ids)
	if err != nil {
		return n, skipped, err
	}
	insp := asynq.NewInspectorFromRedisClient(s.store.Redis())
	stamp := time.Now().UnixMilli()
	for i, rid := range moved {
		tid := fmt.Sprintf("retry:%s:%d:%d:r%d", c.ID, rid, attempts[rid], stamp)
		if err := tasks.Deliver(ctx, s.queue, tasks.DeliverPayload{CampaignID: c.ID, RecipientID: rid, Attempt: attempts[rid]}, tasks.QueueRecipients, tid, 0); err != nil {
			// Those without a task go back to failed, not left retrying
			// with nothing to retry them.
			if _, merr := s.store.Mark(ctx, c.ID, moved[i:], []notice.Status{notice.StatusRetrying}, notice.StatusFailed); merr != nil {
				s.log.Error("retry: put back recipients whose task was not queued", "campaign", c.ID, "err", merr)
			}
			return n, skipped, err
		}
		n.queued++
		// The archived report of its failure is history now: an operator
		// must not "Run" it as if it were still failed.
		for _, q := range tasks.FailureReportQueues {
			err := insp.DeleteTask(q, fmt.Sprintf("failed:%s:%d", c.ID, rid))
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				s.log.Warn("retry: remove an archived failure report", "campaign", c.ID, "recipient", rid, "err", err)
			}
		}
	}
	return n, skipped, nil
}
