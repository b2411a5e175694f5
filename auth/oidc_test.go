package auth_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	opstorage "github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/console"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// The OpenID provider of these tests is zitadel/oidc's OP (pkg/op, a
// certified implementation of the protocol) with its example's in-memory
// storage and login form; the storage below only adds the people of the
// test and their groups claim. Nothing of oshirase is stubbed.

type opUsers struct {
	mu     sync.Mutex
	users  map[string]*opstorage.User
	groups map[string][]string // user id → groups
}

func (u *opUsers) GetUserByID(id string) *opstorage.User { return u.users[id] }
func (u *opUsers) GetUserByUsername(name string) *opstorage.User {
	for _, x := range u.users {
		if x.Username == name {
			return x
		}
	}
	return nil
}
func (u *opUsers) ExampleClientID() string { return "service" }

func (u *opUsers) setGroups(id string, gs ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.groups[id] = gs
}

// groupsStorage puts the user's groups in the ID token, as Keycloak's or
// Entra ID's group mappers do.
type groupsStorage struct {
	*opstorage.Storage
	users *opUsers
}

func (s *groupsStorage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, tr op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, tr, scopes); err != nil {
		return err
	}
	s.users.mu.Lock()
	defer s.users.mu.Unlock()
	ui.AppendClaims("groups", s.users.groups[tr.GetSubject()])
	return nil
}

// startOP runs the provider; redirect is oshirase's callback, registered
// for the client "oshirase".
func startOP(t *testing.T, redirect string) (*httptest.Server, *opUsers) {
	t.Helper()
	users := &opUsers{users: map[string]*opstorage.User{}, groups: map[string][]string{}}
	for _, n := range []string{"alice", "carol", "nobody"} {
		users.users["id-"+n] = &opstorage.User{ID: "id-" + n, Username: n, Password: "pw-" + n,
			Email: n + "@staff.example", EmailVerified: true, PreferredLanguage: language.Japanese}
	}
	users.groups["id-alice"] = []string{"everyone", "breach-admins"}
	users.groups["id-carol"] = []string{"callcentre"}
	users.groups["id-nobody"] = []string{"everyone"}
	srv := httptest.NewUnstartedServer(nil)
	// "localhost", not oshirase's 127.0.0.1: another site, as a real
	// provider is, so that a browser applies its cross-site cookie rules.
	issuer := "http://" + strings.Replace(srv.Listener.Addr().String(), "127.0.0.1", "localhost", 1)
	opstorage.RegisterClients(opstorage.WebClient("oshirase", "oshirase-client-secret", redirect))
	st := &groupsStorage{Storage: opstorage.NewStorage(users), users: users}
	srv.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, users
}

// oidcStack is oshirase's API and console (as service mounts them) with
// OIDC sign-in through a provider started for it.
type oidcStack struct {
	base  string
	op    *httptest.Server
	users *opUsers
	st    *store.Store
}

func startOIDCStack(t *testing.T) *oidcStack {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBAuth)
	hs := httptest.NewUnstartedServer(nil)
	base := "http://" + hs.Listener.Addr().String()
	opSrv, users := startOP(t, base+"/support/oidc/callback")
	roles, err := auth.ParseRoleMap("breach-admins=admin, callcentre=support")
	if err != nil {
		t.Fatal(err)
	}
	o, err := auth.NewOIDC(auth.OIDCConfig{Issuer: opURL(opSrv), ClientID: "oshirase", ClientSecret: "oshirase-client-secret",
		RedirectURL: base + "/support/oidc/callback", RoleMap: roles})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := auth.ParseKeys(testenv.APIKeys)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, "oidc")
	srv := api.New(api.Config{}, st, asynq.NewClientFromRedisClient(rdb), ts, auth.NewKeys(ks), nil, nil)
	con := console.New(srv.App(), srv.Keys(), st, console.Config{}, nil)
	con.EnableOIDC(o)
	srv.HandlePublic("/support/", con)
	hs.Config.Handler = srv
	hs.Start()
	t.Cleanup(hs.Close)
	return &oidcStack{base: base, op: opSrv, users: users, st: st}
}

// browser returns a console browser that stops before oshirase's callback,
// so a test can look at (or tamper with) it.
func (s *oidcStack) browser(t *testing.T) *browser {
	c := newBrowser(t, s.base)
	c.c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Path == "/support/oidc/callback" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return c
}

// toProvider begins a sign-in and signs in at the provider's login form;
// it returns the callback URL the provider sends the browser to.
func (s *oidcStack) toProvider(c *browser, user string) string {
	c.t.Helper()
	code, page := c.do("GET", "/support/oidc/login", nil)
	id := hidden(page, "id")
	if code != 200 || id == "" {
		c.t.Fatalf("provider's login form: %d %.300s", code, page)
	}
	req, _ := http.NewRequest("POST", opURL(s.op)+"/login/username",
		strings.NewReader(url.Values{"id": {id}, "username": {user}, "password": {"pw-" + user}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, s.base+"/support/oidc/callback?") {
		c.t.Fatalf("provider did not send the browser back: %d %q", resp.StatusCode, loc)
	}
	return loc
}

// signIn runs a whole sign-in and returns the console page after it.
func (s *oidcStack) signIn(c *browser, user string) (int, string) {
	c.t.Helper()
	code, page := c.do("GET", s.toProvider(c, user), nil)
	if code != 200 {
		return code, page
	}
	if !strings.Contains(page, `url=/support/`) {
		c.t.Fatalf("callback page: %.300s", page)
	}
	return c.do("GET", "/support/", nil)
}

func (s *oidcStack) account(t *testing.T, name string) app.AccountView {
	code, body := call(t, s.base, testenv.AdminKey, "GET", "/v1/accounts/"+name, "")
	if code != 200 {
		t.Fatalf("account %s: %d %s", name, code, body)
	}
	return decode[app.AccountView](t, body)
}

func (s *oidcStack) audit(t *testing.T, actor string) []store.AuditEntry {
	_, body := call(t, s.base, testenv.AdminKey, "GET", "/v1/audit?actor="+actor, "")
	return decode[struct{ Entries []store.AuditEntry }](t, body).Entries
}

// TestOIDCSignIn drives the authorization code flow end to end through the
// provider's login form: the group claim gives the role, at each sign-in;
// the person is an account, audited as themselves; a disabled account is
// refused and its open session ends at once.
func TestOIDCSignIn(t *testing.T) {
	s := startOIDCStack(t)

	for _, tc := range []struct {
		user, role string
		code       int
		want       string
	}{
		{"alice", "admin", 200, `id="accounts-link"`},
		{"carol", "support", 200, `id="search-form"`},
		{"nobody", "", 403, "None of your groups is given a role here"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			code, page := s.signIn(s.browser(t), tc.user)
			if code != tc.code || !strings.Contains(page, tc.want) {
				t.Fatalf("%d %.400s, want %d with %q", code, page, tc.code, tc.want)
			}
			if tc.role == "" {
				if c, _ := call(t, s.base, testenv.AdminKey, "GET", "/v1/accounts/"+tc.user, ""); c != 404 {
					t.Errorf("refused person has an account: %d", c)
				}
				return
			}
			if byID(page, "actor") != tc.user || !strings.Contains(page, "("+tc.role+")") {
				t.Errorf("signed in as %q, want %s (%s): %.300s", byID(page, "actor"), tc.user, tc.role, page)
			}
			a := s.account(t, tc.user)
			if a.Role != tc.role || !a.OIDC || a.HasKey || a.CreatedBy != "oidc" {
				t.Errorf("account: %+v", a)
			}
		})
	}

	// alice (admin through breach-admins) creates an account in the
	// console: the audit log names her.
	alice := s.browser(t)
	s.signIn(alice, "alice")
	_, page := alice.do("GET", "/support/accounts", nil)
	_, page = alice.do("POST", "/support/accounts/create", url.Values{"csrf": {hidden(page, "csrf")},
		"form_token": {hidden(page, "form_token")}, "name": {"agent9"}, "role": {"support"}})
	if byID(page, "secret") == "" {
		t.Fatalf("alice creates an account: %.400s", page)
	}
	var actions []string
	for _, e := range s.audit(t, "alice") {
		actions = append(actions, e.Action)
	}
	if strings.Join(actions, " ") != "account.create account.create" { // agent9, then her own at first sign-in
		t.Errorf("alice's audit entries: %v", actions)
	}

	// Her groups change at the provider: the next sign-in gives the new
	// role, audited.
	s.users.setGroups("id-alice", "callcentre")
	if _, page := s.signIn(s.browser(t), "alice"); !strings.Contains(page, "(support)") || strings.Contains(page, "accounts-link") {
		t.Errorf("alice after leaving breach-admins: %.300s", page)
	}
	if e := s.audit(t, "alice")[0]; e.Action != "account.role" || !strings.Contains(string(e.Details), `"to":"support"`) {
		t.Errorf("role change audit: %+v", e)
	}
	// Her older session (signed in as admin) follows the account: admin
	// pages are closed to it now.
	if code, _ := alice.do("GET", "/support/accounts", nil); code != 403 {
		t.Errorf("old session on the accounts page after demotion: %d, want 403", code)
	}

	// carol is disabled by an admin while signed in: her session ends with
	// her next request, and she cannot sign in again.
	carol := s.browser(t)
	if _, page := s.signIn(carol, "carol"); byID(page, "actor") != "carol" {
		t.Fatal("carol's sign-in")
	}
	if code, body := call(t, s.base, testenv.AdminKey, "PATCH", "/v1/accounts/carol", `{"disabled":true}`); code != 200 {
		t.Fatalf("disable carol: %d %s", code, body)
	}
	if _, page := carol.do("GET", "/support/", nil); !strings.Contains(page, `id="login-form"`) {
		t.Errorf("disabled carol still signed in: %.300s", page)
	}
	if code, page := s.signIn(s.browser(t), "carol"); code != 403 || !strings.Contains(page, "Your account is disabled") {
		t.Errorf("disabled carol signs in: %d %.300s", code, page)
	}
}

// TestOIDCCallbackRefusals: a callback that is not the one this browser's
// sign-in expects is refused, and signs nobody in.
func TestOIDCCallbackRefusals(t *testing.T) {
	s := startOIDCStack(t)
	// Beginning a sign-in is public and stores nothing in Redis.
	before, _ := s.st.Redis().DBSize(t.Context()).Result()
	for range 20 {
		b := s.browser(t)
		b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		if code, _ := b.do("GET", "/support/oidc/login", nil); code != 302 {
			t.Fatalf("begin sign-in: %d", code)
		}
	}
	if after, _ := s.st.Redis().DBSize(t.Context()).Result(); after != before {
		t.Errorf("20 sign-ins begun: %d keys in Redis, %d before", after, before)
	}
	for _, tc := range []struct {
		name string
		// tamper changes the callback URL (or the sign-in kept in Redis)
		// and returns the URL to open and the browser to open it with.
		tamper func(c *browser, cb string) (*browser, string)
		code   int
		want   string
	}{
		{"as sent", func(c *browser, cb string) (*browser, string) { return c, cb }, 200, "url=/support/"},
		{"wrong state", func(c *browser, cb string) (*browser, string) {
			return c, replaceParam(cb, "state", "forged-state")
		}, 403, "did not start here"},
		{"another browser (no state cookie)", func(c *browser, cb string) (*browser, string) {
			return s.browser(c.t), cb
		}, 403, "did not start here"},
		{"wrong nonce", func(c *browser, cb string) (*browser, string) {
			state, _, verifier := s.pending(c)
			s.setPending(c, state+".not-the-nonce-in-the-token."+verifier)
			return c, cb
		}, 401, "did not sign you in"},
		{"wrong PKCE verifier", func(c *browser, cb string) (*browser, string) {
			state, nonce, verifier := s.pending(c)
			// Another first character, whatever the first one is (1 in 64
			// verifiers starts with "a").
			other := "a"
			if verifier[0] == 'a' {
				other = "b"
			}
			s.setPending(c, state+"."+nonce+"."+other+verifier[1:])
			return c, cb
		}, 401, "did not sign you in"},
		{"code and state replayed", func(c *browser, cb string) (*browser, string) {
			state, nonce, verifier := s.pending(c)
			if code, _ := c.do("GET", cb, nil); code != 200 {
				c.t.Fatalf("first use: %d", code)
			}
			// Replayed by someone who also stole the sign-in's cookie:
			// the provider takes a code once.
			thief := s.browser(c.t)
			s.setPending(thief, state+"."+nonce+"."+verifier)
			return thief, cb
		}, 401, "did not sign you in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.browser(t)
			cb := s.toProvider(c, "carol")
			c2, u := tc.tamper(c, cb)
			code, page := c2.do("GET", u, nil)
			if code != tc.code || !strings.Contains(page, tc.want) {
				t.Fatalf("%d %.300s, want %d with %q", code, page, tc.code, tc.want)
			}
			_, page = c2.do("GET", "/support/", nil)
			if signed := !strings.Contains(page, `id="login-form"`); signed != (tc.code == 200) {
				t.Errorf("signed in: %v after %d", signed, tc.code)
			}
		})
	}
}

// pending returns the sign-in c's cookie holds: state, nonce, verifier.
func (s *oidcStack) pending(c *browser) (state, nonce, verifier string) {
	u, _ := url.Parse(s.base + "/support/oidc/callback")
	for _, ck := range c.c.Jar.Cookies(u) {
		if ck.Name == "oshirase_oidc" {
			p := strings.Split(ck.Value, ".")
			if len(p) == 3 {
				return p[0], p[1], p[2]
			}
		}
	}
	c.t.Fatal("no sign-in cookie")
	return
}

func (s *oidcStack) setPending(c *browser, v string) {
	u, _ := url.Parse(s.base + "/support/")
	c.c.Jar.SetCookies(u, []*http.Cookie{{Name: "oshirase_oidc", Value: v, Path: "/support/"}})
}

func replaceParam(u, name, v string) string {
	p, _ := url.Parse(u)
	q := p.Query()
	q.Set(name, v)
	p.RawQuery = q.Encode()
	return p.String()
}

// TestOIDCSettings: the OIDC_* settings reach the console of `serve` (the
// sign-in link, the redirect to the provider with PKCE and a nonce), and a
// half-done configuration stops the start with what is missing.
func TestOIDCSettings(t *testing.T) {
	opSrv, _ := startOP(t, "http://127.0.0.1:1/support/oidc/callback")
	for _, tc := range []struct {
		name string
		env  map[string]string
		err  string // "" = starts
	}{
		{"complete", map[string]string{"OIDC_ROLE_MAP": "breach-admins=admin"}, ""},
		{"no role map", map[string]string{}, "OIDC_ROLE_MAP"},
		{"bad role", map[string]string{"OIDC_ROLE_MAP": "breach-admins=root"}, `OIDC_ROLE_MAP entry 1 (breach-admins): role "root"`},
		{"no client id", map[string]string{"OIDC_ROLE_MAP": "a=admin", "OIDC_CLIENT_ID": ""}, "OIDC_CLIENT_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, u := testenv.Redis(t, testenv.DBAuth)
			env := map[string]string{"REDIS_URL": u, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "acct",
				"OIDC_ISSUER": opURL(opSrv), "OIDC_CLIENT_ID": "oshirase", "OIDC_REDIRECT_URL": "http://127.0.0.1:1/support/oidc/callback"}
			for k, v := range tc.env {
				env[k] = v
			}
			cfg := testenv.Config(t, env)
			cfg.ListenAddr, cfg.APIKeys = "127.0.0.1:0", testenv.APIKeys
			svc, err := service.New(t.Context(), cfg, slog.New(slog.DiscardHandler), service.Options{API: true})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("start: %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			hs := httptest.NewServer(svc.API)
			defer hs.Close()
			b := newBrowser(t, hs.URL)
			if _, page := b.do("GET", "/support/", nil); !strings.Contains(page, `id="oidc-login"`) {
				t.Fatalf("no OIDC sign-in on the page: %.300s", page)
			}
			b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			req, _ := http.NewRequest("GET", hs.URL+"/support/oidc/login", nil)
			resp, err := b.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			q := loc.Query()
			if resp.StatusCode != 302 || !strings.HasPrefix(loc.String(), opURL(opSrv)) || q.Get("code_challenge_method") != "S256" ||
				q.Get("nonce") == "" || q.Get("state") == "" || q.Get("client_id") != "oshirase" {
				t.Errorf("redirect to the provider: %d %s", resp.StatusCode, loc)
			}
		})
	}
}

// opURL is the provider's issuer URL (on localhost).
func opURL(s *httptest.Server) string { return strings.Replace(s.URL, "127.0.0.1", "localhost", 1) }
