package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

func templateServer(t *testing.T) *httptest.Server {
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
	srv := api.New(api.Config{}, store.New(rdb, "tpl"), asynq.NewClientFromRedisClient(rdb), ts, auth.NewKeys(keys), nil, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs
}

func tplDo(t *testing.T, hs *httptest.Server, key, method, path, body string, out any) int {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, hs.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type tplPreview struct {
	Template, Locale, Charset, Recipient, Subject, Text, HTML string
	CharsetOK                                                 bool `json:"charset_ok"`
	Problems                                                  []struct {
		Part, Char, Code string
		Line, Col        int
	} `json:"charset_problems"`
}

func TestListTemplates(t *testing.T) {
	hs := templateServer(t)
	for _, key := range []string{testenv.AdminKey, testenv.SupportKey, testenv.OperatorKey} {
		var out struct{ Templates []templates.Info }
		if code := tplDo(t, hs, key, "GET", "/v1/templates", "", &out); code != 200 {
			t.Fatalf("status %d", code)
		}
		names := map[string]templates.Info{}
		for _, i := range out.Templates {
			names[i.Name] = i
		}
		for _, n := range []string{"card-reissue", "password-reset", "incident-update"} {
			info, ok := names[n]
			if !ok || len(info.Fields) == 0 || len(info.Locales) != 2 {
				t.Errorf("template %s missing or without fields/locales: %+v", n, info)
			}
		}
		var company bool
		for _, f := range names["card-reissue"].Fields {
			company = company || f.Name == "company" && f.Required
		}
		if !company {
			t.Error("card-reissue does not list its required field company")
		}
	}
	if code := tplDo(t, hs, "wrong-key-0123456789", "GET", "/v1/templates", "", nil); code != 401 {
		t.Errorf("bad key: %d, want 401", code)
	}
}

func TestPreviewTemplate(t *testing.T) {
	hs := templateServer(t)
	var p tplPreview
	body := `{"locale":"ja","recipient":{"email":"hanako@example.jp","name":"<b>佐藤 花子</b>","card_brand":"JCB","card_last4":"9876"},
		"extra_paragraphs":["<script>x</script> 追記です。"]}`
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/templates/card-reissue/preview", body, &p); code != 200 {
		t.Fatalf("status %d: %+v", code, p)
	}
	if !strings.HasPrefix(p.Subject, "【重要】") || !strings.Contains(p.Text, "9876") || !strings.Contains(p.Text, "再発行") {
		t.Errorf("subject %q / text lacks the card or 再発行:\n%s", p.Subject, p.Text)
	}
	if !strings.Contains(p.HTML, "&lt;b&gt;佐藤 花子&lt;/b&gt;") || strings.Contains(p.HTML, "<script>x") || !strings.Contains(p.HTML, "追記です") {
		t.Errorf("HTML does not escape the name and paragraph:\n%s", p.HTML)
	}
	if p.Charset != "utf-8" || !p.CharsetOK || p.Recipient != "request" {
		t.Errorf("charset %q ok %v recipient %q", p.Charset, p.CharsetOK, p.Recipient)
	}

	// English, the template's sample data, iso-2022-jp with a ① in a paragraph.
	p = tplPreview{}
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/templates/password-reset/preview",
		`{"locale":"en","charset":"iso-2022-jp","extra_paragraphs":["See note ①."]}`, &p); code != 200 {
		t.Fatalf("status %d", code)
	}
	if !strings.HasPrefix(p.Subject, "[Important]") || p.CharsetOK || len(p.Problems) == 0 {
		t.Fatalf("want an English notice with charset problems: %+v", p)
	}
	var found bool
	for _, pr := range p.Problems {
		found = found || pr.Char == "①" && pr.Code == "U+2460" && pr.Line > 0 && pr.Col > 0
	}
	if !found {
		t.Errorf("① not reported: %+v", p.Problems)
	}

	for _, tt := range []struct {
		key, path, body string
		want            int
	}{
		{testenv.SupportKey, "/v1/templates/card-reissue/preview", `{"locale":"ja"}`, 403},
		{testenv.OperatorKey, "/v1/templates/card-reissue/preview", `{"locale":"ja"}`, 403},
		{testenv.AdminKey, "/v1/templates/no-such/preview", `{"locale":"ja"}`, 404},
		{testenv.AdminKey, "/v1/templates/card-reissue/preview", `{"locale":"fr"}`, 400},
		{testenv.AdminKey, "/v1/templates/card-reissue/preview", `{"locale":"ja","charset":"shift_jis"}`, 400},
		{testenv.AdminKey, "/v1/templates/card-reissue/preview", `{"locale":"ja","data":{"company":"X"}}`, 422},
		{testenv.AdminKey, "/v1/templates/card-reissue/preview", `{"locale":"ja","dat":{}}`, 400},
	} {
		var e struct {
			Error struct{ Code, Message string }
		}
		if code := tplDo(t, hs, tt.key, "POST", tt.path, tt.body, &e); code != tt.want || e.Error.Code == "" {
			t.Errorf("%s %s: %d %+v, want %d with an error code", tt.path, tt.body, code, e, tt.want)
		}
	}
}

func TestPreviewCampaign(t *testing.T) {
	hs := templateServer(t)
	var c struct{ ID string }
	camp := strings.Replace(campaignJSON, `"default_locale":"ja"`, `"default_locale":"ja","charset":"iso-2022-jp","extra_paragraphs":["お問い合わせは平日のみ。"]`, 1)
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", camp, &c); code != 201 {
		t.Fatalf("create: %d", code)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/v1/campaigns/"+c.ID+"/recipients", bytes.NewBufferString(
		"email,name,locale,card_brand,card_last4\nken@example.com,Ken Smith,en,VISA,4321\nhanako@example.jp,佐藤 花子,ja,JCB,9876\n"))
	req.Header.Set("Authorization", "Bearer "+testenv.AdminKey)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", err, resp.Status)
	}
	resp.Body.Close()

	var p tplPreview
	if code := tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/preview", "", &p); code != 200 {
		t.Fatalf("status %d", code)
	}
	if p.Locale != "ja" || p.Recipient != "sample" || !strings.Contains(p.Text, "山田") || !strings.Contains(p.Text, "平日のみ") || p.Charset != "iso-2022-jp" || !p.CharsetOK {
		t.Errorf("sample preview: %+v", p)
	}
	p = tplPreview{}
	tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/preview?locale=en", "", &p)
	if p.Locale != "en" || !strings.Contains(p.Text, "Taro Yamada") {
		t.Errorf("English sample preview: %+v", p)
	}
	p = tplPreview{}
	tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/preview?recipient_id=1", "", &p)
	if p.Locale != "en" || p.Recipient != "1" || !strings.Contains(p.Text, "Ken Smith") || !strings.Contains(p.Text, "4321") {
		t.Errorf("recipient 1 preview (en from the recipient): %+v", p)
	}
	p = tplPreview{}
	tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/preview?recipient_id=2&locale=ja", "", &p)
	if p.Locale != "ja" || !strings.Contains(p.Text, "佐藤 花子") || !strings.Contains(p.Text, "9876") {
		t.Errorf("recipient 2 preview: %+v", p)
	}
	for _, tt := range []struct {
		key, q string
		want   int
	}{
		{testenv.SupportKey, "", 403},
		{testenv.OperatorKey, "", 403},
		{testenv.AdminKey, "?recipient_id=99", 404},
		{testenv.AdminKey, "?recipient_id=x", 400},
		{testenv.AdminKey, "?locale=de", 400},
	} {
		if code := tplDo(t, hs, tt.key, "GET", "/v1/campaigns/"+c.ID+"/preview"+tt.q, "", nil); code != tt.want {
			t.Errorf("%s: %d, want %d", tt.q, code, tt.want)
		}
	}
	if code := tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/nope/preview", "", nil); code != 404 {
		t.Errorf("unknown campaign: %d", code)
	}
}

// TestCampaignTimeZone: a notice is dated in the company's time zone
// (time_zone, default Asia/Tokyo), not the server's: the same moment is a
// different day at UTC+14 and at UTC−11.
func TestCampaignTimeZone(t *testing.T) {
	hs := templateServer(t)
	for _, zone := range []string{"Pacific/Kiritimati", "Pacific/Pago_Pago", ""} {
		var c struct {
			ID       string
			TimeZone string `json:"time_zone"`
		}
		camp := strings.Replace(campaignJSON, `"default_locale":"ja"`, `"default_locale":"ja","time_zone":"`+zone+`"`, 1)
		if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", camp, &c); code != 201 {
			t.Fatalf("create with time_zone %q: %d", zone, code)
		}
		want := zone
		if want == "" {
			want = "Asia/Tokyo"
		}
		if c.TimeZone != want {
			t.Errorf("time_zone %q, want %q", c.TimeZone, want)
		}
		loc, _ := time.LoadLocation(want)
		before := time.Now().In(loc)
		var p tplPreview
		tplDo(t, hs, testenv.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/preview", "", &p)
		after := time.Now().In(loc)
		day := func(d time.Time) string { return fmt.Sprintf("%d年%d月%d日", d.Year(), int(d.Month()), d.Day()) }
		if !strings.Contains(p.Text, day(before)) && !strings.Contains(p.Text, day(after)) {
			t.Errorf("time_zone %s: the notice is not dated %s:\n%s", want, day(before), p.Text)
		}
	}
	var e struct {
		Error struct{ Details []struct{ Field string } }
	}
	camp := strings.Replace(campaignJSON, `"default_locale":"ja"`, `"default_locale":"ja","time_zone":"Mars/Olympus"`, 1)
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", camp, &e); code != 422 || len(e.Error.Details) != 1 || e.Error.Details[0].Field != "time_zone" {
		t.Errorf("unknown time zone: %d %+v", code, e)
	}
}

// TestISO2022JPSenderName: in an ISO-2022-JP campaign, a sender's display
// name with a character the charset cannot carry (㈱) is refused at creation;
// it would fail every message.
func TestISO2022JPSenderName(t *testing.T) {
	hs := templateServer(t)
	camp := strings.Replace(campaignJSON, `"default_locale":"ja"`, `"default_locale":"ja","charset":"iso-2022-jp"`, 1)
	var req map[string]any
	json.Unmarshal([]byte(camp), &req)
	req["from"] = "㈱サンプル <notice@example.jp>"
	req["reply_to"] = "株式会社サンプル <support@example.jp>"
	b, _ := json.Marshal(req)
	var e struct {
		Error struct {
			Details []struct{ Field, Error string }
		}
	}
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", string(b), &e); code != 422 || len(e.Error.Details) != 1 ||
		e.Error.Details[0].Field != "from" || !strings.Contains(e.Error.Details[0].Error, "U+3231") {
		t.Errorf("㈱ in the sender's name: %d %+v", code, e)
	}
	req["from"] = "株式会社サンプル <notice@example.jp>"
	b, _ = json.Marshal(req)
	if code := tplDo(t, hs, testenv.AdminKey, "POST", "/v1/campaigns", string(b), nil); code != 201 {
		t.Errorf("株式会社 in the sender's name: %d", code)
	}
}
