package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// rolesServer is an API over its own Redis database with the test keys; the
// support key is configured in its SHA-256 hex form, the operator's as
// "sha256:" and the hex.
func rolesServer(t *testing.T) *httptest.Server {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBSupport)
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseKeys("admin:admin:" + testenv.AdminKey + ",support:support:" + auth.HashKey(testenv.SupportKey) +
		",ops:operator:sha256:" + auth.HashKey(testenv.OperatorKey))
	if err != nil {
		t.Fatal(err)
	}
	q := asynq.NewClientFromRedisClient(rdb)
	srv := api.New(api.Config{}, store.New(rdb, "roles"), q, ts, auth.NewKeys(keys), nil, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs
}

// TestRoles checks every endpoint with every kind of caller. Bodies are
// empty or invalid on purpose: an allowed caller gets past authorisation
// and fails validation or finds nothing (no side effects), a refused one
// never reaches the handler.
func TestRoles(t *testing.T) {
	hs := rolesServer(t)
	const (
		A = 1 << iota // admin
		S             // support
		O             // operator
	)
	endpoints := []struct {
		method, path string
		allow        int
	}{
		{"POST", "/v1/campaigns", A},
		{"GET", "/v1/campaigns", A | S | O},
		{"GET", "/v1/campaigns/nope", A | S | O},
		{"POST", "/v1/campaigns/nope/recipients", A},
		{"GET", "/v1/campaigns/nope/recipients", A | S},
		{"GET", "/v1/campaigns/nope/recipients/1", A | S},
		{"GET", "/v1/campaigns/nope/rejections", A},
		{"POST", "/v1/campaigns/nope/start", A},
		{"POST", "/v1/campaigns/nope/pause", A},
		{"POST", "/v1/campaigns/nope/resume", A},
		{"POST", "/v1/campaigns/nope/cancel", A},
		{"GET", "/v1/campaigns/nope/preview", A},
		{"GET", "/v1/campaigns/nope/report", A},
		{"POST", "/v1/campaigns/nope/test", A},
		{"POST", "/v1/campaigns/nope/purge", A},
		{"DELETE", "/v1/campaigns/nope/schedule", A},
		{"GET", "/v1/templates", A | S | O},
		{"POST", "/v1/templates/nope/preview", A},
		{"GET", "/v1/suppressions", A | S},
		{"POST", "/v1/suppressions", A},
		{"DELETE", "/v1/suppressions/x@example.com", A},
		{"GET", "/v1/recipients?email=nobody@example.com", A | S},
		{"POST", "/v1/campaigns/nope/recipients/1/resend", A | S},
		{"GET", "/v1/audit", A},
		{"POST", "/v1/notifications", A},
		{"POST", "/v1/accounts", A},
		{"GET", "/v1/accounts", A},
		{"GET", "/v1/accounts/nope", A},
		{"PATCH", "/v1/accounts/nope", A},
		{"POST", "/v1/accounts/nope/rotate", A},
		{"DELETE", "/v1/accounts/nope", A},
	}
	callers := []struct {
		name, auth string
		role       int
	}{
		{"admin", "Bearer " + testenv.AdminKey, A},
		{"admin, scheme in lower case", "bearer " + testenv.AdminKey, A},
		{"support (sha256 key form)", "Bearer " + testenv.SupportKey, S},
		{"operator", "Bearer " + testenv.OperatorKey, O},
		{"operator basic auth", basic("anyone", testenv.OperatorKey), O},
		{"no key", "", 0},
		{"bad key", "Bearer not-a-key-0123456789abcdef", 0},
		{"support key's hash as key", "Bearer " + auth.HashKey(testenv.SupportKey), 0},
	}
	for _, e := range endpoints {
		for _, c := range callers {
			t.Run(e.method+" "+e.path+" as "+c.name, func(t *testing.T) {
				var body *strings.Reader
				if e.method == "POST" {
					body = strings.NewReader("{}")
				} else {
					body = strings.NewReader("")
				}
				req, _ := http.NewRequest(e.method, hs.URL+e.path, body)
				req.Header.Set("Content-Type", "application/json")
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				switch {
				case c.role == 0:
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("status %d, want 401", resp.StatusCode)
					}
				case e.allow&c.role != 0:
					if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 500 {
						t.Fatalf("status %d, want the handler's answer", resp.StatusCode)
					}
				default:
					if resp.StatusCode != http.StatusForbidden {
						t.Fatalf("status %d, want 403", resp.StatusCode)
					}
				}
			})
		}
	}
}

func TestHealthPublic(t *testing.T) {
	hs := rolesServer(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s without a key: %d, want 200", p, resp.StatusCode)
		}
	}
}

func basic(user, pw string) string {
	r, _ := http.NewRequestWithContext(context.Background(), "GET", "/", nil)
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}

// TestUnknownRoutes: a path under /v1 that no route takes needs a key too
// (nobody probes for endpoints without one), then is a JSON 405 with Allow
// when the path exists for other methods, else a JSON 404.
func TestUnknownRoutes(t *testing.T) {
	hs := rolesServer(t)
	for _, tt := range []struct {
		method, path, auth string
		want               int
		allow              string
	}{
		{"GET", "/v1/nope", "", 401, ""},
		{"PUT", "/v1/campaigns", "", 401, ""},
		{"GET", "/v1/nope", "Bearer " + testenv.OperatorKey, 404, ""},
		{"PUT", "/v1/campaigns", "Bearer " + testenv.AdminKey, 405, "GET, POST"},
		{"DELETE", "/v1/campaigns/x/recipients", "Bearer " + testenv.SupportKey, 405, "GET, POST"},
	} {
		req, _ := http.NewRequest(tt.method, hs.URL+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want || resp.Header.Get("Allow") != tt.allow || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d, Allow %q, %s; want %d, Allow %q, JSON", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"),
				resp.Header.Get("Content-Type"), tt.want, tt.allow)
		}
	}
}

func TestParseKeysErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a:admin", "want name:role:key"},
		{"a:root:0123456789abcdef", `role "root"`},
		{"a:admin:short", "shorter than 16"},
		{"a:admin:0123456789abcdef,a:support:0123456789abcdef", "used twice"},
		{"a:admin:sha256:abc", "64 hex digits"},
	} {
		if _, err := auth.ParseKeys(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error with %q", tt.in, err, tt.want)
		}
	}
}
