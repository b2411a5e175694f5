package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
)

// TestSupportConsoleGuards checks the console's doors without a browser:
// who may sign in, what the cookie holds, and that posts need the CSRF token.
func TestSupportConsoleGuards(t *testing.T) {
	rdb, url0 := testenv.Redis(t, testenv.DBSupport)
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url0, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "con"})
	st := teststack.StartStack(t, cfg, service.Options{API: true})

	type result struct {
		code int
		body string
	}
	newClient := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar}
	}
	do := func(cl *http.Client, method, path string, form url.Values, origin string) result {
		t.Helper()
		req, _ := http.NewRequest(method, st.Base+path, strings.NewReader(form.Encode()))
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return result{resp.StatusCode, string(b)}
	}
	signIn := func(key string) (*http.Client, result) {
		cl := newClient()
		r := do(cl, "GET", "/support/", nil, "")
		return cl, do(cl, "POST", "/support/login", url.Values{"login_token": {hidden(r.body, "login_token")}, "key": {key}}, "")
	}

	for _, tc := range []struct {
		key  string
		want int
	}{
		{testenv.OperatorKey, 403},
		{"not-a-key-0123456789abcdef", 401},
		{"", 401},
	} {
		if _, r := signIn(tc.key); r.code != tc.want || !strings.Contains(r.body, `name="key"`) {
			t.Errorf("sign-in with %.8s…: %d, want %d and the sign-in form again", tc.key, r.code, tc.want)
		}
	}
	// Sign-in without the form's token (a cross-site sign-in) is refused.
	if r := do(newClient(), "POST", "/support/login", url.Values{"key": {testenv.SupportKey}}, ""); r.code != 403 {
		t.Errorf("sign-in without the form token: %d, want 403", r.code)
	}

	cl, r := signIn(testenv.AdminKey)
	if r.code != 200 || !strings.Contains(r.body, `id="actor">admin<`) {
		t.Fatalf("admin sign-in: %d %.300s", r.code, r.body)
	}
	csrf := hidden(r.body, "csrf")
	u, _ := url.Parse(st.Base + "/support/")
	var sid string
	for _, c := range cl.Jar.Cookies(u) {
		if c.Name == "oshirase_support" {
			sid = c.Value
		}
	}
	if sid == "" || strings.Contains(sid, testenv.AdminKey) {
		t.Fatalf("session cookie %q", sid)
	}
	// The session id is not itself a Redis key (only its hash is).
	if keys, _ := rdb.Keys(context.Background(), "*"+sid+"*").Result(); len(keys) != 0 {
		t.Errorf("session id stored in clear: %v", keys)
	}
	if keys, _ := rdb.Keys(context.Background(), "con:session:*").Result(); len(keys) != 1 {
		t.Errorf("sessions in Redis: %v", keys)
	}

	search := url.Values{"csrf": {csrf}, "email": {"x@example.jp"}}
	if r := do(cl, "POST", "/support/search", url.Values{"email": {"x@example.jp"}}, ""); r.code != 403 {
		t.Errorf("search without CSRF token: %d, want 403", r.code)
	}
	if r := do(cl, "POST", "/support/search", search, "http://evil.example"); r.code != 403 {
		t.Errorf("search from another origin: %d, want 403", r.code)
	}
	if r := do(cl, "POST", "/support/search", search, ""); r.code != 200 || !strings.Contains(r.body, `id="none"`) {
		t.Errorf("search: %d %.300s", r.code, r.body)
	}
	if r := do(newClient(), "POST", "/support/search", search, ""); r.code != 401 {
		t.Errorf("search without a session: %d, want 401", r.code)
	}
	// A leaked key replaced by a new secret under the same name: the
	// sessions the old secret opened end (here, on a server that has the
	// new secret; same Redis, same sessions).
	cfg2 := testenv.Config(t, map[string]string{"REDIS_URL": url0, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "con",
		"OSHIRASE_API_KEYS": "admin:admin:rotated-admin-key-0123456789"})
	st2 := teststack.StartStack(t, cfg2, service.Options{API: true})
	req, _ := http.NewRequest("POST", st2.Base+"/support/search", strings.NewReader(search.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "oshirase_support", Value: sid})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("a session of the replaced key: %v %v, want 401", err, resp.Status)
	} else {
		resp.Body.Close()
	}
	if r := do(cl, "POST", "/support/search", search, ""); r.code != 200 {
		t.Errorf("the session on the server with the same key: %d", r.code)
	}
	// Behind a TLS-terminating proxy the cookies are Secure.
	req, _ = http.NewRequest("GET", st.Base+"/support/", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if sc := resp.Header.Get("Set-Cookie"); !strings.Contains(sc, "; Secure") || !strings.Contains(sc, "HttpOnly") {
			t.Errorf("cookie behind an HTTPS proxy: %q, want Secure and HttpOnly", sc)
		}
	}

	if r := do(cl, "POST", "/support/logout", url.Values{"csrf": {csrf}}, ""); r.code != 200 || !strings.Contains(r.body, `name="key"`) {
		t.Errorf("sign-out: %d", r.code)
	}
	if r := do(cl, "POST", "/support/search", search, ""); r.code != 401 {
		t.Errorf("search after sign-out: %d, want 401", r.code)
	}
}

// TestSupportConsoleJapanese: a browser that prefers Japanese gets the
// console in Japanese, messages included; ?lang= switches and is remembered.
func TestSupportConsoleJapanese(t *testing.T) {
	_, url0 := testenv.Redis(t, testenv.DBSupport)
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url0, "SMTP_URL": "smtp://127.0.0.1:1?tls=none", "KEY_PREFIX": "conja"})
	st := teststack.StartStack(t, cfg, service.Options{API: true})
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	get := func(path, acceptLanguage string, form url.Values) string {
		t.Helper()
		method, body := "GET", ""
		if form != nil {
			method, body = "POST", form.Encode()
		}
		req, _ := http.NewRequest(method, st.Base+path, strings.NewReader(body))
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.Header.Set("Accept-Language", acceptLanguage)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, tc := range []struct {
		acceptLanguage string
		ja             bool
	}{
		{"ja-JP,ja;q=0.9,en-US;q=0.8", true},
		{"ja", true},
		{"en-US,en;q=0.9,ja;q=0.5", false},
		{"fr-FR", false},
		{"", false},
	} {
		body := get("/support/", tc.acceptLanguage, nil)
		if ja := strings.Contains(body, `<html lang="ja">`) && strings.Contains(body, "API キーでログインしてください"); ja != tc.ja {
			t.Errorf("Accept-Language %q: Japanese %v, want %v", tc.acceptLanguage, ja, tc.ja)
		}
	}
	// A sign-in refused, in Japanese.
	body := get("/support/", "ja", nil)
	body = get("/support/login", "ja", url.Values{"login_token": {hidden(body, "login_token")}, "key": {"not-a-key-0123456789abcdef"}})
	if !strings.Contains(body, "そのキーは無効です。") {
		t.Errorf("refused sign-in, Japanese: %s", body)
	}
	// Signed in, a search for an address nobody was sent to.
	body = get("/support/", "ja", nil)
	get("/support/login", "ja", url.Values{"login_token": {hidden(body, "login_token")}, "key": {testenv.SupportKey}})
	body = get("/support/", "ja", nil)
	body = get("/support/search", "ja", url.Values{"csrf": {hidden(body, "csrf")}, "email": {"nobody@example.jp"}})
	if !strings.Contains(body, `「<span id="searched">nobody@example.jp</span>」の検索結果: 0 件`) || !strings.Contains(body, "このアドレス宛てのお知らせはありません。") {
		t.Errorf("search, Japanese: %s", body)
	}
	// English chosen on the page wins over the browser's Japanese, and stays.
	get("/support/?lang=en", "ja", nil)
	if body := get("/support/", "ja", nil); !strings.Contains(body, `<html lang="en">`) || !strings.Contains(body, ">Search<") {
		t.Errorf("after ?lang=en: %s", body)
	}
}
