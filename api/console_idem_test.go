package api_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestConsoleResendOnce: reloading the console after a resend queued
// another resend, and so did a double click. Now the resend form carries a
// one-time token used as its Idempotency-Key and the post redirects to the
// page (POST-redirect-GET): a re-post of the same form, two at once, and a
// reload of the page after it all leave one resend.
func TestConsoleResendOnce(t *testing.T) {
	st, sink := startSupportStack(t, map[string]string{"RESENDS_PER_HOUR": "0"})
	const addr = "console@example.jp"
	cid, ids := sentCampaign(t, st, "console", []notice.Recipient{{Email: addr, Name: "画面", Locale: "ja", CardLast4: "2222"}})

	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	do := func(method, path string, form url.Values) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, st.Base+path, strings.NewReader(form.Encode()))
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, page := do("GET", "/support/", nil)
	_, page = do("POST", "/support/login", url.Values{"login_token": {hidden(page, "login_token")}, "key": {teststack.SupportKey}})
	csrf := hidden(page, "csrf")
	code, page := do("POST", "/support/search", url.Values{"csrf": {csrf}, "email": {addr}})
	if code != 200 {
		t.Fatalf("search: %d", code)
	}
	form := url.Values{"csrf": {csrf}, "q": {addr}, "campaign": {cid}, "recipient": {hidden(page, "recipient")},
		"form_token": {hidden(page, "form_token")}, "reason": {"customer called"}}
	if form.Get("recipient") != "1" || ids[0] != 1 {
		t.Fatalf("recipient field %q", form.Get("recipient"))
	}

	// The first post (followed to the page it redirects to), then a double
	// click: the same form twice at once.
	if code, page := do("POST", "/support/resend", form); code != 200 || !strings.Contains(page, "Resend #1 queued") {
		t.Fatalf("resend: %d %.400s", code, page)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, page := do("POST", "/support/resend", form); code != 200 && code != 422 {
				t.Errorf("re-post: %d %.300s", code, page)
			}
		}()
	}
	wg.Wait()
	// The page after a redirect, reloaded: it shows the plain page.
	if code, page := do("GET", "/support/", nil); code != 200 || strings.Contains(page, `id="flash"`) {
		t.Errorf("reload: %d, flash shown again: %v", code, strings.Contains(page, `id="flash"`))
	}
	teststack.Eventually(t, "the resend", 20*time.Second, func() bool { return sink.CountFor(addr) >= 2 })
	if r := lookup(t, st, addr).Notices[0]; len(r.Resends) != 1 {
		t.Errorf("%d resends queued, want 1", len(r.Resends))
	}
	if n := sink.CountFor(addr); n != 2 {
		t.Errorf("the relay got %d messages, want 2", n)
	}
}
