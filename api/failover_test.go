package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/store"
)

// TestPossibleDuplicateShown: a recipient sent again after an attempt whose
// outcome was lost (its claim expired and another worker took it over) is
// marked as a possible duplicate with both attempts' times in its history,
// in the delivery report, in the campaign's counts and in the metrics.
func TestPossibleDuplicateShown(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBSupport)
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "dup"}), service.Options{API: true})
	ctx := context.Background()
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	s := st.Svc.Store
	if _, err := s.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "a@example.jp"}, {Email: "b@example.jp"}}); err != nil {
		t.Fatal(err)
	}
	tr, err := s.Start(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	do := func(step store.Step) store.StepResult {
		t.Helper()
		r, err := s.Do(ctx, c.ID, step)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	sent := func(tok string, rid int64) {
		at := time.Now().UTC()
		do(store.Step{Token: tok, FinishID: rid, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at,
			MessageID: fmt.Sprintf("m%d", rid), History: []notice.Attempt{{At: at, OK: true, Code: 250, Text: "OK"}}}})
	}
	// Recipient 1: worker a claims it and dies mid-send; b takes over.
	do(store.Step{Token: "a", ClaimID: 1, ClaimTTL: 20 * time.Millisecond, Gen: tr.Gen})
	time.Sleep(50 * time.Millisecond)
	if r := do(store.Step{Token: "b", ClaimID: 1, ClaimTTL: time.Minute, Gen: tr.Gen}); !r.Doubted {
		t.Fatalf("takeover not doubted: %+v", r)
	}
	sent("b", 1)
	do(store.Step{Token: "b", ClaimID: 2, ClaimTTL: time.Minute, Gen: tr.Gen})
	sent("b", 2)

	var got notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID, "", nil, &got)
	if got.Status != notice.CampaignDone || got.Counts.Sent != 2 || got.Counts.PossibleDuplicate != 1 {
		t.Errorf("campaign: %s %+v, want done, 2 sent, 1 possible duplicate", got.Status, got.Counts)
	}
	var r1 notice.Recipient
	teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/campaigns/"+c.ID+"/recipients/1", "", nil, &r1)
	if d := r1.PossibleDuplicate; d == nil || len(d.Attempts) != 2 || len(r1.History) != 2 || !r1.History[0].Unknown || !r1.History[1].OK {
		t.Fatalf("recipient 1: possible_duplicate %+v, history %+v", d, r1.History)
	}

	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/report?bom=false", "", nil, nil)
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if code != 200 || err != nil || len(rows) != 3 {
		t.Fatalf("report: %d %v %s", code, err, body)
	}
	col := -1
	for i, h := range rows[0] {
		if h == "possible_duplicate (Asia/Tokyo)" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("report has no possible_duplicate column: %v", rows[0])
	}
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	want := r1.PossibleDuplicate.Attempts[0].In(tokyo).Format("2006-01-02 15:04:05.000") + "; " + r1.PossibleDuplicate.Attempts[1].In(tokyo).Format("2006-01-02 15:04:05.000")
	if rows[1][col] != want || rows[2][col] != "" {
		t.Errorf("possible_duplicate cells %q, %q; want %q, \"\"", rows[1][col], rows[2][col], want)
	}

	// While it is active, the campaign's count is in the metrics too.
	s.Redis().SAdd(ctx, "dup:active", c.ID)
	code, body = teststack.Do(t, st.Base, teststack.OperatorKey, "GET", "/metrics", "", nil, nil)
	if line := fmt.Sprintf("oshirase_campaign_possible_duplicates{campaign=%q} 1", c.ID); code != 200 || !bytes.Contains(body, []byte(line)) {
		t.Errorf("/metrics lacks %s", line)
	}
}

// TestReadyzWritesRefused: a primary with min-replicas-to-write 1 and no
// replica answers PING but refuses every write (NOREPLICAS): /readyz says
// so (503, redis_writes "refused: noreplicas") instead of "ready".
func TestReadyzWritesRefused(t *testing.T) {
	srv := testenv.StartRedis(t, "--min-replicas-to-write", "1")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	for _, tc := range []struct {
		name   string
		min    string
		status int
		writes string
	}{
		{"no replica for min-replicas-to-write 1", "1", 503, "refused: noreplicas"},
		{"min-replicas-to-write 0", "0", 200, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := rdb.ConfigSet(context.Background(), "min-replicas-to-write", tc.min).Err(); err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			api.Ready(store.New(rdb, "rz"), nil, slog.New(slog.DiscardHandler), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			var ans struct {
				Ready  bool              `json:"ready"`
				Checks map[string]string `json:"checks"`
			}
			json.Unmarshal(rec.Body.Bytes(), &ans)
			if rec.Code != tc.status || ans.Checks["redis"] != "ok" || ans.Checks["redis_writes"] != tc.writes || strings.Contains(rec.Body.String(), "127.0.0.1") {
				t.Errorf("/readyz: %d %s", rec.Code, rec.Body)
			}
		})
	}
}

// TestSentNeverGoesBack: a failover that loses a "sent" the old primary had
// acknowledged makes the stored count drop until the worker writes it again;
// what the API shows stays at its highest, and the counts still add up.
func TestSentNeverGoesBack(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBSupport)
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "mono"}), service.Options{API: true})
	ctx := context.Background()
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	s := st.Svc.Store
	s.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "a@example.jp"}, {Email: "b@example.jp"}, {Email: "c@example.jp"}})
	tr, _ := s.Start(ctx, c.ID)
	for rid := int64(1); rid <= 2; rid++ {
		at := time.Now()
		s.Do(ctx, c.ID, store.Step{Token: "a", ClaimID: rid, ClaimTTL: time.Minute, Gen: tr.Gen})
		s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: rid, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at}})
	}
	get := func() notice.Counts {
		var got notice.Campaign
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID, "", nil, &got)
		var list struct{ Campaigns []notice.Campaign }
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns", "", nil, &list)
		if len(list.Campaigns) != 1 || list.Campaigns[0].Counts != got.Counts {
			t.Errorf("list shows %+v, the campaign %+v", list.Campaigns, got.Counts)
		}
		return got.Counts
	}
	if n := get(); n.Sent != 2 || n.Pending != 1 {
		t.Fatalf("counts: %+v", n)
	}
	// The failover: the new primary lacks recipient 2's "sent" (it is
	// "sending" there, its claim the worker's).
	key := "mono:{c:" + c.ID + "}:"
	s.Redis().SetRange(ctx, key+"st", 2, "\x01")
	s.Redis().HIncrBy(ctx, key+"counts", "sent", -1)
	s.Redis().HIncrBy(ctx, key+"counts", "sending", 1)
	if n := get(); n.Sent != 2 || n.Sending != 0 || n.Pending != 1 || n.Total != 3 {
		t.Errorf("after the lost write: %+v, want sent still 2 and the counts adding up", n)
	}
	// Written again: the real counts catch up, and go on from there.
	at := time.Now()
	s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: 2, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at}})
	s.Do(ctx, c.ID, store.Step{Token: "a", ClaimID: 3, ClaimTTL: time.Minute, Gen: tr.Gen})
	s.Do(ctx, c.ID, store.Step{Token: "a", FinishID: 3, Finish: notice.StatusSent, Delivery: &notice.Delivery{Attempts: 1, SentAt: &at}})
	if n := get(); n.Sent != 3 || n.Pending+n.Sending != 0 {
		t.Errorf("at the end: %+v", n)
	}
}
