package inbound_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// postfixRecipe finds scripts/postfix-relay.sh (a copy of the shared
// ../shared/recipes/postfix-relay.sh, so CI has it; POSTFIX_RECIPE
// overrides it), or skips the test saying what is missing.
func postfixRecipe(t *testing.T) string {
	t.Helper()
	recipe := os.Getenv("POSTFIX_RECIPE")
	if recipe == "" {
		recipe, _ = filepath.Abs("../scripts/postfix-relay.sh")
	}
	if _, err := os.Stat(recipe); err != nil {
		t.Skipf("no Postfix recipe at %s (set POSTFIX_RECIPE): %v", recipe, err)
	}
	if _, err := exec.LookPath("postfix"); err != nil {
		if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
			t.Skip("postfix is not installed (scripts/test.sh installs it as root)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the Postfix recipe needs root (Postfix's master runs as root)")
	}
	return recipe
}

// TestThroughRealPostfix: notices go through a real Postfix smarthost to
// "remote" servers that accept, reject with 550 5.1.1, or defer; Postfix's
// own DSNs come back to oshirase's LMTP listener (serve with INBOUND_URL).
// The rejected recipients end bounced and suppressed, by the token in the
// return path; the others stay sent (the deferred ones are still in
// Postfix's queue, whose life is 2 minutes). With a queue life of 0
// (one attempt), Postfix gives the deferred ones up at once with "Action:
// failed, Status: 4.2.0": final, so bounced too — but not suppressed, the
// address itself is fine.
func TestThroughRealPostfix(t *testing.T) {
	testenv.Slow(t, "a real Postfix")
	recipe := postfixRecipe(t)
	t.Run("queue 2m", func(t *testing.T) { throughPostfix(t, recipe, "2m") })
	t.Run("queue expired", func(t *testing.T) { throughPostfix(t, recipe, "0") })
}

func throughPostfix(t *testing.T, recipe, queueLife string) {
	// Ports of this worktree's spare range, so that other tests' servers
	// never collide with the relay's.
	ports := map[string]int{"RELAY_PORT": 6450, "BOUNCE_LMTP": 6451, "DEST_OK": 6452, "DEST_BAD": 6453, "DEST_SLOW": 6454}
	if p := os.Getenv("POSTFIX_TEST_PORT_BASE"); p != "" {
		base, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("POSTFIX_TEST_PORT_BASE: %v", err)
		}
		for i, k := range []string{"RELAY_PORT", "BOUNCE_LMTP", "DEST_OK", "DEST_BAD", "DEST_SLOW"} {
			ports[k] = base + i
		}
	}
	dest := func(key string, reply func(stage smtpsink.Stage, from, rcpt string, n int) *smtp.SMTPError) *smtpsink.Sink {
		s, err := smtpsink.Start(smtpsink.Options{Addr: fmt.Sprintf("127.0.0.1:%d", ports[key]), Keep: true, Reply: reply})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ok := dest("DEST_OK", nil)
	dest("DEST_BAD", func(stage smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	})
	dest("DEST_SLOW", func(stage smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "try later"}
		}
		return nil
	})

	dir, err := os.MkdirTemp("", "oshirase-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // Postfix's daemons run as the postfix user
	env := append(os.Environ(), "QUEUE_LIFE="+queueLife)
	for k, v := range ports {
		env = append(env, fmt.Sprintf("%s=%d", k, v))
	}
	run := func(args ...string) {
		cmd := exec.Command("bash", append([]string{recipe}, args...)...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postfix-relay.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("start", dir)
	t.Cleanup(func() {
		run("stop", dir)
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "maillog")); err == nil {
				t.Logf("Postfix maillog:\n%s", b)
			}
		}
		os.RemoveAll(dir)
	})

	_, redisURL := testenv.Redis(t, testenv.DBInbound)
	cfg := testenv.Config(t, map[string]string{
		"REDIS_URL": redisURL, "OSHIRASE_API_KEYS": teststack.APIKeys, "LISTEN_ADDR": "127.0.0.1:0",
		"SMTP_URL":      fmt.Sprintf("smtp://127.0.0.1:%d?tls=none", ports["RELAY_PORT"]),
		"BOUNCE_DOMAIN": "bounces.oshirase.test", "BOUNCE_SECRET": "e2e-secret-0123456789",
		"INBOUND_URL": fmt.Sprintf("lmtp://127.0.0.1:%d", ports["BOUNCE_LMTP"]), "KEY_PREFIX": "pf",
		"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10",
	})
	st := teststack.StartStack(t, cfg, service.Options{API: true, Worker: true})
	if st.Svc.Inbound == nil {
		t.Fatal("serve with INBOUND_URL runs no receiver")
	}

	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	var rcpts []notice.Recipient
	kind := map[string]string{}
	for i := 0; i < 9; i++ {
		local := []string{"ok", "bad", "slow"}[i%3] + strconv.Itoa(i)
		addr := local + "@dest.test"
		kind[addr] = local[:len(local)-1]
		rcpts = append(rcpts, notice.Recipient{Email: addr, Locale: "ja"})
	}
	ctx := context.Background()
	added, err := st.Svc.Store.AddRecipients(ctx, c.ID, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 60*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	// The rejected ones come back as DSNs (Postfix bounces at once on a 5xx).
	wantBounced := int64(3)
	if queueLife == "0" {
		wantBounced = 6
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 90*time.Second, func(c *notice.Campaign) bool { return c.Counts.Bounced == wantBounced })
	teststack.Eventually(t, "the accepted notices at the remote server", 30*time.Second, func() bool { return ok.Count() == 3 })
	for _, m := range ok.Messages() {
		if !strings.HasPrefix(m.From, "b-") || !strings.HasSuffix(m.From, "@bounces.oshirase.test") {
			t.Errorf("envelope sender at the remote server %q, want b-<token>@bounces.oshirase.test", m.From)
		}
		if !strings.Contains(string(m.Data), "X-Oshirase-Token: ") {
			t.Error("notice without X-Oshirase-Token")
		}
	}
	for i, rid := range added.IDs {
		r, err := st.Svc.Store.Recipient(ctx, c.ID, rid)
		if err != nil {
			t.Fatal(err)
		}
		addr := rcpts[i].Email
		_, supErr := st.Svc.Store.Suppression(ctx, addr)
		switch kind[addr] {
		case "bad":
			if r.Status != notice.StatusBounced || len(r.Returned) != 1 || r.Returned[0].Action != "failed" ||
				r.Returned[0].Status != "5.1.1" || r.Returned[0].ReportingMTA != "relay.oshirase.test" {
				t.Errorf("%s: %s %+v, want bounced by a Postfix DSN failed 5.1.1", addr, r.Status, r.Returned)
			}
			if supErr != nil {
				t.Errorf("%s not suppressed: %v", addr, supErr)
			}
		case "slow":
			if queueLife == "0" {
				if r.Status != notice.StatusBounced || len(r.Returned) != 1 || r.Returned[0].Action != "failed" || !strings.HasPrefix(r.Returned[0].Status, "4.") {
					t.Errorf("%s: %s %+v, want bounced by a DSN failed 4.x.x (queue expired)", addr, r.Status, r.Returned)
				}
				if supErr == nil {
					t.Errorf("%s suppressed for a temporary failure", addr)
				}
				break
			}
			if r.Status != notice.StatusSent || supErr == nil {
				t.Errorf("%s: %s (suppression err %v), want sent and not suppressed", addr, r.Status, supErr)
			}
		default:
			if r.Status != notice.StatusSent || supErr == nil {
				t.Errorf("%s: %s (suppression err %v), want sent and not suppressed", addr, r.Status, supErr)
			}
		}
	}
	// Postfix had DSN parameters from us: its DSNs carry our ENVID and ORCPT.
	raw, err := st.Svc.Store.ReturnedRaw(ctx, c.ID)
	if err != nil || int64(len(raw)) != wantBounced {
		t.Fatalf("raw DSNs kept: %d %v, want %d", len(raw), err, wantBounced)
	}
	for _, r := range raw {
		if !strings.Contains(r, "Original-Envelope-Id: "+c.ID+"-") || !strings.Contains(r, "Original-Recipient: rfc822;") {
			t.Errorf("Postfix DSN without our ENVID or ORCPT:\n%.2000s", r)
		}
	}
	final := teststack.WaitCampaign(t, st.Base, c.ID, time.Second, func(*notice.Campaign) bool { return true })
	t.Logf("counts after the DSNs: sent %d bounced %d", final.Counts.Sent, final.Counts.Bounced)
	if final.Counts.Sent != 9-wantBounced || final.Counts.Bounced != wantBounced {
		t.Errorf("counts %+v, want sent %d bounced %d", final.Counts, 9-wantBounced, wantBounced)
	}
}
