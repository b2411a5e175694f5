// Package console is the support web console at /support/: a support person
// signs in with an API key, looks an address up, sees every notice sent to
// it and resends one with a reason. Pages are rendered on the server with
// html/template; there is no JavaScript and no front-end build.
//
// The API key is asked for once and never stored in the browser: sign-in
// makes an opaque random session id, kept in Redis with a TTL, and sets it
// as an HttpOnly, SameSite=Strict cookie (Secure over TLS). Every form post
// carries the session's CSRF token. Addresses are shown, never logged.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
)

//go:embed templates/*.html
var files embed.FS

const (
	sessionCookie = "oshirase_support"
	loginCookie   = "oshirase_login"
	cookiePath    = "/support/"
)

// Console serves the support console. Mount it at /support/ without the
// API's authentication: it does its own.
type Console struct {
	oidc    *auth.OIDC // nil: no sign-in through an identity provider
	app     *app.App
	idemTTL time.Duration // how long a form's outcome is kept (IDEMPOTENCY_TTL)
	keys    *auth.Keys
	store   *store.Store
	log     *slog.Logger
	ttl     time.Duration
	mux     *http.ServeMux
}

// Config is what the console needs besides its parts.
type Config struct {
	SessionTTL     time.Duration // how long a sign-in lasts (8 hours if 0)
	IdempotencyTTL time.Duration // how long a form's outcome is kept (IDEMPOTENCY_TTL; 24 h if 0)
}

// New returns a console over the application (look-ups, resends and
// accounts go through the same code as the API, audit included), the key
// set (sign-in) and the store (sessions).
func New(a *app.App, keys *auth.Keys, st *store.Store, cfg Config, log *slog.Logger) *Console {
	ttl := cfg.SessionTTL
	if ttl <= 0 {
		ttl = 8 * time.Hour
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Console{app: a, idemTTL: cfg.IdempotencyTTL, keys: keys, store: st, log: log, ttl: ttl, mux: http.NewServeMux()}
	c.mux.HandleFunc("GET /support/{$}", c.index)
	c.mux.HandleFunc("POST /support/login", c.login)
	c.mux.HandleFunc("POST /support/logout", c.signedIn(c.logout))
	c.mux.HandleFunc("POST /support/search", c.signedIn(c.search))
	c.mux.HandleFunc("POST /support/resend", c.signedIn(c.resend))
	c.mux.HandleFunc("GET /support/notice", c.signedInGet(c.noticePage))
	c.accountRoutes()
	c.mux.HandleFunc("/support/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/support/", http.StatusSeeOther)
	})
	return c
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make Chromium send "Origin: null"
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost && !auth.SameOrigin(r) {
		http.Error(w, "cross-origin form post refused", http.StatusForbidden)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// view is what the page template shows.
type view struct {
	Lang       string // ja or en
	Signed     bool
	Actor      string
	Role       auth.Role
	CSRF       string
	LoginToken string
	OIDC       bool // sign-in through the identity provider is offered
	// FormToken is sent with each resend form as its Idempotency-Key: a
	// reload or a double click posts the same token and sends nothing twice.
	FormToken string
	Error     string
	Flash     string
	searchView
}

// session is a signed-in request's state.
type session struct {
	id   string
	data *store.Session
	key  *auth.Key
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, v view) {
	v.Lang = lang(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", v.Lang)
	w.WriteHeader(status)
	if err := pages[v.Lang].Execute(w, v); err != nil {
		c.log.Error("support console: render", "err", err)
	}
}

// secure reports whether the browser reached us over HTTPS: directly, or
// through a TLS-terminating proxy that says so (X-Forwarded-Proto, or
// Forwarded: proto=https). Cookies are then Secure: never sent in clear.
func secure(r *http.Request) bool {
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return true
	}
	return strings.Contains(strings.ToLower(r.Header.Get("Forwarded")), "proto=https")
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (c *Console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	}
}

// current returns the request's session, or nil when it has none that is
// live and whose key may still use the console.
func (c *Console) current(r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	data, err := c.store.Session(r.Context(), ck.Value)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Resolved on every request (an account is read from Redis): a key or
	// account removed, disabled, given another role or another key ends
	// its sessions at once, on every process.
	key, err := c.keys.Resolve(r.Context(), data.KeyName)
	if errors.Is(err, auth.ErrBadKey) || errors.Is(err, auth.ErrDisabled) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !mayUse(key.Role) || !equal(sessionFP(key, data.Via), data.KeyFP) {
		return nil, nil // may no longer use the console, or was replaced
	}
	return &session{id: ck.Value, data: data, key: key}, nil
}

func mayUse(r auth.Role) bool { return r == auth.RoleAdmin || r == auth.RoleSupport }

func (c *Console) index(w http.ResponseWriter, r *http.Request) {
	if l := r.URL.Query().Get("lang"); l == "ja" || l == "en" {
		// Remembered for a year; the page shows in it from now on.
		http.SetCookie(w, c.cookie(r, langCookie, l, 365*24*3600))
		http.Redirect(w, r, searchURL(r.URL.Query().Get("q"), ""), http.StatusSeeOther)
		return
	}
	s, err := c.current(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if s == nil {
		c.loginPage(w, r, http.StatusOK, "")
		return
	}
	// After a resend the browser lands here (POST-redirect-GET): show what
	// the post did, once; a reload shows the plain page.
	f, err := c.store.TakeFlash(r.Context(), s.id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	flash, errMsg := "", ""
	if f != nil && f.Query == q.Get("q") {
		flash, errMsg = f.Flash, f.Error
	}
	if q.Has("q") {
		c.showSearch(w, r, s, searchArgs{q: q.Get("q"), cursor: q.Get("cursor"), flash: flash, errMsg: errMsg})
		return
	}
	v := c.signedView(s)
	v.Flash, v.Error = flash, errMsg
	c.render(w, r, http.StatusOK, v)
}

func (c *Console) signedView(s *session) view {
	return view{Signed: true, Actor: s.key.Name, Role: s.key.Role, CSRF: s.data.CSRF, FormToken: randomToken(), searchView: searchView{Zone: zoneName()}}
}

// loginPage shows the sign-in form with a fresh token that the form must
// send back, and a cookie that must match it (a sign-in CSRF guard).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(w, c.cookie(r, loginCookie, tok, 600))
	// A shared search link opened before signing in comes back to it.
	v := view{LoginToken: tok, Error: msg, OIDC: c.oidc != nil}
	v.Query = r.FormValue("q")
	c.render(w, r, status, v)
}

func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	return r.ParseForm()
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		c.loginPage(w, r, http.StatusBadRequest, tr(r, "The form could not be read."))
		return
	}
	lc, err := r.Cookie(loginCookie)
	if err != nil || !equal(lc.Value, r.PostFormValue("login_token")) {
		c.loginPage(w, r, http.StatusForbidden, tr(r, "The sign-in form expired; please try again."))
		return
	}
	// Authenticate logs and counts a wrong key (the source, never the
	// key) and slows down a source that keeps trying.
	key, err := c.keys.Authenticate(r, "console", r.PostFormValue("key"))
	var te *auth.ThrottledError
	if errors.As(err, &te) {
		secs := int(math.Ceil(te.RetryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		c.loginPage(w, r, http.StatusTooManyRequests, tr(r, "Too many wrong keys from this address; try again in %d seconds.", max(secs, 1)))
		return
	}
	if err != nil {
		c.loginPage(w, r, http.StatusUnauthorized, tr(r, "That key is not valid."))
		return
	}
	if !mayUse(key.Role) {
		c.log.Warn("support console: sign-in refused for role", "key", key.Name, "role", key.Role)
		c.loginPage(w, r, http.StatusForbidden, tr(r, "Only support and admin keys may use the support console."))
		return
	}
	id := randomToken()
	data := store.Session{KeyName: key.Name, KeyFP: key.Fingerprint(), CSRF: randomToken(), At: time.Now().UTC()}
	if err := c.store.CreateSession(r.Context(), id, data, c.ttl); err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, c.cookie(r, loginCookie, "", -1))
	http.SetCookie(w, c.cookie(r, sessionCookie, id, int(c.ttl/time.Second)))
	c.log.Info("support console: signed in", "key", key.Name)
	http.Redirect(w, r, searchURL(r.PostFormValue("q"), ""), http.StatusSeeOther)
}

// signedIn guards a form post: a live session (signedInGet) and its CSRF
// token.
func (c *Console) signedIn(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return c.signedInGet(func(w http.ResponseWriter, r *http.Request, s *session) {
		if err := parseForm(w, r); err != nil {
			http.Error(w, "the form could not be read", http.StatusBadRequest)
			return
		}
		if !equal(s.data.CSRF, r.PostFormValue("csrf")) {
			http.Error(w, "the form's security token is missing or stale; reload the page", http.StatusForbidden)
			return
		}
		h(w, r, s)
	})
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := c.store.DeleteSession(r.Context(), s.id); err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/support/", http.StatusSeeOther)
}

// search answers the search form of older pages (a post): searches are
// GETs with a URL that can be shared (/support/?q=…).
func (c *Console) search(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.PostFormValue("q")
	if q == "" {
		q = r.PostFormValue("email")
	}
	http.Redirect(w, r, searchURL(q, ""), http.StatusSeeOther)
}

func (c *Console) resend(w http.ResponseWriter, r *http.Request, s *session) {
	f := r.PostForm
	q := f.Get("q")
	rid, err := strconv.ParseInt(f.Get("recipient"), 10, 64)
	cid := f.Get("campaign")
	if err != nil || rid < 1 || cid == "" {
		c.showSearch(w, r, s, searchArgs{q: q, errMsg: tr(r, "The resend form is incomplete; search again.")})
		return
	}
	req := app.ResendRequest{
		Reason: f.Get("reason"), Email: f.Get("email"), OverrideSuppression: f.Get("override_suppression") != "",
		Locale: f.Get("locale"),
	}
	again := searchArgs{q: q, form: &formState{Campaign: cid, Recipient: rid, Reason: req.Reason, Email: req.Email, Locale: req.Locale}}
	// The form's one-time token is its Idempotency-Key, as the API's: the
	// first post runs, a reload or second click of the same form replays
	// its outcome and queues nothing.
	token := f.Get("form_token")
	var scope, claim string
	if token != "" {
		scope = store.IdemScope(s.key.Name, "POST", fmt.Sprintf("/support/resend/%s/%d", cid, rid), "console:"+token)
		fp := sha256.Sum256([]byte(req.Reason + "\x00" + req.Email + "\x00" + strconv.FormatBool(req.OverrideSuppression) + "\x00" + req.Locale))
		ans, tok, err := c.store.BeginIdempotent(r.Context(), scope, hex.EncodeToString(fp[:]), 5*time.Minute)
		switch {
		case errors.Is(err, store.ErrIdemRunning):
			again.errMsg = tr(r, "This resend is already being queued.")
			c.showSearch(w, r, s, again)
			return
		case errors.Is(err, store.ErrIdemMismatch):
			again.errMsg = tr(r, "This form was already sent; search again for a new resend.")
			c.showSearch(w, r, s, again)
			return
		case err != nil:
			c.fail(w, r, err)
			return
		case ans != nil:
			c.redirectFlash(w, r, s, store.ConsoleFlash{Query: q, Flash: string(ans.Body)})
			return
		}
		claim = tok
	}
	rs, err := c.app.Resend(r.Context(), cid, rid, req)
	var msg string
	if err == nil {
		msg = tr(r, "Resend #%d queued to %s.", rs.N, rs.Email)
		if rs.Locale != "" {
			msg += tr(r, " It goes in %s.", tr(r, localeName(rs.Locale)))
		}
	}
	c.settleForm(r.Context(), scope, claim, msg, err)
	retryAfter(w, err)
	if err == nil {
		c.redirectFlash(w, r, s, store.ConsoleFlash{Query: q, Flash: msg})
		return
	}
	msg, status, ok := explain(r, err, resending)
	if !ok {
		c.fail(w, r, err)
		return
	}
	suppressed := app.CodeOf(err) == app.CodeSuppressed
	if suppressed {
		msg = c.suppressedMsg(r, cid, rid, req.Email, msg)
	}
	again.errMsg, again.status, again.form.Override = msg, status, suppressed
	c.showSearch(w, r, s, again)
}

// suppressedMsg is msg with the suppression of the address a resend went
// to (the corrected one, else the recipient's): since when and why.
func (c *Console) suppressedMsg(r *http.Request, cid string, rid int64, to, msg string) string {
	if to == "" {
		if rc, err := c.store.Recipient(r.Context(), cid, rid); err == nil {
			to = rc.Email
		}
	}
	if sup, err := c.store.Suppression(r.Context(), app.LookupForm(to)); err == nil {
		return tr(r, "Not resent: %s is on the suppression list since %s (%s): mail to it bounced or was blocked. To send anyway, tick “send despite the suppression list” and resend.",
			to, fmtTime(sup.At), sup.Reason)
	}
	return msg
}

// settleForm ends a form's claim on its one-time token (claim "": none):
// released when the action failed, so the same form may be posted again
// (nothing was done); kept with its flash msg as the form's outcome when
// it succeeded, so a reload replays it and does nothing twice.
func (c *Console) settleForm(ctx context.Context, scope, claim, msg string, err error) {
	if claim == "" {
		return
	}
	bg := context.WithoutCancel(ctx)
	if err != nil {
		if err := c.store.AbandonIdempotent(bg, scope, claim); err != nil {
			c.log.Error("support console: idempotency release", "err", err)
		}
		return
	}
	if err := c.store.FinishIdempotent(bg, scope, claim,
		store.IdemAnswer{Status: http.StatusSeeOther, Body: []byte(msg)}, c.idemTTL); err != nil {
		c.log.Error("support console: idempotency answer", "err", err)
	}
}

// redirectFlash ends a form post that did something with a redirect to the
// page (POST-redirect-GET), which shows f once: reloading it posts nothing.
func (c *Console) redirectFlash(w http.ResponseWriter, r *http.Request, s *session, f store.ConsoleFlash) {
	if err := c.store.SetFlash(r.Context(), s.id, f); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, searchURL(f.Query, ""), http.StatusSeeOther)
}

// fail answers an internal error; the detail goes to the log (errors from
// the store carry ids, never addresses).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	c.log.Error("support console", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error; see the server log", http.StatusInternalServerError)
}
