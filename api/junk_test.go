package api_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/testenv"
)

// campaignBytes is what Redis spends on a campaign's keys (MEMORY USAGE).
func campaignBytes(t *testing.T, rdb *redis.Client, id string) int64 {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*{c:"+id+"}*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, k := range keys {
		n += rdb.MemoryUsage(ctx, k, 0).Val()
	}
	return n
}

// TestUploadJunkBounded: whatever an upload holds, what it leaves in Redis
// beyond its accepted recipients is bounded (the first 1,000 rejections in
// full, the rest counted by field and error), and an upload whose rows are
// almost all invalid is stopped early with a clear 422: at once for a
// wrong header or a wrong file, after 10,000 invalid rows that are more
// than half of those read otherwise.
func TestUploadJunkBounded(t *testing.T) {
	testenv.Slow(t, "200,000-row uploads")
	hs := uploadServer(t, 0)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Addr(), DB: testenv.DBAPI})
	defer rdb.Close()
	const n = 200000
	rows := func(header string, row func(i int) string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(header + "\n"))
		for i := range n {
			zw.Write([]byte(row(i) + "\n"))
		}
		zw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		name     string
		body     []byte
		code     int
		errCode  string
		message  string // part of the error message
		accepted int
		maxLine  int // the upload stops at this line at the latest (0: reads it all)
	}{
		{"invalid addresses", rows("email", func(i int) string { return fmt.Sprintf("junk%d", i) }),
			422, "too_many_rejections", "first 100 rows were all rejected", 0, 101},
		{"wrong header", rows("email,name", func(i int) string { return fmt.Sprintf("a%d@example.jp", i) }),
			422, "too_many_rejections", "It reads: email,name", 0, 101},
		{"junk after good rows", rows("email", func(i int) string {
			if i < 200 {
				return fmt.Sprintf("good%d@example.jp", i)
			}
			return "junk"
		}), 422, "too_many_rejections", "10000 rejected rows", 200, 20201},
		{"one address again and again", rows("email", func(i int) string { return "same@example.jp" }),
			200, "", "", 1, 0},
		{"half junk, every error different", rows("email", func(i int) string {
			if i%2 == 0 {
				return "same2@example.jp"
			}
			return "x@example.jp" + strings.Repeat(",", 1+i%500) // "N fields, the header has 1"
		}), 200, "", "", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newCampaign(t, hs)
			before := campaignBytes(t, rdb, id)
			usedBefore := usedMemory(t, rdb)
			var ans struct {
				answer
				Error *struct {
					Code    string  `json:"code"`
					Message string  `json:"message"`
					Details *answer `json:"details"`
				} `json:"error"`
			}
			code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"},
				bytes.NewReader(tc.body), &ans)
			a := &ans.answer
			if ans.Error != nil {
				a = ans.Error.Details
			}
			if code != tc.code || (tc.errCode != "" && (ans.Error == nil || ans.Error.Code != tc.errCode || !strings.Contains(ans.Error.Message, tc.message))) {
				t.Fatalf("%d gzip bytes: %d %+v, want %d %s saying %q", len(tc.body), code, ans.Error, tc.code, tc.errCode, tc.message)
			}
			if a == nil || a.Accepted != tc.accepted || len(a.Rejected) > 1000 || (tc.maxLine > 0 && a.Lines > tc.maxLine) {
				t.Fatalf("answer %+v, want %d accepted, at most 1000 rejections listed, stopped by line %d", a, tc.accepted, tc.maxLine)
			}
			grew := campaignBytes(t, rdb, id) - before
			t.Logf("%d KB of gzip, %d lines read, %d rejected: the campaign's keys grew by %d KB (used_memory by %d KB)",
				len(tc.body)/1024, a.Lines, a.RejectedCount, grew/1024, (usedMemory(t, rdb)-usedBefore)/1024)
			if grew > 1<<20 {
				t.Errorf("the campaign's keys grew by %d bytes; want at most 1 MiB whatever the upload", grew)
			}
		})
	}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info := rdb.InfoMap(context.Background(), "memory").Val()
	var n int64
	fmt.Sscan(info["Memory"]["used_memory"], &n)
	return n
}
