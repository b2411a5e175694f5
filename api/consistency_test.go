package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

type errBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Field string `json:"field"`
			Error string `json:"error"`
		} `json:"details"`
	} `json:"error"`
}

func (e errBody) fields() string {
	var f []string
	for _, d := range e.Error.Details {
		f = append(f, d.Field)
	}
	return strings.Join(f, ",")
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

// TestPagingEverywhere: every list takes limit and cursor the same way and
// refuses bad ones with a 400 naming the parameter.
func TestPagingEverywhere(t *testing.T) {
	hs, _ := contentServer(t)
	cid := newCampaign(t, hs)
	lists := []string{"/v1/campaigns", "/v1/campaigns/" + cid + "/recipients", "/v1/campaigns/" + cid + "/rejections", "/v1/suppressions", "/v1/audit"}
	for _, l := range lists {
		for _, tc := range []struct{ query, code, field string }{
			{"limit=0", "bad_limit", "limit"}, {"limit=x", "bad_limit", "limit"}, {"limit=100000", "bad_limit", "limit"},
			{"cursor=not-a-cursor", "bad_cursor", "cursor"}, {"offset=10", "bad_param", "offset"},
		} {
			var e errBody
			if code := call(t, hs, "GET", l+"?"+tc.query, nil, nil, &e); code != 400 || e.Error.Code != tc.code || e.fields() != tc.field || e.Error.Message == "" {
				t.Errorf("GET %s?%s: %d %+v, want 400 %s naming %s", l, tc.query, code, e, tc.code, tc.field)
			}
		}
		var page map[string]json.RawMessage
		if code := call(t, hs, "GET", l+"?limit=1", nil, nil, &page); code != 200 {
			t.Errorf("GET %s?limit=1: %d", l, code)
		} else if _, ok := page["next_cursor"]; !ok {
			t.Errorf("GET %s: no next_cursor in %v", l, page)
		}
	}
}

// TestCampaignListPages pages through campaigns by cursor, with and
// without ?status=: each once, newest first, none skipped.
func TestCampaignListPages(t *testing.T) {
	hs, _ := contentServer(t)
	var ids []string
	for range 7 {
		ids = append([]string{newCampaign(t, hs)}, ids...) // newest first
	}
	var cancelled []string
	for _, i := range []int{1, 4, 5} {
		if code := call(t, hs, "POST", "/v1/campaigns/"+ids[i]+"/cancel", nil, nil, nil); code != 200 {
			t.Fatalf("cancel: %d", code)
		}
		cancelled = append(cancelled, ids[i])
	}
	walk := func(query string) []string {
		var got []string
		cursor := ""
		for range 20 {
			var page struct {
				Campaigns  []notice.Campaign `json:"campaigns"`
				NextCursor *string           `json:"next_cursor"`
			}
			if code := call(t, hs, "GET", "/v1/campaigns?limit=2&"+query+"&cursor="+cursor, nil, nil, &page); code != 200 {
				t.Fatalf("list %s: %d", query, code)
			}
			for _, c := range page.Campaigns {
				got = append(got, c.ID)
			}
			if page.NextCursor == nil {
				return got
			}
			cursor = *page.NextCursor
		}
		t.Fatal("no end to the pages")
		return nil
	}
	// The order of one whole page (newest first; campaigns made in the
	// same millisecond in a fixed order of their own) is the order paging
	// must give, each once.
	var whole struct{ Campaigns []notice.Campaign }
	call(t, hs, "GET", "/v1/campaigns?limit=200", nil, nil, &whole)
	var order, cancelledOrder []string
	for i, c := range whole.Campaigns {
		if i > 0 && c.CreatedAt.After(whole.Campaigns[i-1].CreatedAt) {
			t.Errorf("not newest first: %v after %v", c.CreatedAt, whole.Campaigns[i-1].CreatedAt)
		}
		order = append(order, c.ID)
		if slices.Contains(cancelled, c.ID) {
			cancelledOrder = append(cancelledOrder, c.ID)
		}
	}
	if len(order) != len(ids) || len(cancelledOrder) != len(cancelled) {
		t.Fatalf("whole list %v, want the %d campaigns made", order, len(ids))
	}
	if got := walk(""); strings.Join(got, ",") != strings.Join(order, ",") {
		t.Errorf("all campaigns by pages of 2: %v, want %v", got, order)
	}
	if got := walk("status=cancelled"); strings.Join(got, ",") != strings.Join(cancelledOrder, ",") {
		t.Errorf("cancelled campaigns by pages of 2: %v, want %v", got, cancelledOrder)
	}
	var e errBody
	if code := call(t, hs, "GET", "/v1/campaigns?status=finished", nil, nil, &e); code != 400 || e.fields() != "status" {
		t.Errorf("?status=finished: %d %+v", code, e)
	}
}

// TestCreatedHasLocation: every 201 says where the new thing is, and it is
// there.
func TestCreatedHasLocation(t *testing.T) {
	hs, _ := contentServer(t)
	for _, tc := range []struct{ path, body string }{
		{"/v1/campaigns", campaignJSON},
		{"/v1/suppressions", `{"email":"Someone@Example.jp","reason":"asked by phone"}`},
	} {
		req := strings.NewReader(tc.body)
		resp := do(t, hs, "POST", tc.path, req)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != 201 || loc == "" {
			t.Fatalf("POST %s: %d, Location %q", tc.path, resp.StatusCode, loc)
		}
		if code := call(t, hs, "GET", loc, nil, nil, nil); code != 200 {
			t.Errorf("GET %s (Location of POST %s): %d", loc, tc.path, code)
		}
	}
}

// TestOneDetailPerBadField: each bad field has its own details entry.
func TestOneDetailPerBadField(t *testing.T) {
	hs, _ := contentServer(t)
	for _, tc := range []struct{ method, path, body, fields string }{
		{"POST", "/v1/suppressions", `{"email":"not an address","reason":" "}`, "email,reason"},
		{"POST", "/v1/campaigns", `{"name":"x","from":"Example <notice@example.jp>","data":{},"unknown":1}`, "unknown"},
		{"POST", "/v1/campaigns", `{"name":1,"from":"Example <notice@example.jp>","data":{}}`, "name"},
		{"POST", "/v1/campaigns", `{"name":"","default_locale":"fr","from":"nobody","charset":"latin-1","data":{}}`, "name,default_locale,from,charset"},
	} {
		var e errBody
		call(t, hs, tc.method, tc.path, jsonCT, strings.NewReader(tc.body), &e)
		if got := e.fields(); got != tc.fields {
			t.Errorf("%s %s %s: details name %q, want %q (%+v)", tc.method, tc.path, tc.body, got, tc.fields, e)
		}
	}
}

// TestDraftEditAndDelete: a draft can be changed and deleted; a campaign
// that has started cannot (409 not_draft, saying what it is).
func TestDraftEditAndDelete(t *testing.T) {
	hs, st := contentServer(t)
	cid := newCampaign(t, hs)
	var c notice.Campaign
	if code := call(t, hs, "PATCH", "/v1/campaigns/"+cid, jsonCT, strings.NewReader(`{"name":"renamed","time_zone":"Europe/London","reply_to":"help@example.jp"}`), &c); code != 200 ||
		c.Name != "renamed" || c.TimeZone != "Europe/London" || c.ReplyTo != "help@example.jp" || c.Template != "card-reissue" || c.Data["company"] != "Example" {
		t.Fatalf("patch: %d %+v", code, c)
	}
	var reset notice.Campaign
	if code := call(t, hs, "PATCH", "/v1/campaigns/"+cid, map[string]string{"Content-Type": "application/merge-patch+json"}, strings.NewReader(`{"reply_to":null}`), &reset); code != 200 ||
		reset.ReplyTo != "" || reset.Name != "renamed" {
		t.Fatalf("patch reply_to null: %d %+v", code, reset)
	}
	for _, tc := range []struct {
		body   string
		status int
		fields string
	}{
		{`{"nmae":"typo"}`, 400, "nmae"},
		{`{"time_zone":"Mars/Base","default_locale":"fr"}`, 422, "default_locale,time_zone"},
		{`{"data":{"company":"Example"}}`, 422, ""}, // data replaced whole: what the notice must state is missing
		{`{}`, 422, ""},
	} {
		var e errBody
		code := call(t, hs, "PATCH", "/v1/campaigns/"+cid, jsonCT, strings.NewReader(tc.body), &e)
		if code != tc.status || (tc.fields != "" && e.fields() != tc.fields) {
			t.Errorf("patch %s: %d %+v, want %d naming %q", tc.body, code, e, tc.status, tc.fields)
		}
	}
	var got notice.Campaign
	call(t, hs, "GET", "/v1/campaigns/"+cid, nil, nil, &got)
	if got.Name != "renamed" || got.TimeZone != "Europe/London" || got.Data["cause"] == nil || got.Status != notice.CampaignDraft {
		t.Errorf("after refused patches: %+v", got)
	}

	// Started: neither changes nor goes.
	if code := call(t, hs, "POST", "/v1/campaigns/"+cid+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(csvHeader+csvRows(1, 3)), nil); code != 200 {
		t.Fatalf("upload: %d", code)
	}
	if code := call(t, hs, "POST", "/v1/campaigns/"+cid+"/start", nil, nil, nil); code != 202 {
		t.Fatalf("start: %d", code)
	}
	for _, m := range []string{"PATCH", "DELETE"} {
		var e errBody
		code := call(t, hs, m, "/v1/campaigns/"+cid, jsonCT, strings.NewReader(`{"name":"too late"}`), &e)
		if code != 409 || e.Error.Code != "not_draft" || !strings.Contains(e.Error.Message, "is sending") || !strings.Contains(e.Error.Message, "only a draft") {
			t.Errorf("%s a sending campaign: %d %+v", m, code, e)
		}
	}

	// A draft with recipients is deleted, and its recipients with it.
	d := newCampaign(t, hs)
	if code := call(t, hs, "POST", "/v1/campaigns/"+d+"/recipients", map[string]string{"Content-Type": "text/csv"}, strings.NewReader(csvHeader+csvRows(100, 2)), nil); code != 200 {
		t.Fatalf("upload: %d", code)
	}
	if code := call(t, hs, "DELETE", "/v1/campaigns/"+d, nil, nil, nil); code != 204 {
		t.Fatalf("delete draft: %d", code)
	}
	if code := call(t, hs, "GET", "/v1/campaigns/"+d, nil, nil, nil); code != 404 {
		t.Errorf("deleted draft: GET %d, want 404", code)
	}
	if refs, err := st.Lookup(t.Context(), "user100@example.jp"); err != nil || len(refs) != 0 {
		t.Errorf("deleted draft's recipient still in the look-up index: %v %v", refs, err)
	}
	var list struct{ Campaigns []notice.Campaign }
	call(t, hs, "GET", "/v1/campaigns", nil, nil, &list)
	for _, c := range list.Campaigns {
		if c.ID == d {
			t.Errorf("deleted draft still listed")
		}
	}
	var audit struct {
		Entries []store.AuditEntry `json:"entries"`
	}
	call(t, hs, "GET", "/v1/audit?campaign="+d, nil, nil, &audit)
	if len(audit.Entries) == 0 || audit.Entries[0].Action != "campaign.delete" {
		t.Errorf("delete not audited: %+v", audit.Entries)
	}
	if code := call(t, hs, "DELETE", "/v1/campaigns/"+d, nil, nil, nil); code != 404 {
		t.Errorf("delete again: %d, want 404", code)
	}
}

// do sends an admin's JSON request and returns the answer (body closed).
func do(t *testing.T, hs *httptest.Server, method, path string, body io.Reader) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+testenv.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
