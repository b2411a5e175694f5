package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// privateRedis starts a redis-server of the test's own on port (one of
// those set aside for such servers) with args, and an API over it.
func privateRedis(t *testing.T, port int, args ...string) (*redis.Client, *httptest.Server) {
	t.Helper()
	srv := &testenv.RedisServer{Port: port, Dir: t.TempDir(), Args: args}
	srv.Start(t)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseKeys(testenv.APIKeys)
	if err != nil {
		t.Fatal(err)
	}
	q := asynq.NewClientFromRedisClient(rdb)
	hs := httptest.NewServer(api.New(api.Config{}, store.New(rdb, "oom"), q, ts, auth.NewKeys(keys), nil, nil))
	t.Cleanup(hs.Close)
	return rdb, hs
}

type oomAnswer struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details *struct {
			Accepted          int   `json:"accepted"`
			StoredThroughLine int   `json:"stored_through_line"`
			Total             int64 `json:"total_recipients"`
			Incomplete        *struct {
				Line  int    `json:"line"`
				Error string `json:"error"`
			} `json:"incomplete"`
		} `json:"details"`
	} `json:"error"`
	Accepted int   `json:"accepted"`
	Total    int64 `json:"total_recipients"`
}

// TestUploadRedisOutOfMemory: an upload that Redis (noeviction) runs out of
// memory for is a 503 with a generic message, not a 400 with Redis' words;
// the answer and the campaign's last_upload say exactly through which line
// rows are stored, accepted agrees with the campaign's total, the upload
// was audited when it began, and a client resuming after that line ends
// with every row stored once. A start refused for lack of memory leaves
// the campaign a draft (or says the start is incomplete), and a start
// again completes it.
func TestUploadRedisOutOfMemory(t *testing.T) {
	testenv.Slow(t, "fills a private Redis")
	rdb, hs := privateRedis(t, 6400, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	ctx := context.Background()
	id := newCampaign(t, hs)
	const rows = 50000 // ~20 MB in Redis: far past 4 MB
	var ans oomAnswer
	code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"},
		strings.NewReader(csvHeader+csvRows(1, rows)), &ans)
	d := ans.Error.Details
	if code != 503 || ans.Error.Code != "unavailable" || d == nil || d.Incomplete == nil {
		t.Fatalf("upload into a full Redis: %d %+v, want 503 unavailable with details", code, ans.Error)
	}
	for _, leak := range []string{"OOM", "maxmemory", "redis", "script"} {
		if strings.Contains(strings.ToLower(ans.Error.Message+d.Incomplete.Error), strings.ToLower(leak)) {
			t.Errorf("the answer shows internals (%q): %q / %q", leak, ans.Error.Message, d.Incomplete.Error)
		}
	}
	var c notice.Campaign
	call(t, hs, "GET", "/v1/campaigns/"+id, nil, nil, &c)
	// One valid row per line after the header (line 1): rows stored are
	// exactly lines 2..stored_through_line.
	if d.Incomplete.Line != d.StoredThroughLine || int64(d.StoredThroughLine-1) != c.Counts.Total ||
		int64(d.Accepted) != c.Counts.Total || d.Total != c.Counts.Total || c.Counts.Total == 0 || c.Counts.Total >= rows {
		t.Fatalf("incomplete.line %d, stored_through_line %d, accepted %d, total in answer %d; campaign total %d",
			d.Incomplete.Line, d.StoredThroughLine, d.Accepted, d.Total, c.Counts.Total)
	}
	// What a client that got no answer reads: the same line (the rows
	// and the line are written in one step).
	if u := c.LastUpload; u == nil || u.StoredThroughLine != d.StoredThroughLine || int64(u.Accepted) != c.Counts.Total {
		t.Errorf("last_upload %+v, want stored through line %d, %d accepted", u, d.StoredThroughLine, c.Counts.Total)
	}
	t.Logf("Redis full after %d of %d rows: 503 %q, stored through line %d", c.Counts.Total, rows, ans.Error.Message, d.StoredThroughLine)
	var audit struct {
		Entries []struct {
			Action string `json:"action"`
		} `json:"entries"`
	}
	call(t, hs, "GET", "/v1/audit?campaign="+id, nil, nil, &audit)
	began := false
	for _, e := range audit.Entries {
		began = began || e.Action == "recipients.upload.start"
	}
	if !began {
		t.Errorf("no audit entry for the upload: %+v", audit.Entries)
	}

	// A start while Redis is full: never a campaign shown sending that
	// nothing will send.
	var cs notice.Campaign
	var raw json.RawMessage
	code = call(t, hs, "POST", "/v1/campaigns/"+id+"/start", nil, nil, &raw)
	call(t, hs, "GET", "/v1/campaigns/"+id, nil, nil, &cs)
	if code < 500 || (cs.Status != notice.CampaignDraft && !strings.Contains(string(raw), "start_incomplete")) {
		t.Errorf("start into a full Redis: %d %s, campaign %s", code, raw, cs.Status)
	}

	// Memory again: the client resumes after the stored line and every row
	// is in once.
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	ans = oomAnswer{}
	code = call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"},
		strings.NewReader(csvHeader+csvRows(d.StoredThroughLine, rows-d.StoredThroughLine+1)), &ans)
	if code != 200 || ans.Total != rows || int64(ans.Accepted) != rows-c.Counts.Total {
		t.Fatalf("resumed upload: %d accepted %d total %d, want all %d rows", code, ans.Accepted, ans.Total, rows)
	}
	// Support finds every one of them, those whose index entry the full
	// Redis refused too.
	if n := rdb.HLen(ctx, "oom:idx:email").Val(); n != rows {
		t.Errorf("look-up index holds %d addresses, want %d", n, rows)
	}
	if code := call(t, hs, "POST", "/v1/campaigns/"+id+"/start", nil, nil, &cs); code != 202 || cs.Status != notice.CampaignSending {
		t.Fatalf("start again: %d %s", code, cs.Status)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueBulk, fmt.Sprintf("fanout:%s:1", id))
	if err != nil {
		t.Fatalf("the fan-out of the started campaign: %v", err)
	}
	_ = info
}
