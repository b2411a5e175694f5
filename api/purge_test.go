package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
)

// TestPurge removes a finished campaign's personal data: look-ups, the
// report and the recipient API find nobody, another campaign to the same
// address is untouched, the counts stay, and the purge is audited.
func TestPurge(t *testing.T) {
	testenv.Slow(t, "purges a large campaign")
	st, _ := startSupportStack(t, nil)
	const shared = "shared@example.jp"
	rcpts := []notice.Recipient{{Email: shared, Name: "山田 太郎", Locale: "ja", CardLast4: "1234"}}
	for i := range 1200 { // more than one purge batch
		rcpts = append(rcpts, notice.Recipient{Email: fmt.Sprintf("p%04d@example.jp", i), Locale: "ja"})
	}
	old, ids := sentCampaign(t, st, "old notice", rcpts)
	other, _ := sentCampaign(t, st, "follow-up", rcpts[:1])
	// A resend to a corrected address: indexed under that address as well.
	const corrected = "moved@example.com"
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", old, ids[1]),
		"application/json", []byte(`{"reason":"new address","email":"`+corrected+`"}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "resend recorded", 10*time.Second, func() bool {
		res := lookup(t, st, corrected)
		return len(res.Notices) == 1 && len(res.Notices[0].Resends) == 1 && res.Notices[0].Resends[0].Status == notice.StatusSent
	})
	purge := func(id, body string) (int, []byte) {
		return teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+id+"/purge", "application/json", []byte(body), nil)
	}

	if raw := st.Svc.Redis.HGet(context.Background(), "sup:idx:email", corrected).Val(); raw == "" {
		t.Fatalf("no index entry for %s before the purge", corrected)
	}
	if code, _ := purge(old, `{}`); code != 422 {
		t.Errorf("purge without a reason: %d, want 422", code)
	}
	var draft notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &draft)
	if code, _ := purge(draft.ID, `{"reason":"x"}`); code != 409 {
		t.Errorf("purge of a draft: %d, want 409", code)
	}
	var ans struct {
		Purged   int64           `json:"purged"`
		Campaign notice.Campaign `json:"campaign"`
	}
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+old+"/purge", "application/json",
		[]byte(`{"reason":"retention period over; report kept"}`), &ans)
	if code != 200 || ans.Purged != int64(len(rcpts)) || ans.Campaign.PurgedAt == nil || ans.Campaign.Counts.Sent != int64(len(rcpts)) {
		t.Fatalf("purge: %d %s", code, body)
	}

	res := lookup(t, st, shared)
	if len(res.Notices) != 1 || res.Notices[0].Campaign.ID != other {
		t.Errorf("look-up after purge: %+v, want only the follow-up", res.Notices)
	}
	for _, addr := range []string{"p0000@example.jp", corrected} {
		if res := lookup(t, st, addr); len(res.Notices) != 0 {
			t.Errorf("look-up of purged %s: %+v", addr, res.Notices)
		}
	}
	if raw := st.Svc.Redis.HGet(context.Background(), "sup:idx:email", corrected).Val(); raw != "" {
		t.Errorf("index entry of %s left after purge: %q", corrected, raw)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.SupportKey, "GET", fmt.Sprintf("/v1/campaigns/%s/recipients/%d", old, ids[0]), "", nil, nil); code != 404 {
		t.Errorf("purged recipient: %d, want 404", code)
	}
	var page struct {
		Recipients []json.RawMessage `json:"recipients"`
		NextCursor *string           `json:"next_cursor"`
		PurgedAt   *time.Time        `json:"purged_at"`
	}
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/campaigns/"+old+"/recipients?limit=1", "", nil, &page); code != 200 ||
		len(page.Recipients) != 0 || page.NextCursor != nil || page.PurgedAt == nil {
		t.Errorf("recipients of a purged campaign: %d %s, want no one, no cursor, purged_at", code, body)
	}
	code, report := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+old+"/report?bom=false", "", nil, nil)
	if code != 200 || bytes.Count(report, []byte("\n")) != 1 {
		t.Errorf("report after purge: %d, %d lines", code, bytes.Count(report, []byte("\n")))
	}
	for _, k := range []string{"山田", "example.jp", "example.com", "1234"} {
		if keys := personalKeys(t, st, old, k); keys != "" {
			t.Errorf("%q still in Redis after purge: %s", k, keys)
		}
	}
	// Again: a purge is done once; the record of it (purged_at, the audit
	// entry) is not rewritten. (One cut short has no purged_at yet and can
	// be run again.)
	if code, body := purge(old, `{"reason":"again"}`); code != 409 || !strings.Contains(string(body), `already_purged`) {
		t.Errorf("second purge: %d %s, want 409", code, body)
	}
	var audit struct {
		Entries []struct{ Action, Reason string } `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+old, "", nil, &audit)
	purges := 0
	for _, e := range audit.Entries {
		if e.Action == "campaign.purge" {
			purges++
		}
	}
	if purges != 1 {
		t.Errorf("%d purges audited, want 1", purges)
	}
}

// personalKeys lists the keys of campaign cid whose values contain s.
func personalKeys(t *testing.T, st *teststack.Stack, cid, s string) string {
	t.Helper()
	ctx := context.Background()
	rdb := st.Svc.Redis
	var found []string
	keys, err := rdb.Keys(ctx, "*{c:"+cid+"}*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var text string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			text = rdb.Get(ctx, k).Val()
		case "hash":
			text = fmt.Sprint(rdb.HGetAll(ctx, k).Val())
		case "set":
			text = fmt.Sprint(rdb.SMembers(ctx, k).Val())
		case "list":
			text = fmt.Sprint(rdb.LRange(ctx, k, 0, -1).Val())
		case "zset":
			text = fmt.Sprint(rdb.ZRange(ctx, k, 0, -1).Val())
		}
		if strings.Contains(text, s) && !strings.HasSuffix(k, ":def") {
			found = append(found, k)
		}
	}
	return strings.Join(found, ", ")
}

// TestPurgeWaitsForQueuedResend: a resend answered 202 is sent even when a
// purge comes right after it. While its task is queued (here: no worker
// runs), the purge is refused with 409 saying why, however late the task
// is; a tracked resend whose task is gone (a crash lost it) does not block
// the purge. Once the resend has gone out, the purge goes ahead.
func TestPurgeWaitsForQueuedResend(t *testing.T) {
	ctx := context.Background()
	st, sink := startSupportStack(t, nil)
	cid, ids := sentCampaign(t, st, "card leak", []notice.Recipient{
		{Email: "a@example.jp", Locale: "ja"}, {Email: "b@example.jp", Locale: "ja"},
	})
	st.Stop()
	// The API alone, on the same Redis: the resend stays queued.
	vars := map[string]string{"REDIS_URL": fmt.Sprintf("redis://%s/%d", testenv.Addr(), testenv.DBSupport), "SMTP_URL": sink.URL(),
		"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "KEY_PREFIX": "sup"}
	apiOnly := teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true})
	const corrected = "a.new@example.jp"
	if code, body := teststack.Do(t, apiOnly.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[0]),
		"application/json", []byte(`{"reason":"customer called","email":"`+corrected+`"}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	purge := func() (int, []byte) {
		return teststack.Do(t, apiOnly.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+cid+"/purge", "application/json",
			[]byte(`{"reason":"retention over"}`), nil)
	}
	code, body := purge()
	if code != 409 || !strings.Contains(string(body), "resends or notices are queued") {
		t.Fatalf("purge right after a resend: %d %s, want 409 saying a resend is queued", code, body)
	}

	// Workers down for longer than the grace: the entry is past its
	// deadline, but asynq still holds the task, so the purge still waits.
	// A second entry whose task was lost does not hold it up.
	outs, err := apiOnly.Svc.Store.OutstandingDeliveries(ctx, cid)
	if err != nil || len(outs) != 1 {
		t.Fatalf("outstanding after the resend: %v %v, want 1", outs, err)
	}
	if err := apiOnly.Svc.Store.ExtendDelivery(ctx, cid, outs[0].TaskID, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := apiOnly.Svc.Store.TrackDelivery(ctx, cid, "resend:"+cid+":2:9", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if code, body := purge(); code != 409 {
		t.Fatalf("purge with a late but queued resend: %d %s, want 409", code, body)
	}
	if outs, _ := apiOnly.Svc.Store.OutstandingDeliveries(ctx, cid); len(outs) != 1 || !strings.HasPrefix(outs[0].TaskID, fmt.Sprintf("resend:%s:%d:", cid, ids[0])) {
		t.Errorf("outstanding after the lost task was checked: %v, want only the queued resend", outs)
	}

	// A worker comes: the resend goes out, then the purge goes ahead.
	teststack.StartStack(t, testenv.Config(t, vars), service.Options{Worker: true})
	teststack.Eventually(t, "the resend at the SMTP server", 15*time.Second, func() bool {
		for _, m := range sink.Messages() {
			if m.To[0] == corrected {
				return true
			}
		}
		return false
	})
	teststack.Eventually(t, "the purge", 15*time.Second, func() bool {
		code, body := purge()
		if code != 200 && code != 409 {
			t.Fatalf("purge: %d %s", code, body)
		}
		return code == 200
	})
	// And a resend after the purge finds nobody (404), never a 202.
	if code, body := teststack.Do(t, apiOnly.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[1]),
		"application/json", []byte(`{"reason":"late"}`), nil); code == 202 {
		t.Errorf("resend after the purge: %d %s", code, body)
	}
}
