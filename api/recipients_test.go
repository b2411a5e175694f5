package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// uploadServer is an API over the api package's test database with an upload limit of max bytes.
func uploadServer(t *testing.T, max int64) *httptest.Server {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBAPI)
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseKeys(testenv.APIKeys)
	if err != nil {
		t.Fatal(err)
	}
	q := asynq.NewClientFromRedisClient(rdb)
	srv := api.New(api.Config{MaxUploadBytes: max}, store.New(rdb, "up"), q, ts, auth.NewKeys(keys), nil, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs
}

const campaignJSON = `{"name":"upload test","template":"card-reissue","default_locale":"ja","from":"Example <notice@example.jp>",
"data":{"company":"Example","service":"Store","discovered_on":"2019-05-28","cause":"Unauthorized access.","secondary_harm":"None reported.","period_start":"2009-05-01","period_end":"2019-05-27",
"leaked_items":["Card number"],"actions_taken":["Stopped card payments"],"hotline":"0120-000-000","hotline_hours":"9-18","contact_email":"support@example.jp"}}`

func call(t *testing.T, hs *httptest.Server, method, path string, hdr map[string]string, body io.Reader, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+testenv.AdminKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func newCampaign(t *testing.T, hs *httptest.Server) string {
	t.Helper()
	var c notice.Campaign
	if code := call(t, hs, "POST", "/v1/campaigns", map[string]string{"Content-Type": "application/json"}, strings.NewReader(campaignJSON), &c); code != 201 {
		t.Fatalf("create campaign: %d", code)
	}
	return c.ID
}

func total(t *testing.T, hs *httptest.Server, id string) int64 {
	t.Helper()
	var c notice.Campaign
	call(t, hs, "GET", "/v1/campaigns/"+id, nil, nil, &c)
	return c.Counts.Total
}

// csvRows makes n valid rows for addresses first..first+n-1.
func csvRows(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "user%d@example.jp,名前 %d,ja,C%d,VISA,%04d\n", i, i, i, i%10000)
	}
	return b.String()
}

const csvHeader = "email,name,locale,customer_id,card_brand,card_last4\n"

type answer struct {
	Accepted      int                 `json:"accepted"`
	RejectedCount int                 `json:"rejected_count"`
	Rejected      []map[string]any    `json:"rejected"`
	RejectionsURL string              `json:"rejections_url"`
	Lines         int                 `json:"lines"`
	Total         int64               `json:"total_recipients"`
	Incomplete    *struct{ Line int } `json:"incomplete"`
	Error         *struct {
		Code    string  `json:"code"`
		Details *answer `json:"details"`
	} `json:"error"`
}

func TestUploadCountsAndRejections(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	// 3,000 good rows and 1,500 bad ones (bad locale): more rejections than
	// the answer carries.
	var b strings.Builder
	b.WriteString(csvHeader)
	b.WriteString(csvRows(1, 3000))
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&b, "bad%d@example.jp,x,fr,C,VISA,1234\n", i)
	}
	var ans answer
	if code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(b.String()), &ans); code != 200 {
		t.Fatalf("upload: %d %+v", code, ans)
	}
	if ans.Accepted != 3000 || ans.RejectedCount != 1500 || len(ans.Rejected) != 1000 || ans.Lines != 4501 || ans.Total != 3000 {
		t.Fatalf("answer: accepted %d rejected %d (%d listed) lines %d total %d", ans.Accepted, ans.RejectedCount, len(ans.Rejected), ans.Lines, ans.Total)
	}
	if ans.Rejected[0]["line"] != float64(3002) || ans.Rejected[0]["field"] != "locale" {
		t.Errorf("first rejection = %v", ans.Rejected[0])
	}
	// The first 1,000 are kept in full and can be fetched page by page;
	// all 1,500 are counted by field and error.
	var got int
	var counts []map[string]any
	var all float64
	for cursor := ""; ; {
		var page struct {
			Rejected      []json.RawMessage `json:"rejected"`
			Total         int               `json:"total"`
			NextCursor    *string           `json:"next_cursor"`
			RejectedCount float64           `json:"rejected_count"`
			Counts        []map[string]any  `json:"counts"`
		}
		call(t, hs, "GET", fmt.Sprintf("%s?cursor=%s&limit=600", ans.RejectionsURL, cursor), nil, nil, &page)
		got += len(page.Rejected)
		counts, all = page.Counts, page.RejectedCount
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if got != 1000 || all != 1500 || len(counts) != 1 || counts[0]["field"] != "locale" || counts[0]["count"] != float64(1500) {
		t.Errorf("rejections fetched: %d in full, %v counted as %v; want 1000, and 1500 of locale", got, all, counts)
	}
}

func TestUploadDuplicatesAcrossUploads(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	ct := map[string]string{"Content-Type": "text/csv"}
	var a1, a2 answer
	call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", ct, strings.NewReader(csvHeader+csvRows(1, 700)), &a1)
	// Second upload: 1..700 again (upper-case domain: same address), 701..1000 new,
	// and one duplicate inside the upload itself.
	body := csvHeader + strings.ReplaceAll(csvRows(1, 700), "example.jp", "EXAMPLE.JP") + csvRows(701, 300) + csvRows(900, 1)
	call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", ct, strings.NewReader(body), &a2)
	if a1.Accepted != 700 || a2.Accepted != 300 || a2.RejectedCount != 701 || a2.Total != 1000 {
		t.Fatalf("first %+v; second accepted %d rejected %d total %d", a1.Accepted, a2.Accepted, a2.RejectedCount, a2.Total)
	}
	r := a2.Rejected[0]
	if r["line"] != float64(2) || r["field"] != "email" || !strings.Contains(r["error"].(string), "already") {
		t.Errorf("duplicate rejection = %v", r)
	}
	if last := a2.Rejected[len(a2.Rejected)-1]; last["line"] != float64(1002) {
		t.Errorf("in-upload duplicate: %v", last)
	}
}

func TestUploadGzip(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, csvHeader+csvRows(1, 2000))
	zw.Close()
	var ans answer
	code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"}, &zb, &ans)
	if code != 200 || ans.Accepted != 2000 {
		t.Fatalf("gzip upload: %d %+v", code, ans)
	}
	// Not gzip at all, and a cut-off gzip stream.
	id2 := newCampaign(t, hs)
	if code := call(t, hs, "POST", "/v1/campaigns/"+id2+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"}, strings.NewReader(csvHeader), &ans); code != 400 {
		t.Errorf("plain body as gzip: %d", code)
	}
	zb.Reset()
	zw = gzip.NewWriter(&zb)
	io.WriteString(zw, csvHeader+csvRows(1, 5000))
	zw.Close()
	half := zb.Bytes()[:zb.Len()/2]
	ans = answer{}
	code = call(t, hs, "POST", "/v1/campaigns/"+id2+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"}, bytes.NewReader(half), &ans)
	if code != 400 || ans.Error == nil || ans.Error.Code != "incomplete_upload" || ans.Error.Details == nil {
		t.Fatalf("cut gzip: %d %+v", code, ans)
	}
	d := ans.Error.Details
	if d.Accepted == 0 || d.Incomplete == nil || d.Incomplete.Line != d.Accepted+1 || total(t, hs, id2) != int64(d.Accepted) {
		t.Errorf("cut gzip: accepted %d, incomplete %+v, total %d", d.Accepted, d.Incomplete, total(t, hs, id2))
	}
	// An unknown encoding is refused.
	if code := call(t, hs, "POST", "/v1/campaigns/"+id2+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "br"}, strings.NewReader(csvHeader), nil); code != 415 {
		t.Errorf("br: %d", code)
	}
}

func TestUploadTooLarge(t *testing.T) {
	const limit = 64 << 10
	hs := uploadServer(t, limit)
	id := newCampaign(t, hs)
	body := csvHeader + csvRows(1, 5000) // ≈ 250 KB
	var ans answer
	code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(body), &ans)
	if code != http.StatusRequestEntityTooLarge || ans.Error == nil || ans.Error.Code != "too_large" {
		t.Fatalf("over the limit: %d %+v", code, ans)
	}
	// What came before the limit is kept, and the answer says so.
	d := ans.Error.Details
	if d == nil || d.Accepted == 0 || d.Accepted > 2000 || total(t, hs, id) != int64(d.Accepted) {
		t.Errorf("before the limit: %+v, total %d", d, total(t, hs, id))
	}
	// The limit holds for what a gzip upload unpacks to, too: a small gzip
	// body of 250 KB of rows is over it, and keeps what came before.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, csvHeader+csvRows(10000, 5000))
	zw.Close()
	if zb.Len() >= limit {
		t.Fatalf("gzip body %d bytes", zb.Len())
	}
	id2 := newCampaign(t, hs)
	ans = answer{}
	if code := call(t, hs, "POST", "/v1/campaigns/"+id2+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"}, &zb, &ans); code != 413 ||
		ans.Error.Details == nil || ans.Error.Details.Accepted == 0 || total(t, hs, id2) != int64(ans.Error.Details.Accepted) {
		t.Errorf("gzip body unpacking past the limit: %d %+v", code, ans.Error)
	}
	// Within the limit unpacked, gzip is taken.
	zb.Reset()
	zw = gzip.NewWriter(&zb)
	io.WriteString(zw, csvHeader+csvRows(20000, 500))
	zw.Close()
	id4 := newCampaign(t, hs)
	if code := call(t, hs, "POST", "/v1/campaigns/"+id4+"/recipients", map[string]string{"Content-Type": "text/csv", "Content-Encoding": "gzip"}, &zb, nil); code != 200 || total(t, hs, id4) != 500 {
		t.Errorf("small gzip upload: %d, %d recipients", code, total(t, hs, id4))
	}

	// Over a tiny limit the upload fails before its header is read; the
	// answer still tells how many recipients the campaign holds.
	tiny := uploadServer(t, 100)
	id3 := newCampaign(t, tiny)
	if code := call(t, tiny, "POST", "/v1/campaigns/"+id3+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader("email\na@example.jp\n"), nil); code != 200 {
		t.Fatalf("small upload: %d", code)
	}
	ans = answer{}
	if code := call(t, tiny, "POST", "/v1/campaigns/"+id3+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(body), &ans); code != 413 ||
		ans.Error.Details == nil || ans.Error.Details.Total != 1 {
		t.Errorf("over a 100-byte limit: %d %+v", code, ans.Error)
	}
}

// TestUploadBreakOff sends half a body over a raw connection and closes
// it: the rows before the break stay in the campaign.
func TestUploadBreakOff(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	body := csvHeader + csvRows(1, 20000)
	half := body[:len(body)/2]
	rows := strings.Count(half, "\n") - 1 // complete rows in the half
	conn, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/campaigns/%s/recipients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s",
		id, testenv.AdminKey, len(body), half)
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for total(t, hs, id) != int64(rows) {
		if time.Now().After(deadline) {
			t.Fatalf("after break-off: %d recipients, want the %d complete rows sent", total(t, hs, id), rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The audit log says how far it got (written once the handler has seen
	// the break, a moment after the rows).
	type entry struct {
		Action  string         `json:"action"`
		Details map[string]any `json:"details"`
	}
	var found *entry
	for end := time.Now().Add(5 * time.Second); found == nil && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var audit struct {
			Entries []entry `json:"entries"`
		}
		call(t, hs, "GET", "/v1/audit?campaign="+id, nil, nil, &audit)
		for i, e := range audit.Entries {
			if e.Action == "recipients.upload" {
				found = &audit.Entries[i]
			}
		}
	}
	if found == nil {
		t.Fatal("no audit entry for the broken-off upload")
	}
	if found.Details["complete"] != false || found.Details["accepted"] != float64(rows) {
		t.Errorf("audit details %v", found.Details)
	}
}

func TestUploadJSON(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	body := `[{"email":"a@example.jp","locale":"en"},{"email":"\"a@b.c\" <evil@x.y>"},{"email":"b@example.jp","memo":"4111 1111 1111 1111"}]`
	var ans answer
	if code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "application/json"}, strings.NewReader(body), &ans); code != 200 {
		t.Fatalf("json upload: %d", code)
	}
	if ans.Accepted != 1 || ans.RejectedCount != 2 {
		t.Fatalf("answer %+v", ans)
	}
	b, _ := json.Marshal(ans)
	if bytes.Contains(b, []byte("4111")) {
		t.Errorf("answer echoes the card number: %s", b)
	}
}

// TestUploadAlreadyAddressed: an upload says which of its recipients other
// campaigns have already addressed, and which campaigns — the second
// campaign to the same people that may be a mistake.
func TestUploadAlreadyAddressed(t *testing.T) {
	hs := uploadServer(t, 0)
	ct := map[string]string{"Content-Type": "text/csv"}
	type answer struct {
		Accepted         int `json:"accepted"`
		AlreadyAddressed *struct {
			Recipients int64 `json:"recipients"`
			Campaigns  []struct {
				ID, Name, Template string
				Recipients         int64
			} `json:"campaigns"`
		} `json:"already_addressed"`
	}
	upload := func(rows string) (string, answer) {
		t.Helper()
		id := newCampaign(t, hs)
		var a answer
		if code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", ct, strings.NewReader(csvHeader+rows), &a); code != 200 {
			t.Fatalf("upload: %d", code)
		}
		return id, a
	}
	first, a1 := upload(csvRows(1, 300))
	if a1.Accepted != 300 || a1.AlreadyAddressed != nil {
		t.Fatalf("first upload: %+v", a1)
	}
	// 101..300 again (one in upper case), 301..400 new.
	second, a2 := upload(strings.Replace(csvRows(101, 300), "example.jp", "EXAMPLE.JP", 1))
	if aa := a2.AlreadyAddressed; a2.Accepted != 300 || aa == nil || aa.Recipients != 200 || len(aa.Campaigns) != 1 ||
		aa.Campaigns[0].ID != first || aa.Campaigns[0].Recipients != 200 || aa.Campaigns[0].Template != "card-reissue" || aa.Campaigns[0].Name != "upload test" {
		t.Fatalf("second upload: %+v", a2.AlreadyAddressed)
	}
	// 251..450: 251..300 in both earlier campaigns, 301..400 in the second.
	_, a3 := upload(csvRows(251, 200))
	aa := a3.AlreadyAddressed
	if aa == nil || aa.Recipients != 150 || len(aa.Campaigns) != 2 ||
		aa.Campaigns[0].ID != second || aa.Campaigns[0].Recipients != 150 || aa.Campaigns[1].ID != first || aa.Campaigns[1].Recipients != 50 {
		t.Fatalf("third upload: %+v", aa)
	}
}

// TestUploadISO2022JPRecipients: in an ISO-2022-JP campaign, a row whose
// name or extra column holds a character that charset cannot carry (髙, ①,
// emoji) is rejected at upload with its line, field and character, instead
// of failing at send time; so is a single notice's recipient.
func TestUploadISO2022JPRecipients(t *testing.T) {
	hs := uploadServer(t, 0)
	var c notice.Campaign
	camp := strings.Replace(campaignJSON, `"default_locale":"ja"`, `"default_locale":"ja","charset":"iso-2022-jp"`, 1)
	if code := call(t, hs, "POST", "/v1/campaigns", map[string]string{"Content-Type": "application/json"}, strings.NewReader(camp), &c); code != 201 {
		t.Fatalf("create: %d", code)
	}
	csv := "email,name,locale,card_last4,store\n" +
		"ok@example.jp,高橋 一郎,ja,1234,渋谷店\n" + // line 2: all JIS X 0208
		"old@example.jp,髙橋 一郎,ja,1234,渋谷店\n" + // 3: 髙 (U+9AD9) is an IBM extension
		"circ@example.jp,佐藤 花子,ja,1234,店舗①\n" + // 4: ① in an extra column
		"emoji@example.com,Ken 🙂,en,1234,\n" // 5: emoji
	var ans answer
	if code := call(t, hs, "POST", "/v1/campaigns/"+c.ID+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(csv), &ans); code != 200 {
		t.Fatalf("upload: %d %+v", code, ans)
	}
	if ans.Accepted != 1 || ans.RejectedCount != 3 {
		t.Fatalf("accepted %d, rejected %d: %v", ans.Accepted, ans.RejectedCount, ans.Rejected)
	}
	for i, want := range []struct {
		line  float64
		field string
		char  string
	}{{3, "name", "U+9AD9"}, {4, "store", "U+2460"}, {5, "name", "U+1F642"}} {
		r := ans.Rejected[i]
		if r["line"] != want.line || r["field"] != want.field || !strings.Contains(r["error"].(string), want.char) || !strings.Contains(r["error"].(string), "ISO-2022-JP") {
			t.Errorf("rejection %d: %v, want line %v field %s with %s", i, r, want.line, want.field, want.char)
		}
	}
	// The same campaign in UTF-8 takes them all.
	id := newCampaign(t, hs)
	ans = answer{}
	call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(csv), &ans)
	if ans.Accepted != 4 {
		t.Errorf("utf-8 campaign: accepted %d: %v", ans.Accepted, ans.Rejected)
	}

	// A single notice in ISO-2022-JP to 髙橋 is refused before anything is queued.
	var req map[string]any
	json.Unmarshal([]byte(campaignJSON), &req)
	body, _ := json.Marshal(map[string]any{"template": "card-reissue", "locale": "ja", "charset": "iso-2022-jp", "from": req["from"], "data": req["data"],
		"recipient": map[string]any{"email": "old@example.jp", "name": "髙橋 一郎"}})
	var e struct {
		Error struct {
			Code    string
			Details []struct{ Field, Error string }
		}
	}
	if code := call(t, hs, "POST", "/v1/notifications", map[string]string{"Content-Type": "application/json"}, bytes.NewReader(body), &e); code != 422 ||
		len(e.Error.Details) != 1 || e.Error.Details[0].Field != "recipient.name" || !strings.Contains(e.Error.Details[0].Error, "U+9AD9") {
		t.Errorf("notification to 髙橋 in ISO-2022-JP: %d %+v", code, e)
	}
}

// TestRejectionsInLineOrder: the stored rejections of an upload, fetched
// page by page, are in line order, duplicates (found by the store) among
// the parser's own.
func TestRejectionsInLineOrder(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	csv := csvHeader + "a@example.jp,A,ja,C1,VISA,1111\n" + "b@example.jp,B,fr,C2,VISA,2222\n" +
		"a@example.jp,A again,ja,C3,VISA,3333\n" + "c@example.jp,C,de,C4,VISA,4444\n"
	var ans answer
	if code := call(t, hs, "POST", "/v1/campaigns/"+id+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(csv), &ans); code != 200 || ans.RejectedCount != 3 {
		t.Fatalf("upload: %d %+v", code, ans)
	}
	var page struct {
		Rejected []struct{ Line int } `json:"rejected"`
	}
	call(t, hs, "GET", ans.RejectionsURL, nil, nil, &page)
	var lines []int
	for _, r := range page.Rejected {
		lines = append(lines, r.Line)
	}
	if fmt.Sprint(lines) != "[3 4 5]" {
		t.Errorf("stored rejections in lines %v, want [3 4 5]", lines)
	}
}
