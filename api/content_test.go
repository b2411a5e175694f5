package api_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// contentServer is an API that signs for dkimDomains, and its store.
func contentServer(t *testing.T, dkimDomains ...string) (*httptest.Server, *store.Store) {
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
	st := store.New(rdb, "content")
	srv := api.New(api.Config{DKIMDomains: dkimDomains}, st, asynq.NewClientFromRedisClient(rdb), ts, auth.NewKeys(keys), nil, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs, st
}

type apiErr struct {
	Error struct {
		Code    string
		Message string
		Details []struct{ Field, Error string }
	}
}

func (e apiErr) fields() map[string]string {
	m := make(map[string]string)
	for _, d := range e.Error.Details {
		m[d.Field] = d.Error
	}
	return m
}

// campaignWith is campaignJSON with its top-level fields and data fields
// changed: a nil value deletes.
func campaignWith(t *testing.T, top, data map[string]any) string {
	t.Helper()
	var req map[string]any
	if err := json.Unmarshal([]byte(campaignJSON), &req); err != nil {
		t.Fatal(err)
	}
	for k, v := range top {
		req[k] = v
		if v == nil {
			delete(req, k)
		}
	}
	d := req["data"].(map[string]any)
	for k, v := range data {
		d[k] = v
		if v == nil {
			delete(d, k)
		}
	}
	b, _ := json.Marshal(req)
	return string(b)
}

// TestCampaignDataChecks: a campaign without what APPI requires a notice
// to state (cause, secondary_harm) is refused with a 422 naming every
// missing item and why; so are links a phishing-aware reader should not
// trust, an address with a query, and a period that ends before it starts.
func TestCampaignDataChecks(t *testing.T) {
	hs, _ := contentServer(t)
	for _, tt := range []struct {
		name string
		data map[string]any
		want map[string]string // field → a phrase its error has
	}{
		{"APPI items missing", map[string]any{"cause": nil, "secondary_harm": nil},
			map[string]string{"data.cause": "APPI", "data.secondary_harm": "二次被害"}},
		{"cause empty", map[string]any{"cause": " "}, map[string]string{"data.cause": "must not be empty"}},
		{"javascript: link", map[string]any{"url": "javascript:alert(1)"}, map[string]string{"data.url": "https://"}},
		{"http link", map[string]any{"url": "http://www.example.jp/notice"}, map[string]string{"data.url": "https://"}},
		{"credentials in link", map[string]any{"url": "https://www.example.jp@evil.example/"}, map[string]string{"data.url": "password"}},
		{"address with a query", map[string]any{"contact_email": "support@example.jp?bcc=all@example.com"}, map[string]string{"data.contact_email": "?"}},
		{"period reversed", map[string]any{"period_start": "2019-05-28", "period_end": "2009-05-01"}, map[string]string{"data.period_start": "period_end"}},
		{"all at once", map[string]any{"cause": nil, "url": "javascript:x", "contact_email": "a@b.example?x"},
			map[string]string{"data.cause": "required", "data.url": "https", "data.contact_email": "address"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e apiErr
			code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, nil, tt.data), &e)
			got := e.fields()
			if code != 422 || len(got) != len(tt.want) {
				t.Fatalf("%d %+v, want 422 naming %v", code, e, tt.want)
			}
			for f, phrase := range tt.want {
				if !strings.Contains(got[f], phrase) {
					t.Errorf("%s: %q, want it to say %q", f, got[f], phrase)
				}
			}
		})
	}
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, nil, map[string]any{"cause": "調査中です。判明し次第お知らせいたします。"}), nil); code != 201 {
		t.Errorf("a cause under investigation: %d, want 201", code)
	}
}

// TestStartChecksRequiredItems: a draft stored before the template
// required cause and secondary_harm cannot be started: 422 naming both.
func TestStartChecksRequiredItems(t *testing.T) {
	hs, st := contentServer(t)
	var req struct {
		Data map[string]any `json:"data"`
	}
	json.Unmarshal([]byte(campaignJSON), &req)
	delete(req.Data, "cause")
	delete(req.Data, "secondary_harm")
	c := &notice.Campaign{Name: "old draft", Template: "card-reissue", DefaultLocale: "ja", From: "Example <notice@example.jp>", Charset: "utf-8", Data: req.Data}
	if err := st.CreateCampaign(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	var e apiErr
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", &e); code != 422 {
		t.Fatalf("start: %d %+v, want 422", code, e)
	}
	if f := e.fields(); len(f) != 2 || !strings.Contains(f["data.cause"], "required") || !strings.Contains(f["data.secondary_harm"], "required") {
		t.Errorf("start error %+v, want data.cause and data.secondary_harm", e)
	}
	got, _ := st.Campaign(context.Background(), c.ID)
	if got.Status != notice.CampaignDraft {
		t.Errorf("status %s after a refused start, want draft", got.Status)
	}
}

// TestDMARCAlignment: with signing on, a From domain that no key signs for
// is refused at create (DMARC would fail at Gmail and Yahoo); a signing
// domain and its subdomains are accepted.
func TestDMARCAlignment(t *testing.T) {
	hs, _ := contentServer(t, "example.jp", "example.co.jp")
	for _, tt := range []struct {
		from string
		want int
	}{
		{"Example <notice@example.jp>", 201},
		{"Example <notice@news.example.jp>", 201},
		{"Example <notice@example.co.jp>", 201},
		{"Example <notice@example.com>", 422},
		{"Example <notice@notexample.jp>", 422},
	} {
		var e apiErr
		code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, map[string]any{"from": tt.from}, nil), &e)
		if code != tt.want {
			t.Errorf("%s: %d %+v, want %d", tt.from, code, e, tt.want)
			continue
		}
		if code == 422 && !strings.Contains(e.fields()["from"], "DMARC") {
			t.Errorf("%s: %+v, want the from error to say why (DMARC)", tt.from, e)
		}
	}
	// Without signing nothing is checked.
	hs, _ = contentServer(t)
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, map[string]any{"from": "X <n@example.com>"}, nil), nil); code != 201 {
		t.Errorf("no DKIM: %d, want 201", code)
	}
}

// TestFromPerLocale: "from" may be given per locale, so that English
// readers see an English sender name; the address must stay the same.
func TestFromPerLocale(t *testing.T) {
	hs, _ := contentServer(t, "example.jp")
	var c notice.Campaign
	from := map[string]any{"ja": "株式会社サンプル <notice@example.jp>", "en": `"Sample Co., Ltd." <notice@example.jp>`}
	var raw json.RawMessage
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, map[string]any{"from": from}, nil), &raw); code != 201 {
		t.Fatalf("create: %d %s", code, raw)
	}
	json.Unmarshal(raw, &c)
	if c.FromFor("ja") != from["ja"] || c.FromFor("en") != from["en"] || c.From != from["ja"] {
		t.Errorf("campaign from %q, per locale %v", c.From, c.FromLocales)
	}
	for _, tt := range []struct {
		from  map[string]any
		field string
	}{
		{map[string]any{"ja": "A <a@example.jp>", "en": "B <b@example.jp>"}, "from.en"},
		{map[string]any{"ja": "A <a@example.jp>"}, "from.en"},
		{map[string]any{"ja": "A <a@example.jp>", "en": "B <a@example.jp>", "fr": "C <a@example.jp>"}, "from.fr"},
		{map[string]any{"ja": "A <a@example.com>", "en": "B <a@example.com>"}, "from"},
		{map[string]any{"ja": "A <a@example.jp>", "en": "Sample Co., Ltd. <a@example.jp>"}, "from.en"},
	} {
		var e apiErr
		if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", campaignWith(t, map[string]any{"from": tt.from}, nil), &e); code != 422 || e.fields()[tt.field] == "" {
			t.Errorf("from %v: %d %+v, want 422 naming %s", tt.from, code, e, tt.field)
		}
	}
}
