package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
)

// TestHealthcheck: `oshirase healthcheck` exits 0 against a running
// oshirase, and 1, saying why, when it is not ready or nothing answers.
func TestHealthcheck(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBCmd)
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "hc", "SMTP_URL": "smtp://127.0.0.1:1"}), service.Options{API: true})
	var out bytes.Buffer
	if code := run([]string{"healthcheck", "--url", st.Base + "/healthz"}, &out, &out); code != 0 {
		t.Fatalf("healthcheck of a running API: exit %d: %s", code, out.String())
	}
	// No SMTP server answers (SMTP_URL is a closed port): alive, not ready.
	out.Reset()
	if code := run([]string{"healthcheck", "--url", st.Base + "/readyz"}, &out, &out); code != 1 || !strings.Contains(out.String(), "503") {
		t.Fatalf("healthcheck /readyz without SMTP: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"healthcheck", "--url", "http://127.0.0.1:1/healthz", "--timeout", "1s"}, &out, &out); code != 1 || !strings.Contains(out.String(), "127.0.0.1:1") {
		t.Fatalf("healthcheck of nothing: exit %d: %s", code, out.String())
	}
}

func TestHealthURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ listen, metrics, want string }{
		{"127.0.0.1:8080", "", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:8080", "", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:8080", "0.0.0.0:9090", "http://127.0.0.1:9090/healthz"},
		{"127.0.0.1:8080", ":9090", "http://127.0.0.1:9090/healthz"},
	} {
		cfg := testenv.Config(t, map[string]string{"LISTEN_ADDR": tt.listen, "METRICS_ADDR": tt.metrics})
		if got := healthURL(cfg, "/healthz"); got != tt.want {
			t.Errorf("LISTEN_ADDR %q METRICS_ADDR %q: %s, want %s", tt.listen, tt.metrics, got, tt.want)
		}
	}
}

// `oshirase help --markdown` prints docs/configuration.md's table.
func TestHelpMarkdown(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if code := run([]string{"help", "--markdown"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "| variable |") || !strings.Contains(out.String(), "`REDIS_URL`") {
		t.Fatalf("help --markdown: exit %d: %.200s", code, out.String())
	}
}
