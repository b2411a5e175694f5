package api

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// reportBatch is how many recipients the report reads from Redis at a time.
const reportBatch = 500

// reportColumns are the report's columns: enough to show a regulator, or
// the company's own records, who was told what and when — and nothing more
// of the recipient than the address and the company's customer id.
var reportColumns = []string{
	"recipient_id", "email", "customer_id", "locale", "status", "attempts", "first_attempt_at", "sent_at",
	"message_id", "last_code", "last_enhanced", "last_error", "resends", "last_resend_status", "last_resend_sent_at",
	"accepted_reply", "possible_duplicate", "bounced_at", "dsn_action", "dsn_status", "dsn_diagnostic", "reporting_mta",
}

// campaignReport streams a campaign's delivery report as CSV, one row per
// recipient in upload order, read from Redis reportBatch at a time, so a
// million recipients take no more memory than a few hundred. It starts
// with a UTF-8 byte order mark unless ?bom=false: Excel, where such reports
// are read in Japan, shows UTF-8 without one as mojibake.
func (s *Server) campaignReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	want, ok := statusParam(w, q)
	if !ok {
		return
	}
	bom, ok := s.downloadQuery(w, r)
	if !ok {
		return
	}
	st, c, ok := s.downloadCampaign(w, r, id)
	if !ok {
		return
	}
	// The language the notice went out in: a recipient without a locale of
	// its own got the campaign's default.
	defLocale, zone := c.DefaultLocale, c.Zone()
	// Who took a copy of the recipients' addresses is itself worth a trace.
	rows := st.Seq
	if c.PurgedAt != nil {
		rows = 0 // only the header is left
	}
	details, _ := json.Marshal(map[string]any{"status": want, "recipients": rows})
	s.app.Audit(r.Context(), store.AuditEntry{Action: "campaign.report", CampaignID: id, Reason: q.Get("reason"), Details: details})

	w, cw := s.startCSV(w, "oshirase-"+id+"-report.csv", bom, zoned(reportColumns, reportTimes, zone))
	rc := http.NewResponseController(w)
	for from := int64(1); from <= st.Seq; from += reportBatch {
		ch, err := s.store.LoadRecipients(r.Context(), id, from, min(from+reportBatch, st.Seq+1), time.Time{})
		if err != nil {
			// The status line is gone; end the body where it broke, with a
			// row that says so, rather than pass off a short report as whole.
			s.log.Error("campaign report", "campaign", id, "at", from, "err", err)
			cw.Write([]string{"ERROR: the report broke off at recipient " + strconv.FormatInt(from, 10) + "; download it again"})
			cw.Flush()
			return
		}
		for i := range ch.Recipients {
			if rc := &ch.Recipients[i]; want == "" || rc.Status == want {
				cw.Write(reportRow(rc, defLocale, zone))
			}
		}
		cw.Flush()
		if cw.Error() != nil {
			return // the client went away
		}
		rc.Flush()
	}
}

func reportRow(rc *notice.Recipient, defLocale string, zone *time.Location) []string {
	stamp := func(t *time.Time) string { return stampIn(t, zone) }
	locale := rc.Locale
	if locale == "" {
		locale = defLocale
	}
	row := []string{
		strconv.FormatInt(rc.ID, 10), rc.Email, rc.CustomerID, locale, string(rc.Status), strconv.Itoa(rc.Attempts),
		stamp(rc.FirstTryAt), stamp(rc.SentAt), rc.MessageID, "", rc.Enhanced, rc.LastError, strconv.Itoa(len(rc.Resends)), "", "", "", "",
		"", "", "", "", "",
	}
	if rc.LastCode > 0 {
		row[9] = strconv.Itoa(rc.LastCode)
	}
	if n := len(rc.Resends); n > 0 {
		last := rc.Resends[n-1]
		row[13], row[14] = string(last.Status), stamp(last.SentAt)
	}
	// What the relay said when it took the notice: often its queue id, the
	// thread to follow the message further.
	for i := len(rc.History) - 1; i >= 0; i-- {
		if a := rc.History[i]; a.OK && a.Resend == 0 {
			row[15] = a.Text
			break
		}
	}
	// The notice may have gone out twice (an attempt whose outcome was
	// lost was followed by another): the attempts' start times, oldest
	// first, so the proof of notification says what really happened.
	if d := rc.PossibleDuplicate; d != nil {
		times := make([]string, len(d.Attempts))
		for i := range d.Attempts {
			// To the millisecond: two attempts may start in one second.
			times[i] = d.Attempts[i].In(zone).Format(csvTime + ".000")
		}
		row[16] = strings.Join(times, "; ")
		if row[16] == "" {
			row[16] = "yes" // the times were lost with the outcome
		}
	}
	// What came back after the relay took it: the bounce or complaint
	// that made the status final, else the latest report (a delay).
	if ev := lastReturned(rc.Returned); ev != nil {
		if ev.Kind == string(notice.StatusBounced) || ev.Kind == string(notice.StatusComplained) {
			row[17] = stamp(&ev.At)
		}
		row[18], row[19], row[20], row[21] = ev.Action, ev.Status, ev.Diagnostic, ev.ReportingMTA
		if ev.Kind == string(notice.StatusComplained) {
			row[18] = "complaint:" + ev.FeedbackType
		}
	}
	for i, v := range row {
		row[i] = spreadsheetSafe(v)
	}
	return row
}

// lastReturned is the latest bounce or complaint in evs, else the latest
// DSN of any kind (auto-replies say nothing about delivery), else nil.
func lastReturned(evs []notice.Returned) *notice.Returned {
	var last *notice.Returned
	for i := len(evs) - 1; i >= 0; i-- {
		switch evs[i].Kind {
		case string(notice.StatusBounced), string(notice.StatusComplained):
			return &evs[i]
		case "delayed", "delivered":
			if last == nil {
				last = &evs[i]
			}
		}
	}
	return last
}

// csvTime is how a CSV download writes a time: in the campaign's zone,
// the way Excel (and LibreOffice, and Google Sheets) read a date and time
// without asking. The zone is in the column's name (zoned).
const csvTime = "2006-01-02 15:04:05"

func stampIn(t *time.Time, zone *time.Location) string {
	if t == nil {
		return ""
	}
	return t.In(zone).Format(csvTime)
}

// reportTimes are the report's columns that hold times.
var reportTimes = []string{"first_attempt_at", "sent_at", "last_resend_sent_at", "possible_duplicate", "bounced_at"}

// zoned is columns with the zone the times are in added to the name of
// each time column ("sent_at (Asia/Tokyo)"): the file says it itself.
func zoned(columns, times []string, zone *time.Location) []string {
	out := slices.Clone(columns)
	for i, c := range out {
		if slices.Contains(times, c) {
			out[i] = c + " (" + zone.String() + ")"
		}
	}
	return out
}

// spreadsheetSafe keeps a cell from being read as a formula by a
// spreadsheet (CSV injection): an address may begin with = or +, an SMTP
// server's reply with anything. Such a cell gets a leading apostrophe, which
// spreadsheets hide and take as "this is text".
func spreadsheetSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// downloadCampaign reads the campaign a CSV download is of, with its
// state (the recipients' id range); on failure it has answered.
func (s *Server) downloadCampaign(w http.ResponseWriter, r *http.Request, id string) (store.CampaignState, *notice.Campaign, bool) {
	st, err := s.store.State(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return st, nil, false
	}
	c, err := s.store.Campaign(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return st, nil, false
	}
	return st, c, true
}

// downloadQuery reads what every CSV download takes from its query: bom
// (true unless "false": Excel wants the byte order mark) and a reason for
// the audit log that holds no card number. Not ok: the error is answered.
func (s *Server) downloadQuery(w http.ResponseWriter, r *http.Request) (bom, ok bool) {
	q := r.URL.Query()
	bom = true
	if v := q.Get("bom"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_bom", "bom must be true or false", []fieldError{{Field: "bom", Error: "must be true or false"}})
			return false, false
		}
		bom = b
	}
	if fe := s.app.CardInText(r.Context(), "reason", q.Get("reason")); fe != nil {
		s.fail(w, r, app.E(app.Invalid, "invalid_reason", "the reason looks like it holds a full card number", fe...))
		return false, false
	}
	return bom, true
}

// startCSV begins a streamed CSV attachment named file: its headers, the
// byte order mark when bom, and the header row. The returned writer moves
// the connection's write deadline on with every write that gets through, so
// a million rows may take longer than HTTP_WRITE_TIMEOUT.
func (s *Server) startCSV(w http.ResponseWriter, file string, bom bool, columns []string) (http.ResponseWriter, *csv.Writer) {
	w = flowWriter{w, s.flow(w)}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, file))
	if bom {
		w.Write([]byte("\ufeff"))
	}
	cw := csv.NewWriter(w)
	cw.UseCRLF = true // RFC 4180, as spreadsheets expect
	cw.Write(columns)
	return w, cw
}
