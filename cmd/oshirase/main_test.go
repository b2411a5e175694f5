package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/metrics"
)

// TestDemo runs the README's first command as a new user would: nothing
// configured, so an embedded Redis and SMTP sink.
func TestDemo(t *testing.T) {
	testenv.Slow(t, "a whole demo run")
	t.Setenv("REDIS_URL", "")
	t.Setenv("SMTP_URL", "")
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "-n", "120", "-out", dir}, &out, &errb); code != 0 {
		t.Fatalf("demo exited %d: %s\n%s", code, out.String(), errb.String())
	}
	s := out.String()
	if !regexp.MustCompile(`Done: 120 sent, 0 failed, 0 suppressed in .* msg/s`).MatchString(s) {
		t.Fatalf("no summary line in:\n%s", s)
	}
	if !strings.Contains(s, "Subject: 【重要】") {
		t.Fatalf("no Japanese subject in:\n%s", s)
	}
	emls, _ := filepath.Glob(filepath.Join(dir, "*", "*.eml"))
	if len(emls) != 120 {
		t.Fatalf("%d .eml files, want 120", len(emls))
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "*-report.csv"))
	if len(reports) != 1 || !strings.Contains(s, "Delivery report: "+reports[0]) {
		t.Fatalf("delivery report %v not written or not named in:\n%s", reports, s)
	}
	b, err := os.ReadFile(reports[0])
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 121 || strings.Count(string(b), ",sent,") != 120 {
		t.Errorf("report has %d lines, %d sent; want 121 and 120", lines, strings.Count(string(b), ",sent,"))
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"help"}, &out, &out); code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, v := range []string{"REDIS_URL", "SMTP_URL", "LISTEN_ADDR", "WORKER_CONCURRENCY", "OSHIRASE_API_KEYS", "redis://127.0.0.1:6379/0", "127.0.0.1:8080"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("help lacks %s", v)
		}
	}
}

// TestVersion: `oshirase version` says what oshirase_build_info says.
func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 {
		t.Fatalf("version exited %d: %s", code, out.String())
	}
	b := metrics.BuildInfo()
	want := "oshirase " + b.Version + " (revision " + b.Revision + ", " + runtime.Version() + ")\n"
	if out.String() != want || b.Version == "" || b.Revision == "" {
		t.Errorf("version printed %q, want %q", out.String(), want)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &out); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
}

func TestBadSettingFailsClearly(t *testing.T) {
	var out bytes.Buffer
	code := run([]string{"serve", "--worker-concurrency", "lots"}, &out, &out)
	if code == 0 || !strings.Contains(out.String(), "worker-concurrency") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}
