package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// overflowJS lists what does not fit the window: the page wider than it,
// an element reaching past its right edge, a cell squeezed narrower than
// a few characters.
const overflowJS = `(() => {
  const w = window.innerWidth, bad = [];
  if (document.documentElement.scrollWidth > w) bad.push('page ' + document.documentElement.scrollWidth + 'px wide');
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > w + 0.5) bad.push(el.tagName + (el.id ? '#' + el.id : '') + ' reaches ' + Math.round(r.right) + 'px');
    if ((el.tagName === 'TD' || el.tagName === 'DD') && el.textContent.trim().length > 1 && r.width < 60)
      bad.push(el.tagName + ' "' + el.textContent.trim().slice(0, 20) + '" only ' + Math.round(r.width) + 'px wide');
  }
  return bad.slice(0, 10);
})()`

// TestConsoleTruthBrowser drives the support console in headless Chromium
// at a phone's width (390 px) and a desktop's, in Japanese and English:
// search by a Unicode address, a kana reading and a phone number; status
// words, the suppression list and refusals in the agent's language; the
// notice's language and a resend that switches it to a corrected address,
// after which the row's status is the resend's; a pending notice that says
// when it goes and why it cannot be resent yet; the notice as it was sent.
// Nothing may be wider than the window.
func TestConsoleTruthBrowser(t *testing.T) {
	ctx := browser(t)
	_, redisURL := testenv.Redis(t, testenv.DBConsole)
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true, Reply: func(stage smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt && strings.HasPrefix(rcpt, "gone@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": redisURL, "SMTP_URL": sink.URL(),
		"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10", "KEY_PREFIX": "ctb"}), service.Options{API: true, Worker: true})

	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/suppressions", "application/json",
		[]byte(`{"email":"blocked@example.jp","reason":"bounced 5.7.1 earlier"}`), nil); code != 201 && code != 200 {
		t.Fatalf("suppress: %d %s", code, body)
	}
	cid := uploadedCampaign(t, st, "カード情報流出のお知らせ", "email,name,name_kana,phone,locale,card_brand,card_last4\n"+
		"user@例え.jp,山田 太郎,ヤマダ タロウ,090-1234-5678,ja,VISA,4321\n"+
		"gone@example.jp,佐藤 花子,サトウ ハナコ,,ja,VISA,1111\n"+
		"blocked@example.jp,鈴木 一郎,,,en,VISA,2222\n")
	// A scheduled campaign: its recipient is pending until it starts.
	var later notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": "later"}), &later); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+later.ID+"/recipients", "text/csv",
		[]byte("email,name\nlater@example.jp,高橋 次郎\n"), nil); code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	at := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+later.ID+"/start", "application/json",
		[]byte(fmt.Sprintf(`{"at":%q}`, at.Format(time.RFC3339))), nil); code != 202 {
		t.Fatalf("schedule: %d %s", code, body)
	}

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(v)
	}
	open := func(path, waitFor string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(st.Base+path), chromedp.WaitVisible(css(waitFor))); err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
	}
	search := func(q, waitFor string) {
		t.Helper()
		open("/support/?q="+url.QueryEscape(q), waitFor)
	}
	fits := func(where string, width int64) {
		t.Helper()
		bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](overflowJS))
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("%s at %d px: %v", where, width, bad)
		}
	}
	has := func(where, got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", where, got, w)
			}
		}
	}
	hasNot := func(where, got string, not ...string) {
		t.Helper()
		for _, w := range not {
			if strings.Contains(got, w) {
				t.Errorf("%s: %q has %q", where, got, w)
			}
		}
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate(st.Base+"/support/?q="+url.QueryEscape("ヤマダ")), // a shared link, before signing in
		chromedp.WaitVisible(css("#key")),
		chromedp.SendKeys(css("#key"), testenv.SupportKey),
		chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#searched")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if got := text("#searched"); got != "ヤマダ" {
		t.Fatalf("after sign-in the shared search shows %q", got)
	}

	user := fmt.Sprintf("#notice-%s-1", cid)
	gone := fmt.Sprintf("#notice-%s-2", cid)
	blocked := fmt.Sprintf("#notice-%s-3", cid)
	pending := fmt.Sprintf("#notice-%s-1", later.ID)
	words := map[string]map[string]string{
		"ja": {"sent": "送信済み", "failed": "失敗", "suppressed": "未送信（送信停止リスト）", "pending": "送信待ち", "list": "送信停止リスト",
			"ja": "日本語", "en": "英語", "short": "2 文字以上", "refused": "再送していません", "wait": "まだ送信されていません", "goes": "ごろ",
			"queued": "再送 #1 を fixed@example.jp 宛てに受け付けました。英語で送ります。", "via": "再送 #1 により。最初のお知らせ: 失敗"},
		"en": {"sent": "sent", "failed": "failed", "suppressed": "not sent: suppression list", "pending": "waiting to be sent", "list": "suppression list",
			"ja": "Japanese", "en": "English", "short": "at least 3 characters", "refused": "Not resent", "wait": "once this notice has gone out", "goes": "about",
			"queued": "Resend #1 queued to fixed@example.jp. It goes in English.", "via": "by resend #1; the first notice: failed"},
	}
	resent := false
	for _, width := range []int64{390, 1280} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 900)); err != nil {
			t.Fatal(err)
		}
		for _, lang := range []string{"ja", "en"} {
			w := words[lang]
			where := func(s string) string { return fmt.Sprintf("%s, %d px, %s", s, width, lang) }
			open("/support/?lang="+lang, "#q")

			// The address as the customer spells it, Unicode domain and all.
			if err := chromedp.Do(ctx, chromedp.SetValue(css("#q"), "user@例え.jp"), chromedp.Click(css("#search")), chromedp.WaitVisible(css(user))); err != nil {
				t.Fatalf("%s: %v", where("search by a Unicode address"), err)
			}
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			if !strings.Contains(loc, "/support/?q=") {
				t.Errorf("%s: the search is not a shareable GET: %s", where("search"), loc)
			}
			if got := text(user + ` [data-role="status"]`); got != w["sent"] {
				t.Errorf("%s: status %q, want %q", where("sent notice"), got, w["sent"])
			}
			has(where("sent notice"), text(user), "user@例え.jp", w["ja"])
			hasNot(where("sent notice"), text(user), "override", "配信停止")
			if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#suppressed, [data-role=suppressed], input[name=override_suppression]').length`)); n != 0 {
				t.Errorf("%s: a suppression banner or override where none is needed", where("sent notice"))
			}
			zone, _ := time.Now().Zone()
			has(where("zone"), text("#zone"), zone) // one zone, named once
			fits(where("search by address"), width)

			// The notice as it was sent: the last 4 digits, never more.
			if err := chromedp.Do(ctx, chromedp.Click(css(user+` [data-role="view"]`)), chromedp.WaitVisible(css("#sent-text"))); err != nil {
				t.Fatalf("%s: %v", where("view the notice"), err)
			}
			has(where("notice as sent"), text("#sent-subject"), "【重要】")
			has(where("notice as sent"), text("#sent-text"), "4321", "山田")
			fits(where("notice as sent"), width)

			// By the kana reading and by phone.
			search("やまだ", user)
			search("+81 90-1234-5678", user)
			// One character is refused, in the agent's language.
			search("山", "#error")
			has(where("one character"), text("#error"), w["short"])

			// A suppressed address: the list named truly, the override
			// offered only there, and a refusal explained.
			search("blocked@example.jp", blocked)
			if got := text(blocked + ` [data-role="status"]`); got != w["suppressed"] {
				t.Errorf("%s: status %q, want %q", where("suppressed"), got, w["suppressed"])
			}
			has(where("suppressed banner"), text(blocked+` [data-role="suppressed"]`), w["list"])
			hasNot(where("suppressed banner"), text(blocked+` [data-role="suppressed"]`), "配信停止")
			if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#suppressed, [data-role=suppressed]').length`)); n != 1 {
				t.Errorf("%s: %d suppression banners, want 1", where("suppressed"), n)
			}
			if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('input[name=override_suppression]').length`)); err != nil || n != 1 {
				t.Errorf("%s: %d override boxes, want 1 (%v)", where("suppressed"), n, err)
			}
			if err := chromedp.Do(ctx,
				chromedp.SendKeys(css(blocked+` input[name="reason"]`), "customer asked again"),
				chromedp.Click(css(blocked+` button[type="submit"]`)),
				chromedp.WaitVisible(css("#error")),
			); err != nil {
				t.Fatalf("%s: %v", where("resend to a suppressed address"), err)
			}
			has(where("suppressed refusal"), text("#error"), w["refused"], "blocked@example.jp", w["list"])
			if lang == "ja" {
				hasNot(where("suppressed refusal"), text("#error"), "suppression", "override")
			}
			fits(where("suppressed refusal"), width)

			// A failed notice, resent once to a corrected address in English.
			search("gone@example.jp", gone)
			if !resent {
				if got := text(gone + ` [data-role="status"]`); got != w["failed"] {
					t.Errorf("%s: status %q, want %q", where("failed"), got, w["failed"])
				}
				if err := chromedp.Do(ctx,
					chromedp.SendKeys(css(gone+` input[name="reason"]`), "customer gave a new address"),
					chromedp.SendKeys(css(gone+` input[name="email"]`), "fixed@example.jp"),
					chromedp.SetValue(css(gone+` select[name="locale"]`), "en"),
					chromedp.Click(css(gone+` button[type="submit"]`)),
					chromedp.WaitVisible(css("#flash")),
				); err != nil {
					t.Fatalf("%s: %v", where("resend"), err)
				}
				has(where("resend queued"), text("#flash"), w["queued"])
				teststack.Eventually(t, "the resend at the SMTP server", 10*time.Second, func() bool { return sink.CountFor("fixed@example.jp") == 1 })
				resent = true
			}
			deadline := time.Now().Add(10 * time.Second)
			for text(gone+` [data-role="status"]`) != w["sent"] {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the headline status stays %q after the resend was sent", where("resent"), text(gone+` [data-role="status"]`))
				}
				time.Sleep(100 * time.Millisecond) // the worker records the outcome just after the server took it
				search("gone@example.jp", gone)
			}
			has(where("resent"), text(gone+` [data-role="status-note"]`), w["via"])
			has(where("resend row"), text(gone+" #resend-1"), "fixed@example.jp", w["en"], w["sent"])
			fits(where("resent"), width)

			// A pending notice says when it goes, and why it cannot be resent.
			search("later@example.jp", pending)
			if got := text(pending + ` [data-role="status"]`); got != w["pending"] {
				t.Errorf("%s: status %q, want %q", where("pending"), got, w["pending"])
			}
			has(where("pending"), text(pending+` [data-role="expected"]`), at.In(time.Local).Format("2006-01-02 15:04"), w["goes"])
			has(where("pending"), text(pending+` [data-role="wait"]`), w["wait"])
			if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('.resend-form').length`)); n != 0 {
				t.Errorf("%s: a resend form for a pending notice", where("pending"))
			}
			fits(where("pending"), width)
		}
	}
	// The resend went in English, as asked.
	for _, m := range sink.Messages() {
		if len(m.To) == 1 && m.To[0] == "fixed@example.jp" && !strings.Contains(string(m.Data), "Important") {
			t.Errorf("the resend was not in English:\n%.600s", m.Data)
		}
	}
}
