package mailer

import (
	"bytes"
	"encoding/json"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/testenv"
)

// checkmailResult is what scripts/checkmail.py says of one message.
type checkmailResult struct {
	File     string              `json:"file"`
	Headers  map[string][]string `json:"headers"`
	Parts    []map[string]string `json:"parts"`
	Problems []string            `json:"problems"`
}

// TestNoticesPassIndependentCheckers renders every template × locale ×
// charset and has tools nobody on oshirase wrote judge the messages:
// scripts/checkmail.py (Python's email package: structure, headers, 7bit
// ISO-2022-JP as RFC 1468 has it, no needless encoded-words, everything
// decoding back to what was rendered), and SpamAssassin where it is
// installed, in local mode (no network): every notice must score below
// 1.0 with no HTML_OBFUSCATE rule, and the rules that fired are logged.
func TestNoticesPassIndependentCheckers(t *testing.T) {
	testenv.Slow(t, "runs SpamAssassin and Python")
	py := python(t)
	if py == "" {
		t.Skip("python3 with the email package not found")
	}
	notices := allNotices(t, &Options{})
	dir := t.TempDir()
	args := []string{filepath.Join("..", "scripts", "checkmail.py")}
	for _, n := range notices {
		p := filepath.Join(dir, strings.ReplaceAll(n.name, "/", "_")+".eml")
		if err := os.WriteFile(p, n.raw, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
		t.Fatalf("checkmail.py: %v\n%s", err, stderr.String())
	}
	var res []checkmailResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("checkmail.py output: %v\n%.500s", err, out)
	}
	if len(res) != len(notices) {
		t.Fatalf("checkmail.py judged %d messages, want %d", len(res), len(notices))
	}
	for i, r := range res {
		n := notices[i]
		for _, p := range r.Problems {
			t.Errorf("%s: checkmail.py: %s", n.name, p)
		}
		if got := r.Headers["Subject"]; len(got) != 1 || got[0] != n.r.Subject {
			t.Errorf("%s: subject %q, want %q", n.name, got, n.r.Subject)
		}
		if len(r.Parts) != 2 {
			continue
		}
		if lf(r.Parts[0]["content"]) != n.r.Text {
			t.Errorf("%s: text part does not decode back", n.name)
		}
		meta := "\n" + `<meta http-equiv="Content-Type" content="text/html; charset=` + n.m.Charset + `">`
		if strings.Replace(lf(r.Parts[1]["content"]), meta, "", 1) != n.r.HTML {
			t.Errorf("%s: HTML part does not decode back", n.name)
		}
		if n.m.Charset == "iso-2022-jp" {
			for _, p := range r.Parts {
				if p["cte"] != "7bit" {
					t.Errorf("%s: %s part is %s, want 7bit", n.name, p["type"], p["cte"])
				}
			}
		}
	}

	t.Run("spamassassin", func(t *testing.T) {
		sa, err := exec.LookPath("spamassassin")
		if err != nil {
			t.Skip("spamassassin not installed (scripts/test.sh installs it)")
		}
		scores := spamAssassin(t, sa, notices)
		for i, n := range notices {
			s := scores[i]
			t.Logf("%-36s score %5.1f  %s", n.name, s.score, strings.Join(s.tests, ","))
			if s.score >= 1.0 {
				t.Errorf("%s: SpamAssassin score %.1f, want < 1.0 (rules %v)", n.name, s.score, s.tests)
			}
			for _, rule := range s.tests {
				if strings.HasPrefix(rule, "HTML_OBFUSCATE") {
					t.Errorf("%s: %s fired: a tag splits a word", n.name, rule)
				}
			}
		}
	})
}

type saScore struct {
	score float64
	tests []string
}

var saMessageIDRE = regexp.MustCompile(`(?mi)^Message-ID: (<[^>]+>)`)

var saStatusRE = regexp.MustCompile(`(?m)^X-Spam-Status: (?:Yes|No), score=(-?[0-9.]+) required=[0-9.]+ tests=((?:[^\n]|\n[ \t])*?)\s+autolearn=`)

// spamAssassin scores the notices in one run (an mbox, in order), local
// tests only, without Bayes and without writing anything to $HOME.
func spamAssassin(t *testing.T, sa string, notices []built) []saScore {
	t.Helper()
	var mbox bytes.Buffer
	for _, n := range notices {
		mbox.WriteString("From oshirase@example.jp Sat Jun  1 00:00:00 2019\n")
		body := strings.ReplaceAll(string(n.raw), "\r\n", "\n")
		body = regexp.MustCompile(`(?m)^From `).ReplaceAllString(body, ">From ")
		mbox.WriteString(body)
		mbox.WriteString("\n")
	}
	prefs := filepath.Join(t.TempDir(), "user_prefs")
	os.WriteFile(prefs, nil, 0o600)
	cmd := exec.Command(sa, "-L", "-t", "--mbox", "-p", prefs, "--cf=use_bayes 0", "--cf=bayes_auto_learn 0")
	cmd.Stdin = &mbox
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	out = append([]byte("\n"), out...)
	if err != nil {
		t.Fatalf("spamassassin: %v\n%s", err, stderr.String())
	}
	// SpamAssassin does not keep the mbox's order: match by Message-ID.
	index := make(map[string]int, len(notices))
	for i, n := range notices {
		index["<"+n.m.MessageID+">"] = i
	}
	scores := make([]saScore, len(notices))
	found := 0
	for _, msg := range strings.Split(string(out), "\nFrom oshirase@example.jp ")[1:] {
		id := saMessageIDRE.FindStringSubmatch(msg)
		st := saStatusRE.FindStringSubmatch(msg)
		if id == nil || st == nil {
			t.Fatalf("spamassassin output without a Message-ID or X-Spam-Status:\n%.1500s", msg)
		}
		i, ok := index[id[1]]
		if !ok {
			t.Fatalf("spamassassin scored an unknown message %s", id[1])
		}
		f, err := strconv.ParseFloat(st[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		scores[i] = saScore{score: f, tests: strings.Fields(strings.NewReplacer(",", " ").Replace(st[2]))}
		found++
	}
	if found != len(notices) {
		t.Fatalf("spamassassin scored %d messages, want %d", found, len(notices))
	}
	return scores
}
