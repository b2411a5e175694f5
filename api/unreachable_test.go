package api_test

import (
	"bytes"
	"context"
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
	"github.com/oshirase/oshirase/store"
)

// TestUnreachable: a finished campaign with a refused address, a suppressed
// one, one that bounced after the relay took it and one complained about
// lists exactly those four in GET …/unreachable (over real HTTP, a real
// store and a real SMTP server), each with its reason and evidence, and
// GET of the campaign sums them up as reached / not_reached / unknown.
func TestUnreachable(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBSupport)
	const refused = "gone@example.jp"
	sink, err := smtpsink.Start(smtpsink.Options{Reply: func(st smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if st == smtpsink.StageRcpt && rcpt == refused {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	// A bounce window of a millisecond: the campaign is settled at once,
	// its sent recipients reached.
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{
		"REDIS_URL": url, "SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "KEY_PREFIX": "unr",
		"BOUNCE_WINDOW": "1ms",
	}), service.Options{API: true, Worker: true})
	ctx := context.Background()
	const suppressed = "blocked@example.jp"
	if err := st.Svc.Store.Suppress(ctx, store.Suppression{Email: suppressed, Reason: "customer asked by phone", Actor: "admin"}); err != nil {
		t.Fatal(err)
	}

	const n = 620 // more than one batch
	rcpts := make([]notice.Recipient, n)
	for i := range rcpts {
		rcpts[i] = notice.Recipient{Email: fmt.Sprintf("u%04d@example.jp", i+1), Name: "山田", Locale: "ja", CustomerID: fmt.Sprintf("C%05d", i+1), CardLast4: "1234"}
	}
	rcpts[9].Email = refused
	rcpts[99].Email = suppressed
	rcpts[599].CustomerID, rcpts[599].Locale = "=HYPERLINK(1)", "en"
	cid, ids := sentCampaign(t, st, "unreachable", rcpts)

	// Recipient 500 bounces, 600 is complained about, after the relay took them.
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	if _, err := st.Svc.Store.RecordReturned(ctx, cid, ids[499], notice.Returned{At: at, Kind: "bounced", Action: "failed", Status: "5.1.1",
		Diagnostic: "smtp; 550 5.1.1 <u0500@example.jp>: Recipient address rejected", ReportingMTA: "relay.example.jp"}, notice.StatusBounced, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Svc.Store.RecordReturned(ctx, cid, ids[599], notice.Returned{At: at, Kind: "complained", FeedbackType: "abuse"}, notice.StatusComplained, nil); err != nil {
		t.Fatal(err)
	}

	var view struct {
		Reach struct {
			Reached, NotReached, Unknown int64
			SettledAt                    *time.Time `json:"settled_at"`
		}
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+cid, "", nil, &view); code != 200 {
		t.Fatalf("campaign: %d %s", code, body)
	} else if !bytes.Contains(body, []byte(`"not_reached":4`)) {
		t.Errorf("campaign: %s", body)
	}
	if r := view.Reach; r.Reached != n-4 || r.Unknown != 0 || r.SettledAt == nil {
		t.Errorf("reach %+v, want %d reached, 4 not reached, 0 unknown, settled", r, n-4)
	}

	get := func(key, query string) (int, []byte) {
		return teststack.Do(t, st.Base, key, "GET", "/v1/campaigns/"+cid+"/unreachable"+query, "", nil, nil)
	}
	if code, _ := get(teststack.SupportKey, ""); code != 403 {
		t.Errorf("support downloads the list: %d, want 403", code)
	}
	code, body := get(teststack.AdminKey, "?reason=letters+to+send")
	if code != 200 || !bytes.HasPrefix(body, []byte("\ufeff")) {
		t.Fatalf("unreachable: %d, starts %q", code, body[:min(len(body), 20)])
	}
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("\ufeff")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"recipient_id", "email", "customer_id", "locale", "status", "reason", "code", "diagnostic", "at (Asia/Tokyo)", "reporting_mta"},
		{"10", refused, "C00010", "ja", "failed", "the mail server refused the notice", "550 5.1.1", "*User unknown*", "*", ""},
		{"100", suppressed, "C00100", "ja", "suppressed", "not sent: the address is on the suppression list", "",
			"suppression list: customer asked by phone (added by admin)", "*", ""},
		{"500", "u0500@example.jp", "C00500", "ja", "bounced", "the notice bounced after the relay accepted it", "5.1.1",
			"smtp; 550 5.1.1 <u***@example.jp>: Recipient address rejected", "2026-12-02 06:00:00", "relay.example.jp"},
		{"600", "u0600@example.jp", "'=HYPERLINK(1)", "en", "complained", "the customer reported the notice as spam", "complaint:abuse", "", "2026-12-02 06:00:00", ""},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %q", len(rows), len(want), rows)
	}
	for i := range want {
		for j, w := range want[i] {
			got := rows[i][j]
			if ok := got == w || w == "*" && got != "" || strings.HasPrefix(w, "*") && len(w) > 1 && strings.Contains(got, strings.Trim(w, "*")); !ok {
				t.Errorf("row %d %s = %q, want %q", i, want[0][j], got, w)
			}
		}
		if strings.Contains(strings.Join(rows[i], ","), "山田") || strings.Contains(strings.Join(rows[i], ","), "1234") {
			t.Errorf("row %d shows a name or card digits: %v", i, rows[i])
		}
	}

	code, body = get(teststack.AdminKey, "?bom=false")
	if code != 200 || bytes.HasPrefix(body, []byte("\ufeff")) {
		t.Errorf("bom=false: %d, starts %q", code, body[:min(len(body), 20)])
	}
	if code, _ := get(teststack.AdminKey, "?bom=maybe"); code != 400 {
		t.Errorf("bom=maybe: %d, want 400", code)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/nope/unreachable", "", nil, nil); code != 404 {
		t.Errorf("unknown campaign: %d, want 404", code)
	}

	// A campaign cancelled before it was sent: every recipient listed,
	// with when.
	var cc notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &cc); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if _, err := st.Svc.Store.AddRecipients(ctx, cc.ID, rcpts[:2]); err != nil {
		t.Fatal(err)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+cc.ID+"/cancel", "", nil, nil); code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+cc.ID+"/unreachable?bom=false", "", nil, nil)
	rows, err = csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil || code != 200 || len(rows) != 3 {
		t.Fatalf("cancelled campaign's list: %d %v %q", code, err, rows)
	}
	for _, row := range rows[1:] {
		if row[4] != "cancelled" || row[5] != "not sent: the campaign was cancelled" || row[7] != "campaign cancelled before this notice was sent" || row[8] == "" {
			t.Errorf("cancelled row %q", row)
		}
	}

	var audit struct {
		Entries []struct{ Actor, Action, Reason string } `json:"entries"`
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+cid, "", nil, &audit); code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	found := 0
	for _, e := range audit.Entries {
		if e.Action == "campaign.unreachable" {
			found++
			if found == 1 && e.Reason != "" && e.Reason != "letters to send" {
				t.Errorf("audit reason %q", e.Reason)
			}
		}
	}
	if found != 2 {
		t.Errorf("%d campaign.unreachable audit entries, want 2 (the refused download is not one)", found)
	}
}
