package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/oshirase/oshirase/internal/testenv"
)

// chrome starts a headless Chromium (testenv.Browser).
func chrome(t *testing.T) context.Context { return testenv.Browser(t, 60*time.Second) }

// TestOIDCBrowser signs in through the provider in a real Chromium (the
// provider on another site, so the browser's SameSite rules apply to the
// way back), then creates an account on the accounts page: the key is
// shown once, and not after a reload.
func TestOIDCBrowser(t *testing.T) {
	ctx := chrome(t)
	s := startOIDCStack(t)
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
		chromedp.Navigate(s.base+"/support/"),
		chromedp.Click(css("#oidc-login")),
		chromedp.WaitVisible(css("#username")),
		chromedp.SendKeys(css("#username"), "alice"),
		chromedp.SendKeys(css("#password"), "pw-alice"),
		chromedp.Click(css(`button[type="submit"]`)),
		chromedp.WaitVisible(css("#accounts-link")),
	)
	if err != nil {
		t.Fatalf("sign in through the provider: %v", err)
	}
	actor := text("#actor")
	err = chromedp.Do(ctx,
		chromedp.Click(css("#accounts-link")),
		chromedp.WaitVisible(css("#new-name")),
		chromedp.SendKeys(css("#new-name"), "agent12"),
		chromedp.SetValue(css("#new-role"), "operator"),
		chromedp.Click(css("#create")),
		chromedp.WaitVisible(css("#secret")),
	)
	if err != nil {
		t.Fatalf("create an account: %v", err)
	}
	secret, flash := text("#secret"), text("#flash")
	if actor != "alice" || !strings.HasPrefix(secret, "osk_") || !strings.Contains(flash, "agent12") {
		t.Fatalf("actor %q, secret %q, flash %q", actor, secret, flash)
	}
	if a := s.account(t, "agent12"); a.Role != "operator" || a.CreatedBy != "alice" {
		t.Errorf("created: %+v", a)
	}
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(css("#account-agent12"))); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("#secret") !== null`))
	if err != nil {
		t.Fatal(err)
	}
	if shown {
		t.Error("the key is shown again after a reload")
	}
}
