package templates

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oshirase/oshirase/internal/testenv"
)

var screenshots = flag.Bool("screenshots", false, "rewrite the phone-width screenshots in docs/notices")

// Phone widths in CSS pixels: an iPhone SE (320), most Android phones
// (360), a large iPhone (390).
var phoneWidths = []int64{320, 360, 390}

// TestNoticesFitPhones renders the HTML of every template and locale, with
// the sample data (whose update URL is long) and a recipient, in headless
// Chromium at phone widths: nothing may be wider than the screen — a URL
// that runs off it cannot be read whole, and a reader told to check a link
// must see all of it. With -screenshots it saves what a 360 px phone shows
// as docs/notices/<template>.<locale>.png.
func TestNoticesFitPhones(t *testing.T) {
	ctx := testenv.Browser(t, 3*time.Minute, chromedp.Flag("hide-scrollbars", true))
	s := mustLoad(t, "")
	pages := map[string]string{}
	for _, name := range names {
		for _, loc := range Locales {
			in := sampleInput(t, s, name, loc)
			// Links as long as real announcements' are: a URL has no
			// place to break unless the page lets it.
			data := make(map[string]any, len(in.Data))
			for k, v := range in.Data {
				data[k] = v
			}
			data["url"] = "https://www.example.co.jp/info/2019/06/01/notice-of-unauthorized-access-to-card-information.html"
			if _, ok := data["reset_url"]; ok {
				data["reset_url"] = "https://www.example.co.jp/members/account/password/reset?from=notice-20190601"
			}
			in.Data = data
			in.Paragraphs = []string{map[string]string{"ja": "本件に関するお問い合わせが大変混み合っております。", "en": "Our phone lines are very busy."}[loc]}
			pages["/"+name+"."+loc] = render(t, s, name, in).HTML
		}
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	defer hs.Close()

	// The right edge of the widest element, and the page's own width.
	const measure = `(() => {
		let right = 0, widest = "";
		for (const e of document.querySelectorAll("body *")) {
			const r = e.getBoundingClientRect();
			if (r.right > right) { right = r.right; widest = e.tagName + " " + (e.textContent || "").trim().slice(0, 60); }
		}
		return {right: right, widest: widest, scroll: document.documentElement.scrollWidth};
	})()`
	type width struct {
		Right  float64 `json:"right"`
		Widest string  `json:"widest"`
		Scroll float64 `json:"scroll"`
	}
	for _, name := range names {
		for _, loc := range Locales {
			path := "/" + name + "." + loc
			for _, w := range phoneWidths {
				err := chromedp.Do(ctx,
					chromedp.EmulateViewport(w, 740, chromedp.EmulateScale(1)),
					chromedp.Navigate(hs.URL+path),
					chromedp.WaitReady(chromedp.CSS("body")),
				)
				if err != nil {
					t.Fatalf("%s at %d px: %v", path, w, err)
				}
				got, err := chromedp.Run(ctx, chromedp.Evaluate[width](measure))
				if err != nil {
					t.Fatalf("%s at %d px: %v", path, w, err)
				}
				if got.Right > float64(w) || got.Scroll > float64(w) {
					t.Errorf("%s at %d px: %.0f px wide (page %.0f px), widest: %s", path, w, got.Right, got.Scroll, got.Widest)
				}
				if *screenshots && w == 360 {
					png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
					if err != nil {
						t.Fatal(err)
					}
					file := filepath.Join("..", "docs", "notices", name+"."+loc+".png")
					if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, png, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}
