package service_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/mimetest"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

const xssName = "<script>alert(1)</script>"

// recipientsCSV makes n recipients, alternating ja and en; recipient 7 has a
// name that tries script injection.
func recipientsCSV(n int) (string, map[string]string) {
	var b strings.Builder
	locales := map[string]string{}
	b.WriteString("email,name,locale,customer_id,card_brand,card_last4,member_rank\n")
	for i := 1; i <= n; i++ {
		loc, name := "ja", fmt.Sprintf("山田 太郎%d", i)
		if i%2 == 0 {
			loc, name = "en", fmt.Sprintf("Jane Doe %d", i)
		}
		if i == 7 {
			name = xssName
		}
		addr := fmt.Sprintf("user%04d@example.%s", i, map[string]string{"ja": "jp", "en": "com"}[loc])
		locales[addr] = loc
		fmt.Fprintf(&b, "%s,%s,%s,C%05d,VISA,%04d,gold\n", addr, name, loc, i, 1000+i)
	}
	return b.String(), locales
}

// startServiceStack runs API and worker in the test process over this
// package's Redis database and an SMTP sink that keeps what it receives;
// env adds to (or overrides) the settings.
func startServiceStack(t *testing.T, env map[string]string) (*teststack.Stack, *smtpsink.Sink) {
	t.Helper()
	_, url := testenv.Redis(t, testenv.DBService)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL()}
	for k, v := range env {
		vars[k] = v
	}
	return teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true, Worker: true}), sink
}

func TestCampaignEndToEnd(t *testing.T) {
	st, sink := startServiceStack(t, map[string]string{"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "25", "KEY_PREFIX": "e2e"})

	var c notice.Campaign
	// A sender per locale: English readers see an English name.
	from := map[string]string{"ja": "株式会社テスト <notice@example.jp>", "en": "Test Co. <notice@example.jp>"}
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(map[string]any{"from": from}), &c)
	if code != 201 || c.ID == "" {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	csv, locales := recipientsCSV(200)
	var up struct {
		Accepted int `json:"accepted"`
		Rejected []any
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), &up)
	if code != 200 || up.Accepted != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)
	if code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	done := teststack.WaitCampaign(t, st.Base, c.ID, 60*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	if done.Counts.Sent != 200 || done.Counts.Total != 200 || done.Counts.Failed != 0 || done.Counts.Pending != 0 {
		t.Fatalf("counts: %+v", done.Counts)
	}
	if done.StartedAt == nil || done.FinishedAt == nil {
		t.Fatalf("started_at/finished_at missing: %+v", done)
	}
	// A second start sends nothing more.
	code, _ = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)
	if code != 202 {
		t.Fatalf("second start: %d", code)
	}
	time.Sleep(500 * time.Millisecond)

	msgs := sink.Messages()
	if len(msgs) != 200 {
		t.Fatalf("received %d messages, want 200", len(msgs))
	}
	seen := map[string]int{}
	for _, m := range msgs {
		if len(m.To) != 1 {
			t.Fatalf("message to %d recipients", len(m.To))
		}
		addr := m.To[0]
		seen[addr]++
		p, err := mimetest.Parse(m.Data)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if len(p.Parts) != 2 || p.Parts[0] != "text/plain" || p.Parts[1] != "text/html" {
			t.Errorf("%s: parts %v, want text/plain then text/html", addr, p.Parts)
		}
		var n int
		fmt.Sscanf(addr, "user%04d@", &n)
		last4 := fmt.Sprint(1000 + n)
		switch locales[addr] {
		case "ja":
			if !strings.HasPrefix(p.Subject, "【重要】") {
				t.Errorf("%s: subject %q", addr, p.Subject)
			}
			if !strings.Contains(p.Text, "再発行") || !strings.Contains(p.Text, last4) {
				t.Errorf("%s: ja text lacks 再発行 or %s", addr, last4)
			}
			if p.From != from["ja"] {
				t.Errorf("%s: from %q, want %q", addr, p.From, from["ja"])
			}
		case "en":
			if !strings.HasPrefix(p.Subject, "[Important]") || !strings.Contains(strings.ToLower(p.Text), "reissue") {
				t.Errorf("%s: en subject %q / text lacks reissue", addr, p.Subject)
			}
			if !strings.HasPrefix(p.From, `"Test Co." <notice@example.jp>`) && p.From != from["en"] {
				t.Errorf("%s: from %q, want %q", addr, p.From, from["en"])
			}
		default:
			t.Errorf("unexpected recipient %s", addr)
		}
		if n == 7 {
			if strings.Contains(p.HTML, xssName) || !strings.Contains(p.HTML, "&lt;script&gt;") {
				t.Errorf("HTML part does not escape the name: %s", p.HTML)
			}
		}
		if !strings.Contains(p.Header.Get("Message-Id"), "c."+c.ID+".r.") {
			t.Errorf("%s: Message-ID %q not derived from campaign and recipient", addr, p.Header.Get("Message-Id"))
		}
	}
	for addr, k := range seen {
		if k != 1 {
			t.Errorf("%s received %d copies", addr, k)
		}
	}
	if len(seen) != 200 {
		t.Errorf("%d distinct recipients, want 200", len(seen))
	}

	// Every recipient shows sent, across pages.
	sent, cursor := 0, ""
	for page := 0; page < 50; page++ {
		var pg struct {
			Recipients []notice.Recipient `json:"recipients"`
			Next       *string            `json:"next_cursor"`
		}
		code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+c.ID+"/recipients?status=sent&limit=64&cursor="+cursor, "", nil, &pg)
		if code != 200 {
			t.Fatalf("list: %d %s", code, body)
		}
		for _, r := range pg.Recipients {
			if r.Status != notice.StatusSent || r.MessageID == "" || r.SentAt == nil || r.Attempts != 1 {
				t.Fatalf("recipient %+v", r)
			}
			sent++
		}
		if pg.Next == nil {
			break
		}
		cursor = *pg.Next
	}
	if sent != 200 {
		t.Fatalf("listed %d sent recipients, want 200", sent)
	}
	if sink.Sessions() > int64(st.Svc.Config.SMTPPool)*2 {
		t.Errorf("%d SMTP sessions for 200 messages with a pool of %d: connections are not reused", sink.Sessions(), st.Svc.Config.SMTPPool)
	}
}

func TestUploadRejections(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBService)
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "e2e-rej"})
	st := teststack.StartStack(t, cfg, service.Options{API: true})
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)

	csv := strings.Join([]string{
		"email,name,locale,card_last4",
		"good1@example.jp,A,ja,1234",   // 2
		"not-an-address,B,ja,1234",     // 3
		"good2@example.com,C,fr,1234",  // 4
		"good3@example.com,D,en,12a4",  // 5
		"GOOD1@EXAMPLE.JP,E,ja,1234",   // 6 duplicate of line 2 (case-insensitive)
		"good4@example.com,F,en,",      // 7
		"good5@example.com,G,en,12345", // 8
	}, "\n") + "\n"
	var up struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Line  int    `json:"line"`
			Field string `json:"field"`
			Error string `json:"error"`
		} `json:"rejected"`
	}
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), &up)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if up.Accepted != 2 {
		t.Errorf("accepted %d, want 2 (lines 2 and 7): %s", up.Accepted, body)
	}
	want := map[int]string{3: "email", 4: "locale", 5: "card_last4", 6: "email", 8: "card_last4"}
	got := map[int]string{}
	for _, r := range up.Rejected {
		got[r.Line] = r.Field
		if r.Error == "" {
			t.Errorf("line %d: empty reason", r.Line)
		}
	}
	for line, field := range want {
		if got[line] != field {
			t.Errorf("line %d: rejected field %q, want %q (all: %s)", line, got[line], field, body)
		}
	}
	if len(up.Rejected) != len(want) {
		t.Errorf("%d rejections, want %d: %s", len(up.Rejected), len(want), body)
	}
	// JSON upload appends, and its duplicates are caught against the CSV's rows.
	js := `[{"email":"good1@example.jp"},{"email":"json1@example.com","locale":"en","name":"J"}]`
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "application/json", []byte(js), &up)
	if code != 200 || up.Accepted != 1 || len(up.Rejected) != 1 || up.Rejected[0].Line != 1 {
		t.Fatalf("json upload: %d %s", code, body)
	}
	// A full card number anywhere is refused and never echoed.
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv",
		[]byte("email,name,note\ncard@example.com,X,4111 1111 1111 1111\n"), &up)
	if code != 200 || up.Accepted != 0 || bytes.Contains(body, []byte("4111")) {
		t.Fatalf("card number upload: %d %s", code, body)
	}
}

func TestAuth(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBService)
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "e2e-auth"})
	st := teststack.StartStack(t, cfg, service.Options{API: true})
	cases := []struct {
		name, key, method, path string
		want                    int
	}{
		{"no key", "", "GET", "/v1/campaigns", 401},
		{"wrong key", "nope-nope-nope-nope", "GET", "/v1/campaigns", 401},
		{"admin lists", teststack.AdminKey, "GET", "/v1/campaigns", 200},
		{"support may not create", teststack.SupportKey, "POST", "/v1/campaigns", 403},
		{"operator may not create", teststack.OperatorKey, "POST", "/v1/campaigns", 403},
		{"health is public", "", "GET", "/healthz", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.method == "POST" {
				body = teststack.CampaignJSON(nil)
			}
			code, b := teststack.Do(t, st.Base, tc.key, tc.method, tc.path, "application/json", body, nil)
			if code != tc.want {
				t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, code, tc.want, b)
			}
		})
	}
}

// TestExtraColumnsReachTheNotice: an upload's own columns personalise a
// template of TEMPLATES_DIR (index .Recipient.Extra "column"), in the text
// and, escaped, in the HTML; an empty one takes the template's {{else}}.
func TestExtraColumnsReachTheNotice(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBService)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, "order-notice", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meta.json", `{"description": "An order notice.",
  "fields": [{"name": "company", "kind": "string", "required": true, "description": "Sender."}],
  "sample": {"company": "Sample"}}`)
	for _, loc := range []string{"ja", "en"} {
		write(loc+"/subject.tmpl", "Order {{index .Recipient.Extra \"order_no\"}} from {{.Data.company}}\n")
		write(loc+"/text.tmpl", "{{.Recipient.Name}}\nOrder: {{index .Recipient.Extra \"order_no\"}}\n"+
			"{{with index .Recipient.Extra \"points\"}}Points: {{.}}{{else}}No points{{end}}\n{{.Data.company}}\n")
		write(loc+"/html.tmpl", "<!DOCTYPE html>\n<html lang=\""+loc+"\"><body><p>Order: {{index .Recipient.Extra \"order_no\"}}</p>"+
			"{{with index .Recipient.Extra \"points\"}}<p>Points: {{.}}</p>{{end}}</body></html>\n")
	}
	cfg := testenv.Config(t, map[string]string{
		"REDIS_URL": url, "SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": "4", "KEY_PREFIX": "extra", "TEMPLATES_DIR": dir,
	})
	st := teststack.StartStack(t, cfg, service.Options{API: true, Worker: true})

	var c notice.Campaign
	code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"template": "order-notice", "data": map[string]any{"company": "Sample & Co."}}), &c)
	if code != 201 {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	const n = 60
	var csv strings.Builder
	csv.WriteString("email,name,locale,order_no,points\n")
	for i := 1; i <= n; i++ {
		points := ""
		if i%3 != 0 {
			points = fmt.Sprintf("%d<pt>", i*10)
		}
		fmt.Fprintf(&csv, "u%03d@example.jp,Name %d,%s,A-%04d,%s\n", i, i, []string{"ja", "en"}[i%2], i, points)
	}
	code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv.String()), nil)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body = teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	done := teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	if done.Counts.Sent != n {
		t.Fatalf("counts: %+v", done.Counts)
	}
	for _, m := range sink.Messages() {
		p, err := mimetest.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		fmt.Sscanf(m.To[0], "u%03d@", &i)
		order := fmt.Sprintf("A-%04d", i)
		wantText := fmt.Sprintf("Order: %s\nPoints: %d<pt>\n", order, i*10)
		wantHTML := fmt.Sprintf("<p>Order: %s</p><p>Points: %d&lt;pt&gt;</p></body>", order, i*10)
		if i%3 == 0 {
			wantText, wantHTML = "Order: "+order+"\nNo points\n", "<p>Order: "+order+"</p></body>"
		}
		text := strings.ReplaceAll(p.Text, "\r\n", "\n")
		if p.Subject != "Order "+order+" from Sample & Co." || !strings.Contains(text, wantText) || !strings.Contains(p.HTML, wantHTML) {
			t.Errorf("%s: subject %q\ntext %q\nhtml %q", m.To[0], p.Subject, p.Text, p.HTML)
		}
	}
}
