package console

import (
	"cmp"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"

	"golang.org/x/net/idna"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// searchView is the search part of the page: the query (also what the
// sign-in form carries back to it), what it found, and a resend form to
// show again after a refusal.
type searchView struct {
	Query  string
	Search *app.SearchResult
	// AddrSuppression: the query is an address on the suppression list
	// (shown when no notice shows it: one banner per address).
	AddrSuppression *store.Suppression
	AddrQuery       bool   // the query is a whole address
	Zone            string // the one zone every time on the page is in
	Form            *formState
	Next, Prev      string // URLs of the next and previous page
	Sent            *app.SentNotice
}

// formState is a resend form as it was posted, shown again with the
// reason why it was refused; Override asks for the suppression override.
type formState struct {
	Campaign  string
	Recipient int64
	Reason    string
	Email     string
	Locale    string
	Override  bool
}

// For reports whether the form state belongs to notice n's form.
func (f *formState) For(n app.Notice) bool {
	return f != nil && f.Campaign == n.Campaign.ID && f.Recipient == n.ID
}

type searchArgs struct {
	q, cursor     string
	flash, errMsg string
	status        int // with errMsg: the page's status (422 if 0)
	form          *formState
}

// searchURL is the shareable address of a search (and of one of its pages).
func searchURL(q, cursor string) string {
	if strings.TrimSpace(q) == "" {
		return "/support/"
	}
	v := url.Values{"q": {strings.TrimSpace(q)}}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	return "/support/?" + v.Encode()
}

// zoneName names the zone the console shows times in: the server's (TZ).
func zoneName() string {
	name, _ := time.Now().Zone()
	if l := time.Local.String(); l != "Local" && l != name {
		return name + " (" + l + ")"
	}
	return name
}

// showSearch renders the page with what q finds.
func (c *Console) showSearch(w http.ResponseWriter, r *http.Request, s *session, a searchArgs) {
	v := c.signedView(s)
	v.Query, v.Flash, v.Error, v.Form = strings.TrimSpace(a.q), a.flash, a.errMsg, a.form
	status := http.StatusOK
	if a.errMsg != "" {
		status = cmp.Or(a.status, http.StatusUnprocessableEntity)
	}
	cursor, _ := strconv.Atoi(a.cursor)
	res, err := c.app.Search(r.Context(), v.Query, cursor, app.SearchLimit)
	if err != nil {
		c.refused(w, r, v, err, searching)
		return
	}
	v.Search = res
	if res.NextCursor != "" {
		v.Next = searchURL(v.Query, res.NextCursor)
	}
	if cursor > 0 {
		v.Prev = searchURL(v.Query, strconv.Itoa(max(0, cursor-app.SearchLimit)))
	}
	if addr := ingest.NormalizeEmail(v.Query); addr != "" {
		v.AddrQuery = true
		sup, err := c.store.Suppression(r.Context(), addr)
		switch {
		case err == nil:
			v.AddrSuppression = sup
		case !errors.Is(err, store.ErrNotFound):
			c.fail(w, r, err)
			return
		}
	}
	c.render(w, r, status, v)
}

// duration says d in whole minutes and seconds.
func duration(r *http.Request, d time.Duration) string {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	if secs < 60 {
		return tr(r, "%d seconds", secs)
	}
	return tr(r, "%d min %d s", secs/60, secs%60)
}

// localeName names a notice language.
func localeName(l string) string {
	switch l {
	case notice.LocaleJA:
		return "Japanese"
	case notice.LocaleEN:
		return "English"
	}
	return l
}

// unicodeAddr shows an address with an internationalised domain as people
// write it (user@例え.jp), with the stored punycode beside it.
func unicodeAddr(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !strings.Contains(addr[at:], "xn--") {
		return addr
	}
	d, err := idna.Lookup.ToUnicode(addr[at+1:])
	if err != nil {
		return addr
	}
	return addr[:at+1] + d + " (" + addr + ")"
}

// signedInGet guards a page a signed-in agent reads: a live session; no
// form, so no CSRF token (the page changes nothing).
func (c *Console) signedInGet(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.current(r)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if s == nil {
			c.loginPage(w, r, http.StatusUnauthorized, tr(r, "Please sign in."))
			return
		}
		h(w, r.WithContext(auth.WithActor(r.Context(), s.key)), s)
	}
}

// noticePage shows one notice as it was sent (GET
// /support/notice?campaign=&recipient=&resend=&q=): the text part,
// rendered as the worker rendered it. Audited as a read of personal data.
func (c *Console) noticePage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	v := c.signedView(s)
	v.Query = q.Get("q")
	rid, err := strconv.ParseInt(q.Get("recipient"), 10, 64)
	n, _ := strconv.Atoi(q.Get("resend"))
	if err != nil || rid < 1 || q.Get("campaign") == "" || n < 0 {
		v.Error = tr(r, "This link is incomplete; search again.")
		c.render(w, r, http.StatusBadRequest, v)
		return
	}
	sent, err := c.app.RenderSent(r.Context(), q.Get("campaign"), rid, n)
	if err != nil {
		c.refused(w, r, v, err, viewing)
		return
	}
	v.Sent = sent
	c.render(w, r, http.StatusOK, v)
}
