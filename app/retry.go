package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// RetryRequest is the body of POST /v1/campaigns/{id}/retry: which failed
// recipients to send again, by their last SMTP reply. Every field given
// must match (codes: any of them; enhanced: any of them, "5.7" matching
// 5.7.x); an empty body selects every failed recipient.
type RetryRequest struct {
	Codes    []int    `json:"codes,omitempty"`    // last reply code, e.g. 554
	Enhanced []string `json:"enhanced,omitempty"` // last enhanced code or its prefix, e.g. "5.7.1", "5.7"
	Class    string   `json:"class,omitempty"`    // "4" or "5": the first digit of the last reply code
	Reason   string   `json:"reason,omitempty"`
}

// RetryResult is what a retry did, and the campaign after it.
type RetryResult struct {
	Campaign          *notice.Campaign `json:"campaign"`
	Matched           int64            `json:"matched"`
	Queued            int64            `json:"queued"`
	SkippedSuppressed int64            `json:"skipped_suppressed"`
}

func (q *RetryRequest) validate() []FieldError {
	var errs []FieldError
	for i, c := range q.Codes {
		if c < 400 || c > 599 {
			errs = append(errs, FieldError{fmt.Sprintf("codes[%d]", i), fmt.Sprintf("%d is not an SMTP failure code (400-599)", c)})
		}
	}
	for i, e := range q.Enhanced {
		if !enhancedSelector(e) {
			errs = append(errs, FieldError{fmt.Sprintf("enhanced[%d]", i), fmt.Sprintf("%q is not an enhanced status code or its class.subject (like 5.7.1 or 5.7)", e)})
		}
	}
	if q.Class != "" && q.Class != "4" && q.Class != "5" {
		errs = append(errs, FieldError{"class", fmt.Sprintf("%q: want 4 or 5", q.Class)})
	}
	if ingest.LooksLikeCardNumber(q.Reason) {
		errs = append(errs, FieldError{"reason", "looks like a full card number; write at most the last 4 digits"})
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

func (q *RetryRequest) matches(r *notice.Recipient) bool {
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

// Retry sends failed recipients of campaign id again: each is a new
// attempt of the same delivery (same Message-ID), through a retry task of
// its own. A done campaign goes back to sending until they finish; in a
// paused one they go out when it is resumed. An address on the suppression
// list is never sent to: it stays failed and is counted as skipped.
// Audited with the selector and the counts.
func (a *App) Retry(ctx context.Context, id string, q RetryRequest) (*RetryResult, error) {
	if errs := q.validate(); len(errs) > 0 {
		a.NoteCards(ctx, errs)
		return nil, E(Invalid, "invalid", "the selector has invalid fields", errs...)
	}
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case c.PurgedAt != nil:
		return nil, E(Conflict, "conflict", "campaign "+id+" was purged: its recipients' addresses are gone")
	case c.Status != notice.CampaignSending && c.Status != notice.CampaignPaused && c.Status != notice.CampaignDone:
		return nil, E(Conflict, "conflict", fmt.Sprintf("campaign %s is %s; only a sending, paused or done campaign retries", id, c.Status))
	}
	// Past this point a client that goes away must not leave recipients
	// moved to retrying without their tasks.
	bg := context.WithoutCancel(ctx)
	res := &RetryResult{}
	var failure error
	for cursor := int64(1); ; {
		page, err := a.store.Recipients(bg, id, notice.StatusFailed, cursor, 1000)
		if err != nil {
			failure = err
			break
		}
		n, err := a.retryPage(bg, c, &q, page.Recipients)
		res.Matched += int64(len(page.Recipients)) - n.unmatched
		res.SkippedSuppressed += n.skipped
		res.Queued += n.queued
		if err != nil {
			failure = err
			break
		}
		if page.Next == 0 {
			break
		}
		cursor = page.Next
	}
	if res.Queued > 0 || failure == nil {
		sel := q
		sel.Reason = ""
		details, _ := json.Marshal(map[string]any{"selector": sel, "matched": res.Matched, "queued": res.Queued,
			"skipped_suppressed": res.SkippedSuppressed, "complete": failure == nil})
		a.Audit(ctx, store.AuditEntry{Action: "campaign.retry", CampaignID: id, Reason: q.Reason, Details: details})
	}
	if failure != nil {
		return nil, failure
	}
	if res.Campaign, err = a.store.Campaign(ctx, id); err != nil {
		return nil, err
	}
	return res, nil
}

// pageCounts is what retryPage did with one page of failed recipients.
type pageCounts struct{ unmatched, skipped, queued int64 }

// retryPage retries the recipients of one page of failed ones that q
// selects and that are not suppressed. It returns how many q did not
// select, how many it skipped as suppressed and how many it queued.
func (a *App) retryPage(ctx context.Context, c *notice.Campaign, q *RetryRequest, rs []notice.Recipient) (pageCounts, error) {
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
	sup, err := a.store.Suppressed(ctx, addrs)
	if err != nil {
		return n, err
	}
	var ids []int64
	attempts := map[int64]int{}
	for _, r := range pick {
		if sup[r.Email] != nil {
			n.skipped++
			continue
		}
		ids = append(ids, r.ID)
		attempts[r.ID] = r.Attempts
	}
	moved, err := a.store.RetryFailed(ctx, c.ID, ids)
	if err != nil {
		return n, err
	}
	insp := asynq.NewInspectorFromRedisClient(a.store.Redis())
	stamp := time.Now().UnixMilli()
	for i, rid := range moved {
		tid := fmt.Sprintf("retry:%s:%d:%d:r%d", c.ID, rid, attempts[rid], stamp)
		if err := tasks.Deliver(ctx, a.queue, tasks.DeliverPayload{CampaignID: c.ID, RecipientID: rid, Attempt: attempts[rid]}, tasks.QueueRecipients, tid, 0); err != nil {
			// Those without a task go back to failed, not left retrying
			// with nothing to retry them.
			if _, merr := a.store.Mark(ctx, c.ID, moved[i:], []notice.Status{notice.StatusRetrying}, notice.StatusFailed); merr != nil {
				a.log.Error("retry: put back recipients whose task was not queued", "campaign", c.ID, "err", merr)
			}
			return n, err
		}
		n.queued++
		// The archived report of its failure is history now: an operator
		// must not "Run" it as if it were still failed.
		for _, q := range tasks.FailureReportQueues {
			err := insp.DeleteTask(q, fmt.Sprintf("failed:%s:%d", c.ID, rid))
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				a.log.Warn("retry: remove an archived failure report", "campaign", c.ID, "recipient", rid, "err", err)
			}
		}
	}
	return n, nil
}
