package api_test

// Issue 13: a stolen key, a careless paste, a hostile file. Each test sends
// the attack as an outsider would — over HTTP, to a whole running service
// with a worker and an SMTP server — and checks what it gets.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"

	"github.com/oshirase/oshirase/internal/testenv"
)

// send is teststack.Do that also returns the answer's headers and lets a
// test set its own (basic auth, a form).
func send(t *testing.T, method, u string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// metric reads one sample from /metrics ("" when absent).
func metric(t *testing.T, st *teststack.Stack, name string, labels ...string) float64 {
	t.Helper()
	_, body := teststack.Do(t, st.Base, teststack.OperatorKey, "GET", "/metrics", "", nil, nil)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		ok := true
		for _, l := range labels {
			if !strings.Contains(m[1], l) {
				ok = false
			}
		}
		if ok {
			f, _ := strconv.ParseFloat(m[2], 64)
			return f
		}
	}
	return 0
}

// retryAfter checks a 429 and returns its Retry-After in seconds.
func retryAfter(t *testing.T, what string, resp *http.Response, body []byte) int {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s: %d %s, want 429", what, resp.StatusCode, body)
	}
	n, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || n < 1 {
		t.Fatalf("%s: Retry-After %q, want whole seconds ≥ 1", what, resp.Header.Get("Retry-After"))
	}
	return n
}

// TestStolenSupportKeyResends: a support key resending one customer's notice
// over and over to an outside address is stopped at RESENDS_PER_HOUR, with
// a 429 that says when to come back; the key hitting its limit is counted;
// every resend to another domain is in the audit log with its reason and the
// whole target address.
func TestStolenSupportKeyResends(t *testing.T) {
	testenv.Slow(t, "waits out quotas")
	st, sink := startSupportStack(t, map[string]string{"RESENDS_PER_HOUR": "3"})
	cid, ids := sentCampaign(t, st, "card leak", []notice.Recipient{{Email: "victim@example.jp", Name: "山田 太郎", Locale: "ja", CardLast4: "1234"}})
	path := st.Base + fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[0])
	auth := map[string]string{"Authorization": "Bearer " + teststack.SupportKey, "Content-Type": "application/json"}
	body := []byte(`{"reason":"customer asked on the phone","email":"collector@attacker.example"}`)
	var last *http.Response
	var lastBody []byte
	accepted := 0
	for range 31 {
		last, lastBody = send(t, "POST", path, auth, body)
		if last.StatusCode == 202 {
			accepted++
		}
	}
	if accepted != 3 {
		t.Errorf("31 resends: %d accepted, want 3 (RESENDS_PER_HOUR)", accepted)
	}
	ra := retryAfter(t, "resend past the limit", last, lastBody)
	if ra > 3600 {
		t.Errorf("Retry-After %d s, more than the hour", ra)
	}
	if !bytes.Contains(lastBody, []byte(`"rate_limited"`)) || !bytes.Contains(lastBody, []byte("3 resends per hour")) {
		t.Errorf("429 body does not say which limit: %s", lastBody)
	}
	t.Logf("resend #31: %d Retry-After %s %s", last.StatusCode, last.Header.Get("Retry-After"), bytes.TrimSpace(lastBody))
	if n := metric(t, st, "oshirase_key_limited_total", `key="support"`, `limit="resends"`); n != 28 {
		t.Errorf("oshirase_key_limited_total{key=support,limit=resends} = %v, want 28", n)
	}
	teststack.Eventually(t, "3 resends delivered", 20*time.Second, func() bool { return sink.CountFor("collector@attacker.example") == 3 })

	// The audit log (admins only) has the whole target address and reason.
	var audit struct {
		Entries []struct {
			Action, Actor, Reason string
			Details               json.RawMessage
		}
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+cid, "", nil, &audit)
	found := 0
	for _, e := range audit.Entries {
		if e.Action == "recipient.resend" {
			found++
			if e.Actor != "support" || e.Reason != "customer asked on the phone" || !bytes.Contains(e.Details, []byte(`"collector@attacker.example"`)) ||
				!bytes.Contains(e.Details, []byte(`"outside_domain":true`)) {
				t.Errorf("audit entry of an outside resend: %+v %s", e, e.Details)
			}
		}
	}
	if found != 3 {
		t.Errorf("%d resends audited, want 3", found)
	}
	// A support key cannot read the audit log.
	if code, _ := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/audit", "", nil, nil); code != 403 {
		t.Errorf("support reading the audit log: %d, want 403", code)
	}
}

// TestStolenAdminKeyNotifications: an admin key firing single notices (the
// phishing run of the issue: 200 in 2.3 s) is stopped at
// NOTIFICATIONS_PER_MINUTE; test sends count against the same budget.
func TestStolenAdminKeyNotifications(t *testing.T) {
	st, sink := startSupportStack(t, map[string]string{"NOTIFICATIONS_PER_MINUTE": "5"})
	var camp map[string]any
	json.Unmarshal(teststack.CampaignJSON(nil), &camp)
	data := camp["data"].(map[string]any)
	data["url"] = "https://phish.example/login"
	auth := map[string]string{"Authorization": "Bearer " + teststack.AdminKey, "Content-Type": "application/json"}
	accepted := 0
	var last *http.Response
	var lastBody []byte
	for i := range 20 {
		b, _ := json.Marshal(map[string]any{"template": "card-reissue", "locale": "ja", "from": camp["from"], "data": data,
			"recipient": map[string]any{"email": fmt.Sprintf("mark%d@example.com", i)}})
		last, lastBody = send(t, "POST", st.Base+"/v1/notifications", auth, b)
		if last.StatusCode == 202 {
			accepted++
		}
	}
	if accepted != 5 {
		t.Errorf("20 notifications: %d accepted, want 5", accepted)
	}
	retryAfter(t, "notification past the limit", last, lastBody)
	t.Logf("notification #20: %d Retry-After %s %s", last.StatusCode, last.Header.Get("Retry-After"), bytes.TrimSpace(lastBody))

	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	resp, b := send(t, "POST", st.Base+"/v1/campaigns/"+c.ID+"/test", auth, []byte(`{"email":"reviewer@example.jp"}`))
	retryAfter(t, "test send past the limit", resp, b)
	if n := metric(t, st, "oshirase_key_limited_total", `key="admin"`, `limit="notifications"`); n != 16 {
		t.Errorf("oshirase_key_limited_total{key=admin,limit=notifications} = %v, want 16", n)
	}
	teststack.Eventually(t, "5 notices delivered", 20*time.Second, func() bool { return sink.Count() == 5 })
}

// TestWrongKeysSlowedDown: 300 wrong keys from one address are counted,
// and after AUTH_FAILURES_PER_MINUTE the source gets 429s (for a few
// seconds per further attempt, not a lock-out) — also for a right key, so
// guessing goes no faster — on the API, the console's sign-in and the
// monitoring UI's basic auth.
func TestWrongKeysSlowedDown(t *testing.T) {
	testenv.Slow(t, "waits out the auth limiter")
	for _, surface := range []string{"api", "console", "monitoring"} {
		t.Run(surface, func(t *testing.T) {
			st, _ := startSupportStack(t, map[string]string{"AUTH_FAILURES_PER_MINUTE": "10"})
			try := func(key string) (*http.Response, []byte) {
				switch surface {
				case "console":
					// A sign-in form as the page makes it.
					page, _ := send(t, "GET", st.Base+"/support/", nil, nil)
					var tok, ck string
					for _, c := range page.Cookies() {
						if c.Name == "oshirase_login" {
							tok, ck = c.Value, c.Name+"="+c.Value
						}
					}
					form := url.Values{"key": {key}, "login_token": {tok}}.Encode()
					return send(t, "POST", st.Base+"/support/login", map[string]string{
						"Content-Type": "application/x-www-form-urlencoded", "Cookie": ck}, []byte(form))
				case "monitoring":
					req, _ := http.NewRequest("GET", "/", nil)
					req.SetBasicAuth("ops", key)
					return send(t, "GET", st.Base+"/monitoring/", map[string]string{"Authorization": req.Header.Get("Authorization")}, nil)
				}
				return send(t, "GET", st.Base+"/v1/campaigns", map[string]string{"Authorization": "Bearer " + key}, nil)
			}
			// Read in-process: /metrics from the throttled address would
			// get a 429 too.
			failures, throttled := metrics.AuthFailures.WithLabelValues(surface), metrics.AuthThrottled.WithLabelValues(surface)
			failed0, throttled0 := testutil.ToFloat64(failures), testutil.ToFloat64(throttled)
			codes := map[int]int{}
			var last *http.Response
			var lastBody []byte
			for i := range 300 {
				last, lastBody = try(fmt.Sprintf("wrong-key-%04d-xxxxxxxxxxxx", i))
				codes[last.StatusCode]++
				if i == 299 {
					break
				}
			}
			if codes[401] != 10 || codes[429] != 290 {
				t.Errorf("300 wrong keys: %v, want 10 × 401 then 290 × 429 (a token comes back every 6 s; did the loop take that long?)", codes)
			}
			ra := retryAfter(t, "wrong key past the limit", last, lastBody)
			if ra > 7 {
				t.Errorf("Retry-After %d s: a source behind a busy NAT must not be locked out for long", ra)
			}
			if strings.Contains(string(lastBody), "wrong-key") {
				t.Errorf("the answer repeats the key: %s", lastBody)
			}
			t.Logf("%s, wrong key #300: %d Retry-After %s %s", surface, last.StatusCode, last.Header.Get("Retry-After"), bytes.TrimSpace(lastBody))
			// A right key from the throttled source waits too.
			right := teststack.AdminKey
			if surface == "console" {
				right = teststack.SupportKey
			}
			resp, b := try(right)
			retryAfter(t, "right key from a throttled source", resp, b)
			if n := testutil.ToFloat64(failures) - failed0; n != 10 {
				t.Errorf("oshirase_auth_failures_total{surface=%s} rose by %v, want 10", surface, n)
			}
			if n := testutil.ToFloat64(throttled) - throttled0; n != 291 {
				t.Errorf("oshirase_auth_throttled_total{surface=%s} rose by %v, want 291", surface, n)
			}
		})
	}
}

// TestCardNumbersPastTheDetector: a card number whose digits are kept apart
// by Unicode spaces, invisible characters or punctuation is refused in every
// free-text field, never stored, and never echoed back — by a 422 or by a
// preview.
func TestCardNumbersPastTheDetector(t *testing.T) {
	st, _ := startSupportStack(t, nil)
	id, ids := sentCampaign(t, st, "cards", []notice.Recipient{{Email: "card.holder@example.jp", Locale: "ja"}})
	var draft notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &draft)
	pans := []string{
		"4111\u20091111\u20091111\u20091111", // thin space
		"4111\u202f1111\u202f1111\u202f1111", // narrow no-break space
		"4111\u200b1111\u200b1111\u200b1111", // zero-width space
		"4111\u200d1111\u200d1111\u200d1111", // zero-width joiner
		"4111\u20601111\u20601111\u20601111", // word joiner
		"4111\u00ad1111\u00ad1111\u00ad1111", // soft hyphen
		"4111\ufeff1111\ufeff1111\ufeff1111", // BOM
		"4111、1111、1111、1111", "4111〜1111〜1111〜1111", "4111～1111～1111～1111", "4111+1111+1111+1111",
		"4111:1111:1111:1111", "4111*1111*1111*1111", "4111#1111#1111#1111", "4111|1111|1111|1111",
		"4111'1111'1111'1111", "(4111)(1111)(1111)(1111)",
	}
	refusedBefore := metric(t, st, "oshirase_card_numbers_refused_total")
	for _, pan := range pans {
		js, _ := json.Marshal(pan)
		var csv bytes.Buffer
		fmt.Fprintf(&csv, "email,name,memo\nrow1@example.jp,%s,x\nrow2@example.jp,x,\"%s\"\n", pan, pan)
		for _, tt := range []struct {
			name, key, method, path, ctype, body string
			want                                 int
		}{
			{"campaign name", teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
				string(teststack.CampaignJSON(map[string]any{"name": "Breach " + pan})), 422},
			{"incident data", teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
				string(teststack.CampaignJSON(map[string]any{"extra_paragraphs": []string{"番号: " + pan}})), 422},
			{"template name", teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
				string(teststack.CampaignJSON(map[string]any{"template": pan})), 422},
			{"time zone", teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
				string(teststack.CampaignJSON(map[string]any{"time_zone": pan})), 422},
			{"upload", teststack.AdminKey, "POST", "/v1/campaigns/" + draft.ID + "/recipients", "text/csv", csv.String(), 200},
			{"resend reason", teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", id, ids[0]), "application/json",
				`{"reason":` + string(js) + `}`, 422},
			{"notification name", teststack.AdminKey, "POST", "/v1/notifications", "application/json",
				`{"from":"n@example.jp","data":{},"recipient":{"email":"n@example.jp","name":` + string(js) + `}}`, 422},
			{"suppression reason", teststack.AdminKey, "POST", "/v1/suppressions", "application/json",
				`{"email":"s@example.jp","reason":` + string(js) + `}`, 422},
			{"preview data", teststack.AdminKey, "POST", "/v1/templates/card-reissue/preview", "application/json",
				`{"locale":"ja","extra_paragraphs":[` + string(js) + `]}`, 422},
			{"preview recipient", teststack.AdminKey, "POST", "/v1/templates/card-reissue/preview", "application/json",
				`{"locale":"ja","recipient":{"name":` + string(js) + `}}`, 422},
		} {
			code, body := teststack.Do(t, st.Base, tt.key, tt.method, tt.path, tt.ctype, []byte(tt.body), nil)
			if code != tt.want {
				t.Errorf("%s %+q: %d %s, want %d", tt.name, pan, code, body, tt.want)
			}
			if bytes.Contains(body, []byte("4111")) {
				t.Errorf("%s %+q: the answer echoes the number: %s", tt.name, pan, body)
			}
			if tt.name == "upload" && !bytes.Contains(body, []byte(`"rejected_count":2`)) {
				t.Errorf("upload %+q: the rows with a card number were not both rejected: %s", pan, body)
			}
		}
	}
	// Nothing reached Redis: not the campaigns, not the audit log.
	for _, p := range []string{"/v1/campaigns", "/v1/audit", "/v1/campaigns/" + draft.ID + "/recipients", "/v1/campaigns/" + draft.ID + "/rejections"} {
		if _, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", p, "", nil, nil); bytes.Contains(body, []byte("4111")) {
			t.Errorf("GET %s holds a card number: %s", p, body)
		}
	}
	// An operator sees it happen.
	if n := metric(t, st, "oshirase_card_numbers_refused_total") + metric(t, st, "oshirase_card_numbers_refused_total", `where="upload"`); n-refusedBefore < float64(len(pans)) {
		t.Errorf("oshirase_card_numbers_refused_total rose by %v, want at least %d", n-refusedBefore, len(pans))
	}
}

// TestAddressesThatCanNeverBeSent: an IDN domain is sent as punycode, a
// full-width address as ASCII with a warning naming line and field, and what
// could never be sent is refused at upload with line and field instead of
// failing at send time. Support finds the notices by the address as typed.
func TestAddressesThatCanNeverBeSent(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	csv := "email,name\n" +
		"idn@bücher.example,IDN\n" + // line 2
		"keep@ｅｘａｍｐｌｅ.com,Keep\n" + // line 3
		"山田@example.jp,Yamada\n" + // line 4: UTF-8 local part
		"x@192.0.2.1,IP\n" + // line 5
		"zw\u200bsp@example.jp,ZW\n" + // line 6
		"x@-bücher.example,Bad IDN\n" + // line 7
		"\"=?utf-8?q?evil=40attacker.com?=\",x\n" + // line 8: not an address at all
		"name@example.jp,=?utf-8?q?evil=40attacker.com?=\n" // line 9: an encoded-word as a name
	var ans struct {
		Accepted int
		Rejected []struct {
			Line         int
			Field, Error string
		}
		Warnings []struct {
			Line           int
			Field, Warning string
		}
	}
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), &ans)
	t.Logf("upload: %d %s", code, body)
	if code != 200 || ans.Accepted != 2 {
		t.Fatalf("upload: %d %s, want 2 accepted", code, body)
	}
	want := map[int]string{4: "email", 5: "email", 6: "email", 7: "email", 8: "email", 9: "name"}
	for _, r := range ans.Rejected {
		if want[r.Line] != r.Field {
			t.Errorf("rejection %+v unexpected", r)
		}
		delete(want, r.Line)
	}
	if len(want) > 0 {
		t.Errorf("not refused (line: field): %v", want)
	}
	if len(ans.Warnings) != 2 || ans.Warnings[0].Line != 2 || ans.Warnings[1].Line != 3 ||
		ans.Warnings[0].Field != "email" || ans.Warnings[1].Field != "email" || !strings.Contains(ans.Warnings[1].Warning, "full-width") {
		t.Errorf("warnings %+v, want lines 2 (IDN) and 3 (full-width), field email", ans.Warnings)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	done := teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	if done.Counts.Sent != 2 || done.Counts.Failed != 0 {
		t.Errorf("counts %+v, want 2 sent, none failed", done.Counts)
	}
	for _, rcpt := range []string{"idn@xn--bcher-kva.example", "keep@example.com"} {
		if sink.CountFor(rcpt) != 1 {
			t.Errorf("the relay got %d messages for %s: %v", sink.CountFor(rcpt), rcpt, sink.PerRecipient())
		}
	}
	// Support types the address as the customer spells it.
	for _, typed := range []string{"idn@bücher.example", "IDN@xn--bcher-kva.example", "keep@ｅｘａｍｐｌｅ.com", "KEEP@example.com"} {
		if res := lookup(t, st, url.QueryEscape(typed)); len(res.Notices) != 1 {
			t.Errorf("look-up of %q: %d notices, want 1", typed, len(res.Notices))
		}
	}
	// A single notice and a resend to a corrected address take the same path.
	var n struct {
		CampaignID  string `json:"campaign_id"`
		RecipientID int64  `json:"recipient_id"`
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/notifications", "application/json",
		[]byte(`{"from":"n@example.jp","data":`+string(mustData(t))+`,"recipient":{"email":"solo@ｂücher.example"}}`), &n)
	if code != 202 {
		t.Fatalf("notification: %d %s", code, body)
	}
	for _, bad := range []string{"山田@example.jp", "x@192.0.2.1"} {
		code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/notifications", "application/json",
			[]byte(`{"from":"n@example.jp","data":`+string(mustData(t))+`,"recipient":{"email":"`+bad+`"}}`), nil)
		if code != 422 || !bytes.Contains(body, []byte(`"recipient.email"`)) {
			t.Errorf("notification to %s: %d %s, want 422 on recipient.email", bad, code, body)
		}
	}
	teststack.Eventually(t, "the single notice", 20*time.Second, func() bool { return sink.CountFor("solo@xn--bcher-kva.example") == 1 })
	code, body = teststack.Do(t, st.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", n.CampaignID, n.RecipientID),
		"application/json", []byte(`{"reason":"typo","email":"solo2@ｅｘａｍｐｌｅ.com"}`), nil)
	if code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "the resend", 20*time.Second, func() bool { return sink.CountFor("solo2@example.com") == 1 })
	code, body = teststack.Do(t, st.Base, teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", n.CampaignID, n.RecipientID),
		"application/json", []byte(`{"reason":"typo","email":"山田@example.jp"}`), nil)
	if code != 422 {
		t.Errorf("resend to a UTF-8 local part: %d %s, want 422", code, body)
	}
}

func mustData(t *testing.T) []byte {
	var camp map[string]json.RawMessage
	if err := json.Unmarshal(teststack.CampaignJSON(nil), &camp); err != nil {
		t.Fatal(err)
	}
	return camp["data"]
}

// TestSenderAndJSONUploadTricks: a From on an IP-literal domain is refused,
// and a JSON row that names a field twice is refused with its line and field
// instead of the last value silently winning.
func TestSenderAndJSONUploadTricks(t *testing.T) {
	st, _ := startSupportStack(t, nil)
	for _, from := range []string{"Security <security@[192.0.2.1]>", "security@192.0.2.1", "Security <security@[IPv6:2001:db8::1]>"} {
		code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
			teststack.CampaignJSON(map[string]any{"from": from}), nil)
		if code != 422 || !bytes.Contains(body, []byte(`"field":"from"`)) || !bytes.Contains(body, []byte("IP address")) {
			t.Errorf("from %q: %d %s, want 422 on from", from, code, body)
		}
	}
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	up := `[{"email":"ok@example.jp"},{"email":"reviewed@example.jp","name":"A","email":"attacker@example.com"},{"email":"n@example.jp","extra":{"a":1,"a":2}}]`
	var ans struct {
		Accepted int
		Rejected []struct {
			Line         int
			Field, Error string
		}
	}
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "application/json", []byte(up), &ans)
	t.Logf("upload: %d %s", code, body)
	if code != 200 || ans.Accepted != 1 || len(ans.Rejected) != 2 || ans.Rejected[0].Line != 2 || ans.Rejected[0].Field != "email" ||
		!strings.Contains(ans.Rejected[0].Error, "twice") || ans.Rejected[1].Line != 3 {
		t.Errorf("JSON upload with a duplicate key: %d %s, want line 2 email and line 3 refused", code, body)
	}
}

// TestStolenAdminKeyStarts: campaign after campaign started by one key is
// stopped at STARTS_PER_HOUR; starting a running campaign again costs
// nothing.
func TestStolenAdminKeyStarts(t *testing.T) {
	st, _ := startSupportStack(t, map[string]string{"STARTS_PER_HOUR": "2"})
	auth := map[string]string{"Authorization": "Bearer " + teststack.AdminKey}
	var codes []int
	var first string
	for i := range 3 {
		var c notice.Campaign
		teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
		st.Svc.Store.AddRecipients(t.Context(), c.ID, []notice.Recipient{{Email: fmt.Sprintf("s%d@example.jp", i)}})
		if i == 0 {
			first = c.ID
		}
		resp, b := send(t, "POST", st.Base+"/v1/campaigns/"+c.ID+"/start", auth, nil)
		codes = append(codes, resp.StatusCode)
		if i == 2 {
			retryAfter(t, "third start", resp, b)
			t.Logf("start #3: %d Retry-After %s %s", resp.StatusCode, resp.Header.Get("Retry-After"), bytes.TrimSpace(b))
		}
	}
	if codes[0] != 202 || codes[1] != 202 {
		t.Errorf("starts: %v, want 202 202 429", codes)
	}
	if resp, b := send(t, "POST", st.Base+"/v1/campaigns/"+first+"/start", auth, nil); resp.StatusCode != 202 {
		t.Errorf("starting a started campaign again: %d %s, want 202", resp.StatusCode, b)
	}
}
