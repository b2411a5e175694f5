package auth_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/store"
)

// stacks starts n API processes over one Redis database and prefix, with
// env added to the test configuration.
func stacks(t *testing.T, n int, env map[string]string) []*teststack.Stack {
	t.Helper()
	_, u := testenv.Redis(t, testenv.DBAuth)
	var out []*teststack.Stack
	for range n {
		e := map[string]string{"REDIS_URL": u, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "acct"}
		for k, v := range env {
			e[k] = v
		}
		out = append(out, teststack.StartStack(t, testenv.Config(t, e), service.Options{API: true}))
	}
	return out
}

func call(t *testing.T, base, key, method, path, body string) (int, []byte) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return teststack.Do(t, base, key, method, path, ct, []byte(body), nil)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// TestAccountLifecycle: an admin creates an account; its key works at once
// on every process, for its role only; disable, enable, rotate and a new
// role are in force at once on the other process too; last use is shown;
// every change is audited with the admin as actor.
func TestAccountLifecycle(t *testing.T) {
	ss := stacks(t, 2, nil)
	a, b := ss[0].Base, ss[1].Base
	admin := testenv.AdminKey

	code, body := call(t, a, admin, "POST", "/v1/accounts", `{"name":"agent6","role":"support"}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	created := decode[app.AccountView](t, body)
	key := created.Key
	if !strings.HasPrefix(key, "osk_") || created.Role != "support" || created.Disabled || created.CreatedBy != "admin" || !created.HasKey {
		t.Fatalf("created: %s", body)
	}
	// Stored hashed: the key itself is nowhere in Redis.
	rdb := ss[0].Svc.Redis
	ks, _ := rdb.Keys(t.Context(), "*").Result()
	for _, k := range ks {
		vals, _ := rdb.HGetAll(t.Context(), k).Result()
		v, _ := rdb.Get(t.Context(), k).Result()
		if strings.Contains(fmt.Sprint(vals, v), key) {
			t.Errorf("the key is stored in clear under %s", k)
		}
	}
	support := "/v1/recipients?email=nobody@example.com"
	// probe answers the status of key on both processes for path.
	probe := func(key, path string) [2]int {
		ca, _ := call(t, a, key, "GET", path, "")
		cb, _ := call(t, b, key, "GET", path, "")
		return [2]int{ca, cb}
	}
	steps := []struct {
		name        string
		method, upd string // change made first on process a, by the admin key
		wantChange  int
		path        string
		want        [2]int
	}{
		{"new key works on both processes", "", "", 0, support, [2]int{200, 200}},
		{"support may not read the audit log", "", "", 0, "/v1/audit", [2]int{403, 403}},
		{"support may not manage accounts", "", "", 0, "/v1/accounts", [2]int{403, 403}},
		{"disabled: refused at once everywhere", "PATCH", `{"disabled":true}`, 200, support, [2]int{401, 401}},
		{"enabled again", "PATCH", `{"disabled":false}`, 200, support, [2]int{200, 200}},
		{"made admin: reads the audit log", "PATCH", `{"role":"admin"}`, 200, "/v1/audit", [2]int{200, 200}},
		{"made operator: no look-ups", "PATCH", `{"role":"operator"}`, 200, support, [2]int{403, 403}},
	}
	for _, s := range steps {
		if s.method != "" {
			if code, body := call(t, a, admin, s.method, "/v1/accounts/agent6", s.upd); code != s.wantChange {
				t.Fatalf("%s: change %d %s", s.name, code, body)
			}
		}
		if got := probe(key, s.path); got != s.want {
			t.Errorf("%s: GET %s answers %v, want %v", s.name, s.path, got, s.want)
		}
	}

	// Rotate: the new key works, the old stops, on both processes.
	code, body = call(t, b, admin, "POST", "/v1/accounts/agent6/rotate", "")
	rotated := decode[app.AccountView](t, body)
	if code != 200 || rotated.Key == "" || rotated.Key == key {
		t.Fatalf("rotate: %d %s", code, body)
	}
	if got := probe(key, "/v1/campaigns"); got != [2]int{401, 401} {
		t.Errorf("old key after rotation: %v, want 401 on both", got)
	}
	if got := probe(rotated.Key, "/v1/campaigns"); got != [2]int{200, 200} {
		t.Errorf("new key after rotation: %v, want 200 on both", got)
	}

	// List and get: role, disabled, created, last used; never the key.
	code, body = call(t, a, admin, "GET", "/v1/accounts", "")
	list := decode[struct{ Accounts []map[string]any }](t, body)
	if code != 200 || len(list.Accounts) != 1 || list.Accounts[0]["role"] != "operator" || list.Accounts[0]["disabled"] != false ||
		list.Accounts[0]["created_at"] == nil || list.Accounts[0]["last_used_at"] == nil || list.Accounts[0]["key"] != nil {
		t.Errorf("list: %d %s", code, body)
	}
	if strings.Contains(string(body), rotated.Key) || strings.Contains(string(body), "osk_") {
		t.Errorf("list shows a key: %s", body)
	}

	// Every change is in the audit log, with the admin as actor.
	_, body = call(t, a, admin, "GET", "/v1/audit?actor=admin", "")
	var got []string
	for _, e := range decode[struct{ Entries []store.AuditEntry }](t, body).Entries {
		if strings.HasPrefix(e.Action, "account.") {
			got = append([]string{e.Action}, got...)
		}
	}
	want := "account.create account.disable account.enable account.role account.role account.rotate"
	if strings.Join(got, " ") != want {
		t.Errorf("audit: %v, want %s", got, want)
	}

	if code, _ := call(t, a, admin, "DELETE", "/v1/accounts/agent6", ""); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if got := probe(rotated.Key, "/v1/campaigns"); got != [2]int{401, 401} {
		t.Errorf("deleted account's key: %v, want 401", got)
	}
	if code, _ := call(t, a, admin, "GET", "/v1/accounts/agent6", ""); code != 404 {
		t.Errorf("get deleted: %d, want 404", code)
	}
}

// TestAccountRefusals: bad input and privilege escalation are refused with
// a clear error, and change nothing.
func TestAccountRefusals(t *testing.T) {
	s := stacks(t, 1, nil)[0]
	mk := func(name, role string) string {
		code, body := call(t, s.Base, testenv.AdminKey, "POST", "/v1/accounts", fmt.Sprintf(`{"name":%q,"role":%q}`, name, role))
		if code != 201 {
			t.Fatalf("create %s: %d %s", name, code, body)
		}
		return decode[app.AccountView](t, body).Key
	}
	agent, boss := mk("agent", "support"), mk("boss", "admin")
	mk("boss2", "admin")

	for _, tc := range []struct {
		name, key, method, path, body string
		code                          int
		want                          string // in the answer
	}{
		{"support account raises its own role", agent, "PATCH", "/v1/accounts/agent", `{"role":"admin"}`, 403, "role support may not do this"},
		{"support account enables another", agent, "PATCH", "/v1/accounts/boss2", `{"disabled":true}`, 403, "role support may not do this"},
		{"support account creates an admin", agent, "POST", "/v1/accounts", `{"name":"x","role":"admin"}`, 403, "role support may not do this"},
		{"support account rotates its own key", agent, "POST", "/v1/accounts/agent/rotate", ``, 403, "role support may not do this"},
		{"support env key lists accounts", testenv.SupportKey, "GET", "/v1/accounts", ``, 403, "role support may not do this"},
		{"operator env key lists accounts", testenv.OperatorKey, "GET", "/v1/accounts", ``, 403, "role operator may not do this"},
		{"admin account demotes itself", boss, "PATCH", "/v1/accounts/boss", `{"role":"support"}`, 403, "own_account"},
		{"admin account disables itself", boss, "PATCH", "/v1/accounts/boss", `{"disabled":true}`, 403, "own_account"},
		{"admin account deletes itself", boss, "DELETE", "/v1/accounts/boss", ``, 403, "own_account"},
		{"unknown role", boss, "POST", "/v1/accounts", `{"name":"x","role":"root"}`, 422, `"field":"role"`},
		{"bad name", boss, "POST", "/v1/accounts", `{"name":"a b","role":"support"}`, 422, `"field":"name"`},
		{"name of an environment key", boss, "POST", "/v1/accounts", `{"name":"ops","role":"support"}`, 422, "OSHIRASE_API_KEYS"},
		{"name taken", boss, "POST", "/v1/accounts", `{"name":"agent","role":"support"}`, 409, "exists"},
		{"unknown field", boss, "PATCH", "/v1/accounts/agent", `{"admin":true}`, 400, "unknown field"},
		{"nothing to change", boss, "PATCH", "/v1/accounts/agent", `{}`, 422, "nothing_to_change"},
		{"no such account", boss, "PATCH", "/v1/accounts/ghost", `{"disabled":true}`, 404, "no such account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, s.Base, tc.key, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%d %s, want %d with %q", code, body, tc.code, tc.want)
			}
		})
	}
	// Nothing changed: agent is still support, boss still admin and enabled.
	_, body := call(t, s.Base, testenv.AdminKey, "GET", "/v1/accounts", "")
	for _, a := range decode[struct{ Accounts []app.AccountView }](t, body).Accounts {
		if want := map[string]string{"agent": "support", "boss": "admin", "boss2": "admin"}[a.Name]; a.Role != want || a.Disabled {
			t.Errorf("%s is now %s (disabled %v), want %s", a.Name, a.Role, a.Disabled, want)
		}
	}
}

// TestLastAdmin: without an admin key in OSHIRASE_API_KEYS, the admin
// accounts are the only way to manage anything; two admins disabling each
// other at the same moment must not both succeed.
func TestLastAdmin(t *testing.T) {
	s := stacks(t, 1, map[string]string{"OSHIRASE_API_KEYS": "ops:operator:" + testenv.OperatorKey})[0]
	st := s.Svc.Store
	for round := range 10 {
		keys := map[string]string{}
		for _, n := range []string{"a", "b"} {
			name := fmt.Sprintf("%s%d", n, round)
			// Bootstrapped in the store: no admin key exists to do it.
			secret, hash := newKey()
			if err := st.CreateAccount(t.Context(), store.Account{Name: name, Role: "admin", KeyHash: hash}); err != nil {
				t.Fatal(err)
			}
			keys[name] = secret
		}
		if round > 0 { // only this round's pair may be enabled admins
			for _, n := range []string{"a", "b"} {
				if _, _, err := st.ChangeAccount(t.Context(), fmt.Sprintf("%s%d", n, round-1), store.AccountChange{Op: "delete", OtherAdmins: 1}); err != nil {
					t.Fatal(err)
				}
			}
		}
		a, b := fmt.Sprintf("a%d", round), fmt.Sprintf("b%d", round)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		var bodies [2][]byte
		for i, pair := range [][2]string{{a, b}, {b, a}} {
			wg.Go(func() {
				codes[i], bodies[i] = call(t, s.Base, keys[pair[0]], "PATCH", "/v1/accounts/"+pair[1], `{"disabled":true}`)
			})
		}
		wg.Wait()
		ok := 0
		for i, c := range codes {
			switch {
			case c == 200:
				ok++
			case c == 409 && strings.Contains(string(bodies[i]), "last_admin"), c == 401: // the other was disabled first
			default:
				t.Errorf("round %d: %d %s", round, c, bodies[i])
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of the two disables went through (%v), want exactly 1", round, ok, codes)
		}
	}
}

func newKey() (string, string) { return auth.NewSecret() }

// browser is a browser on the support console (cookie jar; no JavaScript
// is needed: the console has none).
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar}}
}

func (c *browser) do(method, path string, form url.Values, hdr ...string) (int, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.base + path
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *browser) signIn(key string) string {
	c.t.Helper()
	_, page := c.do("GET", "/support/", nil)
	code, page := c.do("POST", "/support/login", url.Values{"login_token": {hidden(page, "login_token")}, "key": {key}})
	if code != 200 {
		c.t.Fatalf("sign-in: %d %.300s", code, page)
	}
	return page
}

func hidden(page, name string) string {
	m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return m[1]
}

func byID(page, id string) string {
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestConsoleAccountsPage: an admin manages accounts in the console; the
// new key is shown once (POST-redirect-GET), a reposted form does nothing
// twice, a disabled account's console session ends at once, non-admins
// and cross-site posts are refused.
func TestConsoleAccountsPage(t *testing.T) {
	ss := stacks(t, 2, nil)
	adm := newBrowser(t, ss[0].Base)
	adm.signIn(testenv.AdminKey)
	code, page := adm.do("GET", "/support/accounts", nil)
	if code != 200 || !strings.Contains(page, `id="create-form"`) {
		t.Fatalf("accounts page: %d %.300s", code, page)
	}
	form := url.Values{"csrf": {hidden(page, "csrf")}, "form_token": {hidden(page, "form_token")}, "name": {"agent7"}, "role": {"support"}}
	code, page = adm.do("POST", "/support/accounts/create", form)
	key := byID(page, "secret")
	if code != 200 || !strings.HasPrefix(key, "osk_") || !strings.Contains(page, `id="account-agent7"`) {
		t.Fatalf("create: %d %.500s", code, page)
	}
	if _, again := adm.do("GET", "/support/accounts", nil); strings.Contains(again, key) || strings.Contains(again, `id="secret"`) {
		t.Error("the key is shown again on reload")
	}
	// The same form posted again (a double click, a reload of the post)
	// creates nothing and shows no key.
	if _, page := adm.do("POST", "/support/accounts/create", form); !strings.Contains(byID(page, "error"), "already sent") || strings.Contains(page, `id="secret"`) {
		t.Errorf("repost: %.400s", page)
	}

	// The new agent signs in to the console on the other process.
	agent := newBrowser(t, ss[1].Base)
	if page := agent.signIn(key); byID(page, "actor") != "agent7" || strings.Contains(page, "accounts-link") {
		t.Fatalf("agent's page: %.300s", page)
	}
	if code, _ := agent.do("GET", "/support/accounts", nil); code != 403 {
		t.Errorf("agent opens the accounts page: %d, want 403", code)
	}
	_, apage := agent.do("GET", "/support/", nil)
	if code, _ := agent.do("POST", "/support/accounts/change", url.Values{"csrf": {hidden(apage, "csrf")}, "name": {"agent7"}, "op": {"role"}, "role": {"admin"}}); code != 403 {
		t.Errorf("agent raises own role in the console: %d, want 403", code)
	}

	// A cross-site post is refused before anything else.
	_, page = adm.do("GET", "/support/accounts", nil)
	disable := url.Values{"csrf": {hidden(page, "csrf")}, "form_token": {hidden(page, "form_token")}, "name": {"agent7"}, "op": {"disable"}}
	if code, _ := adm.do("POST", "/support/accounts/change", disable, "Origin", "https://evil.example"); code != 403 {
		t.Errorf("cross-site disable: %d, want 403", code)
	}
	if code, _ := adm.do("POST", "/support/accounts/change", url.Values{"name": {"agent7"}, "op": {"disable"}}); code != 403 {
		t.Errorf("disable without the CSRF token: %d, want 403", code)
	}
	if _, page := agent.do("GET", "/support/", nil); byID(page, "actor") != "agent7" {
		t.Fatal("the agent was signed out by a refused post")
	}

	// Disabled by the admin on process 0: the agent's session on process 1
	// ends with its next request.
	code, page = adm.do("POST", "/support/accounts/change", disable)
	if code != 200 || !strings.Contains(byID(page, "flash"), "disabled") {
		t.Fatalf("disable: %d %.400s", code, page)
	}
	if _, page := agent.do("GET", "/support/", nil); !strings.Contains(page, `id="login-form"`) {
		t.Errorf("disabled agent still signed in: %.300s", page)
	}
	if code, _ := call(t, ss[1].Base, key, "GET", "/v1/campaigns", ""); code != 401 {
		t.Errorf("disabled agent's key on the API: %d", code)
	}

	// Rotate in the console: the new key is shown once and works.
	_, page = adm.do("GET", "/support/accounts", nil)
	enable := url.Values{"csrf": {hidden(page, "csrf")}, "form_token": {hidden(page, "form_token")}, "name": {"agent7"}, "op": {"enable"}}
	if code, _ := adm.do("POST", "/support/accounts/change", enable); code != 200 {
		t.Fatal("enable")
	}
	rotate := url.Values{"csrf": {hidden(page, "csrf")}, "form_token": {hidden(page, "form_token")}, "name": {"agent7"}, "op": {"rotate"}}
	_, page = adm.do("POST", "/support/accounts/change", rotate)
	nk := byID(page, "secret")
	if nk == "" || nk == key {
		t.Fatalf("rotate: %.400s", page)
	}
	if c1, c2 := codeOf(t, ss[1].Base, key), codeOf(t, ss[1].Base, nk); c1 != 401 || c2 != 200 {
		t.Errorf("after rotation: old key %d, new key %d", c1, c2)
	}
}

func codeOf(t *testing.T, base, key string) int {
	code, _ := call(t, base, key, "GET", "/v1/campaigns", "")
	return code
}

// BenchmarkAuthenticate is the cost of finding a request's key: a key of
// OSHIRASE_API_KEYS (memory) and an account's (read from Redis each time).
func BenchmarkAuthenticate(b *testing.B) {
	rdb, _ := testenv.Redis(b, testenv.DBAuth)
	st := store.New(rdb, "bench")
	ks, err := auth.ParseKeys(testenv.APIKeys)
	if err != nil {
		b.Fatal(err)
	}
	keys := auth.NewKeys(ks)
	keys.UseAccounts(st)
	secret, hash := auth.NewSecret()
	if err := st.CreateAccount(b.Context(), store.Account{Name: "agent", Role: "support", KeyHash: hash}); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, secret string }{{"env", testenv.SupportKey}, {"account", secret}} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/v1/campaigns", nil)
			for b.Loop() {
				if _, err := keys.Authenticate(r, "api", bc.secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
