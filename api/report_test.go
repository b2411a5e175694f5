package api_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestCampaignReport downloads the delivery report of a finished campaign
// with one bounced address and one whose address a spreadsheet would take
// for a formula, over real HTTP from a real stack.
func TestCampaignReport(t *testing.T) {
	testenv.Slow(t, "large reports")
	_, url := testenv.Redis(t, testenv.DBSupport)
	const bounced = "gone@example.jp"
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true, Reply: func(st smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if st == smtpsink.StageRcpt && rcpt == bounced {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{
		"REDIS_URL": url, "SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "KEY_PREFIX": "rep",
	}), service.Options{API: true, Worker: true})

	const n = 1203 // more than two of the report's batches
	rcpts := make([]notice.Recipient, n)
	for i := range rcpts {
		rcpts[i] = notice.Recipient{Email: fmt.Sprintf("u%04d@example.jp", i+1), Name: "山田", Locale: "ja", CustomerID: fmt.Sprintf("C%05d", i+1), CardLast4: "1234"}
	}
	rcpts[1].Email = bounced
	rcpts[2].Email, rcpts[2].CustomerID = "=cmd@example.jp", "+SUM(A1)"
	rcpts[3].Locale = "" // sent in the campaign's default, ja: the report says so
	cid, _ := sentCampaign(t, st, "report", rcpts)

	get := func(key, query string) (int, []byte) {
		return teststack.Do(t, st.Base, key, "GET", "/v1/campaigns/"+cid+"/report"+query, "", nil, nil)
	}
	if code, _ := get(teststack.SupportKey, ""); code != 403 {
		t.Errorf("support downloads the report: %d, want 403", code)
	}
	code, body := get(teststack.AdminKey, "?reason=PPC+report")
	if code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	if !bytes.HasPrefix(body, []byte("\ufeff")) {
		t.Errorf("report does not start with a byte order mark")
	}
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("\ufeff")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n+1 || strings.Join(rows[0], ",") != "recipient_id,email,customer_id,locale,status,attempts,first_attempt_at (Asia/Tokyo),sent_at (Asia/Tokyo),message_id,last_code,last_enhanced,last_error,resends,last_resend_status,last_resend_sent_at (Asia/Tokyo),accepted_reply,possible_duplicate (Asia/Tokyo),bounced_at (Asia/Tokyo),dsn_action,dsn_status,dsn_diagnostic,reporting_mta" {
		t.Fatalf("%d rows, header %v", len(rows), rows[0])
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.TrimSuffix(h, " (Asia/Tokyo)")] = i
	}
	// Times as Excel reads them, in the campaign's zone (Asia/Tokyo, its
	// default), which the column names say.
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	for i, row := range rows[1:] {
		id, email := fmt.Sprint(i+1), rcpts[i].Email
		// The relay's own words when it took the notice are kept (go-smtp
		// says "250 2.0.0 OK: queued").
		want := map[string]string{"recipient_id": id, "email": email, "customer_id": rcpts[i].CustomerID, "locale": "ja", "status": "sent", "attempts": "1",
			"last_code": "250", "last_enhanced": "2.0.0", "accepted_reply": "OK: queued", "possible_duplicate": ""}
		switch i {
		case 1:
			want["status"], want["last_code"], want["last_enhanced"], want["accepted_reply"] = "failed", "550", "5.1.1", ""
		case 2:
			want["email"], want["customer_id"] = "'=cmd@example.jp", "'+SUM(A1)"
		}
		for k, v := range want {
			if row[col[k]] != v {
				t.Errorf("row %d: %s = %q, want %q", i+1, k, row[col[k]], v)
			}
		}
		if sent := row[col["sent_at"]] != "" && row[col["message_id"]] != ""; sent != (want["status"] == "sent") {
			t.Errorf("row %d: sent_at %q, message_id %q for status %s", i+1, row[col["sent_at"]], row[col["message_id"]], want["status"])
		}
		if v := row[col["sent_at"]]; v != "" {
			at, err := time.ParseInLocation("2006-01-02 15:04:05", v, tokyo)
			if err != nil || time.Since(at) > time.Hour || time.Since(at) < -time.Minute {
				t.Errorf("row %d: sent_at %q is not the send time in Asia/Tokyo as 2006-01-02 15:04:05 (%v)", i+1, v, err)
			}
		}
		if strings.Contains(strings.Join(row, ","), "山田") {
			t.Errorf("row %d shows the name: %v", i+1, row)
		}
	}
	if !strings.Contains(rows[2][col["last_error"]], "User unknown") {
		t.Errorf("bounced row: last_error %q", rows[2][col["last_error"]])
	}

	// Only the failed, without a byte order mark.
	code, body = get(teststack.AdminKey, "?status=failed&bom=false")
	if rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll(); code != 200 || err != nil || len(rows) != 2 || rows[1][1] != bounced {
		t.Errorf("failed-only report: %d %v %q", code, err, body)
	}
	if code, _ := get(teststack.AdminKey, "?status=lost"); code != 400 {
		t.Errorf("unknown status: %d, want 400", code)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/nope/report", "", nil, nil); code != 404 {
		t.Errorf("unknown campaign: %d, want 404", code)
	}

	// Each download is in the audit log, with who and why.
	var audit struct {
		Entries []struct {
			Actor, Action, Reason string
		} `json:"entries"`
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+cid, "", nil, &audit); code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	reports := 0
	for _, e := range audit.Entries {
		if e.Action == "campaign.report" {
			reports++
			if e.Actor != "admin" {
				t.Errorf("report audited as %q", e.Actor)
			}
		}
	}
	if reports != 2 {
		t.Errorf("%d report downloads audited, want 2 (the refused and invalid ones are not)", reports)
	}
}
