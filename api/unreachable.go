package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// unreachableColumns are the columns of the list of recipients not
// reached: who (id, address, the company's customer id, the language the
// notice was in), why in one plain phrase, and the evidence — the last SMTP
// or DSN status code, its diagnostic, when and from which server. No names
// or card digits: the list goes to whoever writes the letters.
var unreachableColumns = []string{
	"recipient_id", "email", "customer_id", "locale", "status", "reason", "code", "diagnostic", "at", "reporting_mta",
}

// unreachableReport streams GET /v1/campaigns/{id}/unreachable: every
// recipient the notice did not reach, with the same conventions as the
// delivery report (streamed in batches, byte order mark unless bom=false,
// formula cells prefixed, audited with the reason).
func (s *Server) unreachableReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	bom, ok := s.downloadQuery(w, r)
	if !ok {
		return
	}
	st, c, ok := s.downloadCampaign(w, r, id)
	if !ok {
		return
	}
	rows := st.Seq
	if c.PurgedAt != nil {
		rows = 0 // only the header is left
	}
	details, _ := json.Marshal(map[string]any{"recipients": rows})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "campaign.unreachable", CampaignID: id, Reason: q.Get("reason"), Details: details})

	w, cw := s.startCSV(w, "oshirase-"+id+"-unreachable.csv", bom, zoned(unreachableColumns, []string{"at"}, c.Zone()))
	rc := http.NewResponseController(w)
	now := time.Now()
	for from := int64(1); from <= rows; from += reportBatch {
		ch, err := s.store.LoadRecipients(r.Context(), id, from, min(from+reportBatch, rows+1), time.Time{})
		if err != nil {
			s.log.Error("unreachable report", "campaign", id, "at", from, "err", err)
			cw.Write([]string{"ERROR: the list broke off at recipient " + strconv.FormatInt(from, 10) + "; download it again"})
			cw.Flush()
			return
		}
		// The evidence of a suppressed recipient is its address's record
		// on the suppression list: one read for the batch.
		var addrs []string
		for _, rc := range ch.Recipients {
			if rc.Status == notice.StatusSuppressed {
				addrs = append(addrs, rc.Email)
			}
		}
		sups, err := s.store.Suppressed(r.Context(), addrs)
		if err != nil {
			s.log.Error("unreachable report: suppressions", "campaign", id, "at", from, "err", err)
			cw.Write([]string{"ERROR: the list broke off at recipient " + strconv.FormatInt(from, 10) + "; download it again"})
			cw.Flush()
			return
		}
		for i := range ch.Recipients {
			rc := &ch.Recipients[i]
			if row := unreachableRow(rc, c, now, s.cfg.RetryMaxAge, sups[rc.Email]); row != nil {
				cw.Write(row)
			}
		}
		cw.Flush()
		if cw.Error() != nil {
			return // the client went away
		}
		rc.Flush()
	}
}

// unreachableRow is rc's row in the list of recipients not reached, or nil
// when rc was reached or may still be: sent (a bounce would have made it
// bounced), or still being tried within maxAge of its first attempt (of the
// campaign's start, when it has none yet). sup is the suppression list's
// record of a suppressed recipient's address (nil: removed since).
func unreachableRow(rc *notice.Recipient, c *notice.Campaign, now time.Time, maxAge time.Duration, sup *store.Suppression) []string {
	stamp := func(t *time.Time) string { return stampIn(t, c.Zone()) }
	var reason string
	switch rc.Status {
	case notice.StatusFailed:
		reason = "the mail server refused the notice"
		if rc.LastCode >= 400 && rc.LastCode < 500 || strings.HasPrefix(rc.Enhanced, "4.") {
			reason = "the mail server kept deferring the notice until retries ran out"
		}
	case notice.StatusBounced:
		reason = "the notice bounced after the relay accepted it"
	case notice.StatusComplained:
		reason = "the customer reported the notice as spam"
	case notice.StatusSuppressed:
		reason = "not sent: the address is on the suppression list"
	case notice.StatusCancelled:
		reason = "not sent: the campaign was cancelled"
	case notice.StatusPending, notice.StatusSending, notice.StatusRetrying:
		since := rc.FirstTryAt
		if since == nil {
			since = c.StartedAt
		}
		if since == nil || now.Sub(*since) < maxAge {
			return nil
		}
		reason = "still not delivered " + shortDuration(maxAge) + " after the first attempt"
	default:
		return nil
	}
	locale := rc.Locale
	if locale == "" {
		locale = c.DefaultLocale
	}
	row := []string{strconv.FormatInt(rc.ID, 10), rc.Email, rc.CustomerID, locale, string(rc.Status), reason, "", "", "", ""}
	// The evidence: what came back after the relay took the notice, else
	// the last SMTP reply.
	switch ev := lastReturned(rc.Returned); {
	case rc.Status == notice.StatusSuppressed && sup != nil:
		// Why the address is on the list, since when, and who or which
		// campaign put it there.
		row[6] = sup.Enhanced
		if sup.Code > 0 {
			row[6] = strings.TrimSpace(strconv.Itoa(sup.Code) + " " + sup.Enhanced)
		}
		row[7] = "suppression list: " + notice.MaskAddresses(sup.Reason)
		if sup.CampaignID != "" {
			row[7] += " (campaign " + sup.CampaignID + ")"
		} else if sup.Actor != "" {
			row[7] += " (added by " + sup.Actor + ")"
		}
		row[8] = stamp(&sup.At)
	case rc.Status == notice.StatusSuppressed:
		row[7] = "suppression list: the address has been removed from it since"
	case rc.Status == notice.StatusCancelled:
		row[7] = "campaign cancelled before this notice was sent"
		row[8] = stamp(c.FinishedAt)
	case ev != nil && (rc.Status == notice.StatusBounced || rc.Status == notice.StatusComplained):
		row[6], row[7], row[8], row[9] = ev.Status, ev.Diagnostic, stamp(&ev.At), ev.ReportingMTA
		if ev.Kind == string(notice.StatusComplained) {
			row[6] = "complaint:" + ev.FeedbackType
		}
	case rc.LastCode > 0 || rc.LastError != "":
		row[6] = strings.TrimSpace(strconv.Itoa(rc.LastCode) + " " + rc.Enhanced)
		if rc.LastCode == 0 {
			row[6] = rc.Enhanced
		}
		row[7] = rc.LastError
		if n := len(rc.History); n > 0 {
			row[8] = stamp(&rc.History[n-1].At)
		}
	case rc.Attempts == 0 && rc.Status != notice.StatusBounced && rc.Status != notice.StatusComplained:
		row[7] = "no delivery attempt yet"
	}
	for i, v := range row {
		row[i] = spreadsheetSafe(v)
	}
	return row
}

// reach is the campaign's summary of who was told: reached (sent, and no
// bounce within the bounce window since the campaign's last send), not
// reached (failed, bounced, complained, suppressed, cancelled) and unknown
// (not yet sent, or sent while a bounce may still come). From the counts
// alone: no recipient is read.
type reach struct {
	Reached    int64 `json:"reached"`
	NotReached int64 `json:"not_reached"`
	Unknown    int64 `json:"unknown"`
	// SettledAt is when the sent recipients count as reached: the
	// campaign's last send plus BOUNCE_WINDOW. Absent while sending.
	SettledAt *time.Time `json:"settled_at,omitempty"`
}

func reachOf(c *notice.Campaign, now time.Time, window time.Duration) *reach {
	if c.Status == notice.CampaignDraft {
		return nil
	}
	n := c.Counts
	r := &reach{
		NotReached: n.Failed + n.Bounced + n.Complained + n.Suppressed + n.Cancelled,
		Unknown:    n.Pending + n.Sending + n.Retrying,
	}
	// The last send is when the campaign finished (a retry reopens it and
	// moves finished_at on); before that a bounce may come for any of them.
	if (c.Status == notice.CampaignDone || c.Status == notice.CampaignCancelled) && c.FinishedAt != nil {
		at := c.FinishedAt.Add(window)
		r.SettledAt = &at
		if !now.Before(at) {
			r.Reached = n.Sent
			return r
		}
	}
	r.Unknown += n.Sent
	return r
}

// shortDuration is d as people write it: 72h, not 72h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
