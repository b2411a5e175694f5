package api_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// uploadedCampaign creates a campaign, uploads csv through the API (the
// path real recipients take: columns, normalisation, indexes), starts it
// and waits for it to finish.
func uploadedCampaign(t *testing.T, st *teststack.Stack, name, csv string) string {
	t.Helper()
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": name}), &c); code != 201 {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), nil); code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	return c.ID
}

const searchCSV = "email,name,name_kana,customer_id,phone,locale,card_last4\n" +
	"Taro.Yamada@Example.JP,山田 太郎,ヤマダ タロウ,C-000123,090-1234-5678,ja,1234\n" +
	"user@例え.jp,佐藤花子,サトウ ハナコ,C-000456,+81 3-1111-2222,ja,5678\n" +
	"john.smith@example.com,John Smith,,X-777,,en,9012\n"

// TestSearchRecipients: GET /v1/recipients?q= finds a customer by what
// they say on the phone, pages, and refuses a one-character query.
func TestSearchRecipients(t *testing.T) {
	st, _ := startSupportStack(t, nil)
	cid := uploadedCampaign(t, st, "card leak", searchCSV)

	search := func(q string, extra string) (int, app.SearchResult, string) {
		t.Helper()
		var res app.SearchResult
		code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/recipients?q="+url.QueryEscape(q)+extra, "", nil, &res)
		return code, res, string(body)
	}
	for _, tc := range []struct {
		q       string
		email   string
		matched string
	}{
		{"C-000123", "taro.yamada@example.jp", "customer_id"},
		{"山田", "taro.yamada@example.jp", "name"},
		{"太郎", "taro.yamada@example.jp", "name"},
		{"やまだ たろう", "taro.yamada@example.jp", "name"},
		{"花子", "user@xn--r8jz45g.jp", "name"},
		{"taro.yam", "taro.yamada@example.jp", "email"},
		{"smith", "john.smith@example.com", "email"},
		{"user@例え.jp", "user@xn--r8jz45g.jp", "email"},
		{"USER@xn--r8jz45g.jp", "user@xn--r8jz45g.jp", "email"},
		{"09012345678", "taro.yamada@example.jp", "phone"},
		{"+81-90-1234-5678", "taro.yamada@example.jp", "phone"},
		{"03 1111 2222", "user@xn--r8jz45g.jp", "phone"},
	} {
		code, res, body := search(tc.q, "")
		if code != 200 || len(res.Notices) != 1 {
			t.Errorf("q=%s: %d %s", tc.q, code, body)
			continue
		}
		n := res.Notices[0]
		if !strings.EqualFold(n.Email, tc.email) || n.Campaign.ID != cid || !slices.Contains(n.Matched, tc.matched) || n.Status != notice.StatusSent ||
			n.CurrentStatus != notice.StatusSent || n.NoticeLocale == "" {
			t.Errorf("q=%s: %+v", tc.q, n)
		}
	}
	// The exact-address look-up stays, and takes the Unicode domain too.
	for _, addr := range []string{"user@例え.jp", "user@xn--r8jz45g.jp"} {
		if res := lookup(t, st, url.QueryEscape(addr)); len(res.Notices) != 1 {
			t.Errorf("email=%s: %d notices", addr, len(res.Notices))
		}
	}
	for _, q := range []string{"", "a", "山", "1"} {
		code, _, body := search(q, "")
		if code != 400 || !strings.Contains(body, "too short") {
			t.Errorf("q=%q: %d %s, want 400 too short", q, code, body)
		}
	}
	if code, _, body := search(strings.Repeat("あ", 201), ""); code != 400 {
		t.Errorf("a long query: %d %s", code, body)
	}
	if code, _ := teststack.Do(t, st.Base, teststack.OperatorKey, "GET", "/v1/recipients?q=yamada", "", nil, nil); code != 403 {
		t.Errorf("search by an operator key: %d, want 403", code)
	}

	// Pages: 45 customers of one family name, 20 a page.
	var b strings.Builder
	b.WriteString("email,name\n")
	for i := range 45 {
		fmt.Fprintf(&b, "kato%02d@example.jp,加藤 %d\n", i, i)
	}
	uploadedCampaign(t, st, "second", b.String())
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		extra := "&limit=20"
		if cursor != "" {
			extra += "&cursor=" + cursor
		}
		code, res, body := search("加藤", extra)
		if code != 200 || res.Total != 45 || res.Truncated || len(res.Notices) > 20 {
			t.Fatalf("page %d: %d %s", page, code, body)
		}
		for _, n := range res.Notices {
			seen = append(seen, n.Email)
		}
		if cursor = res.NextCursor; cursor == "" {
			break
		}
	}
	slices.Sort(seen)
	if len(slices.Compact(seen)) != 45 {
		t.Errorf("pages gave %d distinct notices, want 45", len(seen))
	}
	if code, _, _ := search("加藤", "&limit=500"); code != 400 {
		t.Errorf("limit=500: %d, want 400", code)
	}
}
