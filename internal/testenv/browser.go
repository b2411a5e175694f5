package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is where Debian's chromium package puts the browser
// (scripts/test.sh installs it).
const Chromium = "/usr/bin/chromium"

// Browser starts a headless Chromium with a fresh profile and no network
// chatter of its own, for at most timeout; extra options add to the
// defaults. It is slow, so -short skips the test, as does a machine without
// Chromium. The browser is gone when the test ends.
func Browser(t testing.TB, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	Slow(t, "a real browser")
	if _, err := os.Stat(Chromium); err != nil {
		t.Skip("chromium not installed (scripts/test.sh installs it)")
	}
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()),
	}, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(bctx, timeout)
	t.Cleanup(func() { cancel(); cancelBrowser(); cancelAlloc() })
	return ctx
}
