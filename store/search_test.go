package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// TestSearch finds recipients the way callers identify themselves, across
// campaigns, through the index alone; refuses one-character queries; and
// forgets them with a purge.
func TestSearch(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c1 := newCampaign(t, s, 0)
	c2 := newCampaign(t, s, 0)
	add := func(cid string, rs ...notice.Recipient) []int64 {
		t.Helper()
		res, err := s.AddRecipients(ctx, cid, rs)
		if err != nil {
			t.Fatal(err)
		}
		return res.IDs
	}
	ids1 := add(c1.ID,
		notice.Recipient{Email: "Taro.Yamada@Example.JP", Name: "山田 太郎", CustomerID: "C-000123",
			Extra: map[string]string{"name_kana": "ヤマダ タロウ", "phone": "090-1234-5678", "store": "渋谷"}},
		notice.Recipient{Email: "hanako@例え.jp", Name: "佐藤花子", CustomerID: "C-000456",
			Extra: map[string]string{"tel": "+81 3 1111 2222"}},
		notice.Recipient{Email: "john.smith@example.com", Name: "John Smith", CustomerID: "X9"},
	)
	ids2 := add(c2.ID, notice.Recipient{Email: "taro.yamada@example.jp", Name: "Taro YAMADA"})

	type hit struct {
		cid string
		rid int64
	}
	taro1, hanako, john, taro2 := hit{c1.ID, ids1[0]}, hit{c1.ID, ids1[1]}, hit{c1.ID, ids1[2]}, hit{c2.ID, ids2[0]}
	for _, tc := range []struct {
		q     string
		want  []hit // newest campaign first
		field string
	}{
		{"C-000123", []hit{taro1}, "customer_id"},
		{"c000123", []hit{taro1}, "customer_id"},
		{"Ｃ－０００４", []hit{hanako}, "customer_id"}, // full-width, a prefix
		{"山田 太郎", []hit{taro1}, "name"},
		{"山田", []hit{taro1}, "name"},
		{"太郎", []hit{taro1}, "name"},             // the given name alone
		{"花子", []hit{hanako}, "name"},            // written without a space
		{"やまだ", []hit{taro1}, "name"},            // hiragana finds the katakana reading
		{"ﾔﾏﾀﾞ ﾀﾛｳ", []hit{taro1}, "name"},       // half-width katakana
		{"yamada", []hit{taro2, taro1}, "email"}, // a word of the address (and c2's name)
		{"smith", []hit{john}, "name"},
		{"taro.yam", []hit{taro2, taro1}, "email"},
		{"TARO.YAMADA@EXAMPLE.JP", []hit{taro2, taro1}, "email"},
		{"hanako@例え.jp", []hit{hanako}, "email"},
		{"hanako@xn--r8jz45g.jp", []hit{hanako}, "email"},
		{"090-1234-5678", []hit{taro1}, "phone"},
		{"+81 90 1234 5678", []hit{taro1}, "phone"},
		{"9012345678", []hit{taro1}, "phone"},
		{"03-1111-2222", []hit{hanako}, "phone"},
		{"0312", nil, ""},
		{"渋谷", nil, ""}, // other extra columns are not searched
		{"nobody", nil, ""},
	} {
		res, err := s.Search(ctx, tc.q)
		if err != nil {
			t.Errorf("search %q: %v", tc.q, err)
			continue
		}
		var got []hit
		for _, m := range res.Matches {
			got = append(got, hit{m.CampaignID, m.RecipientID})
			if tc.field != "" && m.Ref == (store.Ref{CampaignID: tc.want[len(tc.want)-1].cid, RecipientID: tc.want[len(tc.want)-1].rid}) &&
				!slices.Contains(m.Fields, tc.field) {
				t.Errorf("search %q: matched %v, want %s among them", tc.q, m.Fields, tc.field)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("search %q: %v, want %v", tc.q, got, tc.want)
		}
	}

	for _, q := range []string{"", "a", "山", " 1 ", "ab"} {
		var qe *store.ErrQuery
		if _, err := s.Search(ctx, q); !errors.As(err, &qe) {
			t.Errorf("search %q: %v, want a refusal", q, err)
		}
	}

	// A resend to a corrected address is found by it too.
	if _, err := s.AddResend(ctx, c2.ID, ids2[0], notice.Resend{Email: "new.address@example.org", Reason: "moved"}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Search(ctx, "new.addr"); err != nil || len(res.Matches) != 1 || res.Matches[0].RecipientID != ids2[0] {
		t.Fatalf("search for the corrected address: %+v %v", res, err)
	}

	// A purge takes the index with the rest of the personal data.
	tr, _ := s.Start(ctx, c1.ID)
	_ = tr
	if _, err := s.Cancel(ctx, c1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, c1.ID); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"山田", "090-1234-5678", "C-000123", "hanako"} {
		if res, err := s.Search(ctx, q); err != nil || slices.ContainsFunc(res.Matches, func(m store.Match) bool { return m.CampaignID == c1.ID }) {
			t.Errorf("search %q after purge: %+v %v", q, res, err)
		}
	}
	if n, _ := s.SearchIndexBytes(ctx, c1.ID); n != 0 {
		t.Errorf("search index after purge: %d bytes", n)
	}
}

// TestSearchBounded: a query that matches more than MaxSearchMatches stops
// there and says so.
func TestSearchBounded(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 0)
	var rs []notice.Recipient
	for i := range store.MaxSearchMatches + 50 {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("same%04d@example.jp", i), Name: "鈴木 一郎"})
	}
	if _, err := s.AddRecipients(ctx, c.ID, rs); err != nil {
		t.Fatal(err)
	}
	res, err := s.Search(ctx, "鈴木")
	if err != nil || len(res.Matches) != store.MaxSearchMatches || !res.Truncated {
		t.Fatalf("broad search: %d matches, truncated %v, %v", len(res.Matches), res.Truncated, err)
	}
	if res, err := s.Search(ctx, "same0249"); err != nil || len(res.Matches) != 1 || res.Truncated {
		t.Fatalf("narrow search: %+v %v", res, err)
	}
}

// TestSearchIndexMemory measures what the search index costs per
// recipient (reported in docs/support.md): go test -run
// TestSearchIndexMemory -v ./store/
func TestSearchIndexMemory(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := newCampaign(t, s, 0)
	const n = 20000
	given := []string{"太郎", "花子", "一郎", "美咲"}
	kana := []string{"タロウ", "ハナコ", "イチロウ", "ミサキ"}
	for from := 0; from < n; from += 500 {
		var rs []notice.Recipient
		for i := from; i < from+500; i++ {
			rs = append(rs, notice.Recipient{
				Email: fmt.Sprintf("customer.%06d@example.jp", i), Name: fmt.Sprintf("山田%d %s", i%97, given[i%4]),
				CustomerID: fmt.Sprintf("C-%08d", i),
				Extra:      map[string]string{"name_kana": "ヤマダ " + kana[i%4], "phone": fmt.Sprintf("090-%04d-%04d", i/10000, i%10000)},
			})
		}
		if _, err := s.AddRecipients(ctx, c.ID, rs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := s.SearchIndexBytes(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	per := float64(b) / n
	t.Logf("search index: %d bytes for %d recipients, %.0f bytes per recipient", b, n, per)
	for _, q := range []string{"やまだ", "C-00012345", "090-0001-2345", "customer.0199"} {
		start := time.Now()
		res, err := s.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("search %q: %d matches (truncated %v) in %v", q, len(res.Matches), res.Truncated, time.Since(start))
	}
	if per > 1500 {
		t.Errorf("search index takes %.0f bytes per recipient, want at most 1500", per)
	}
}
