package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// browser starts a headless Chromium (testenv.Browser).
func browser(t *testing.T) context.Context { return testenv.Browser(t, 60*time.Second) }

// TestSupportConsoleBrowser signs in, searches an address, resends with a
// reason and sees the new delivery arrive and show as sent — in a real
// Chromium against the whole service.
func TestSupportConsoleBrowser(t *testing.T) {
	ctx := browser(t)
	st, sink := startSupportStack(t, nil)
	const addr = "Customer.One@Example.jp"
	cid, ids := sentCampaign(t, st, "Card leak 2019", []notice.Recipient{
		{Email: addr, Name: "顧客 一郎", Locale: "ja", CardLast4: "4321"},
		{Email: "other@example.jp", Locale: "ja", CardLast4: "1111"},
	})
	section := fmt.Sprintf("#notice-%s-%d", cid, ids[0])

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(v)
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(st.Base+"/support/"),
		chromedp.WaitVisible(css("#key")),
		chromedp.SendKeys(css("#key"), testenv.SupportKey),
		chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#q")),
		chromedp.SendKeys(css("#q"), "customer.one@EXAMPLE.JP"),
		chromedp.Click(css("#search")),
		chromedp.WaitVisible(css(section)),
	)
	if err != nil {
		t.Fatalf("sign in and search: %v", err)
	}
	actor, searched, status := text("#actor"), text("#searched"), text(section+` [data-role="status"]`)
	if actor != "support" || searched != "customer.one@EXAMPLE.JP" || status != "sent" {
		t.Fatalf("after search: actor %q, searched %q, status %q", actor, searched, status)
	}

	// The session cookie is opaque, HttpOnly and SameSite=Strict.
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range res.Cookies {
		if strings.Contains(c.Value, testenv.SupportKey) {
			t.Errorf("cookie %s holds the API key", c.Name)
		}
		if c.Name == "oshirase_support" {
			found = true
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("session cookie: httpOnly %v, sameSite %v", c.HTTPOnly, c.SameSite)
			}
		}
	}
	if !found {
		t.Errorf("no session cookie among %d cookies", len(res.Cookies))
	}

	err = chromedp.Do(ctx,
		chromedp.SendKeys(css(section+` input[name="reason"]`), "customer called: deleted the mail"),
		chromedp.Click(css(section+` button[type="submit"]`)),
		chromedp.WaitVisible(css("#flash")),
	)
	if err != nil {
		t.Fatalf("resend: %v", err)
	}
	if flash := text("#flash"); !strings.Contains(flash, "Resend #1 queued") {
		t.Fatalf("flash after resend: %q", flash)
	}
	teststack.Eventually(t, "resend at the SMTP server", 10*time.Second, func() bool { return sink.CountFor(addr) == 2 })

	// Refresh until the page shows the resend as sent.
	deadline := time.Now().Add(10 * time.Second)
	// Each refresh is a form post that replaces the page: a node read
	// while the old page goes away may vanish under the query, so errors
	// are retried until the deadline.
	var rs, reason string
	var lastErr error
	for rs != "sent" {
		if time.Now().After(deadline) {
			t.Fatalf("resend shows %q, not sent (last error %v)", rs, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
		if lastErr = chromedp.Do(ctx, chromedp.Click(css("#refresh"))); lastErr != nil {
			continue
		}
		time.Sleep(200 * time.Millisecond)
		rs, lastErr = chromedp.Run(ctx, chromedp.Text(css(section+` #resend-1 [data-role="resend-status"]`)))
		if lastErr == nil {
			reason, lastErr = chromedp.Run(ctx, chromedp.Text(css(section+" #resend-1")))
		}
		rs = strings.TrimSpace(rs)
	}
	if !strings.Contains(reason, "customer called: deleted the mail") || !strings.Contains(reason, "support") {
		t.Errorf("resend row lacks reason or actor: %q", reason)
	}
}

// TestSupportConsoleShowsReturned: what came back after the relay took a
// notice — a delay warning, then the bounce; a complaint — shows in the
// support console (a real Chromium) with the recipient's status, and in
// the look-up API the console is built on.
func TestSupportConsoleShowsReturned(t *testing.T) {
	ctx := browser(t)
	st, _ := startSupportStack(t, map[string]string{"KEY_PREFIX": "supret"})
	const bounced, complained = "gone@example.jp", "angry@example.jp"
	cid, ids := sentCampaign(t, st, "Card leak 2019", []notice.Recipient{
		{Email: bounced, Locale: "ja", CardLast4: "4321"},
		{Email: complained, Locale: "ja", CardLast4: "1111"},
	})
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, r := range []struct {
		rid int64
		ev  notice.Returned
		set notice.Status
	}{
		{ids[0], notice.Returned{At: at, Kind: "delayed", Action: "delayed", Status: "4.2.0", ReportingMTA: "relay.example.jp",
			Diagnostic: "smtp; 451 4.2.0 <gone@example.jp>: try later"}, ""},
		{ids[0], notice.Returned{At: at.Add(time.Hour), Kind: "bounced", Action: "failed", Status: "5.1.1", ReportingMTA: "relay.example.jp",
			Diagnostic: "smtp; 550 5.1.1 <gone@example.jp>: User unknown"}, notice.StatusBounced},
		{ids[1], notice.Returned{At: at, Kind: "complained", FeedbackType: "abuse"}, notice.StatusComplained},
	} {
		if _, err := st.Svc.Store.RecordReturned(context.Background(), cid, r.rid, r.ev, r.set, nil); err != nil {
			t.Fatal(err)
		}
	}
	if res := lookup(t, st, bounced); len(res.Notices) != 1 || res.Notices[0].Status != notice.StatusBounced || len(res.Notices[0].Returned) != 2 {
		t.Errorf("look-up API: %+v", res.Notices)
	}

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	search := func(addr, section string) []string {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.SetValue(css("#q"), addr),
			chromedp.Click(css("#search")),
			chromedp.WaitVisible(css(section+` tr[data-role="returned"]`)),
		)
		if err != nil {
			t.Fatalf("search %s: %v", addr, err)
		}
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('`+section+
			` tr[data-role="returned"]')).map(r => r.innerText.replace(/\s+/g, " ").trim())`))
		if err != nil {
			t.Fatalf("read what came back: %v", err)
		}
		return rows
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(st.Base+"/support/?lang=en"),
		chromedp.WaitVisible(css("#key")),
		chromedp.SendKeys(css("#key"), testenv.SupportKey),
		chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#q")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	section := fmt.Sprintf("#notice-%s-%d", cid, ids[0])
	rows := search(bounced, section)
	status, err := chromedp.Run(ctx, chromedp.Text(css(section+` [data-role="status"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if status != "bounced" || len(rows) != 2 ||
		!strings.Contains(rows[0], "delayed Action: delayed Status: 4.2.0") ||
		!strings.Contains(rows[1], "bounced Action: failed Status: 5.1.1 smtp; 550 5.1.1 <g***@example.jp>: User unknown relay.example.jp") {
		t.Errorf("console for the bounced address: status %q, returned %q", status, rows)
	}
	rows = search(complained, fmt.Sprintf("#notice-%s-%d", cid, ids[1]))
	if len(rows) != 1 || !strings.Contains(rows[0], "complained Feedback-Type: abuse") {
		t.Errorf("console for the complained address: %q", rows)
	}
}
