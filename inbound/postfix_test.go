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

// relay is a real Postfix smarthost started by the recipe, its "remote"
// servers (ok*, bad*, slow*@dest.test), and serve (API, worker and the
// LMTP bounce receiver) sending through it.
type relay struct {
	dir           string
	env           []string
	ok, bad, slow *smtpsink.Sink
	st            *teststack.Stack
	recipe        string
	t             *testing.T
}

type relayOptions struct {
	queueLife string   // the recipe's QUEUE_LIFE
	postconf  []string // main.cf settings (name=value) set after the recipe starts Postfix
	keep      bool     // the accepting server keeps the messages (else it only counts them)
	keyPrefix string
	env       map[string]string // more settings for serve
}

func startRelay(t *testing.T, recipe string, o relayOptions) *relay {
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
	dest := func(key string, keep bool, reply func(stage smtpsink.Stage, from, rcpt string, n int) *smtp.SMTPError) *smtpsink.Sink {
		s, err := smtpsink.Start(smtpsink.Options{Addr: fmt.Sprintf("127.0.0.1:%d", ports[key]), Keep: keep, Reply: reply})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	r := &relay{t: t, recipe: recipe}
	r.ok = dest("DEST_OK", o.keep, nil)
	r.bad = dest("DEST_BAD", false, func(stage smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	})
	r.slow = dest("DEST_SLOW", false, func(stage smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
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
	r.dir = dir
	r.env = append(os.Environ(), "QUEUE_LIFE="+o.queueLife)
	for k, v := range ports {
		r.env = append(r.env, fmt.Sprintf("%s=%d", k, v))
	}
	r.run("bash", recipe, "start", dir)
	t.Cleanup(func() {
		r.run("bash", recipe, "stop", dir)
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "maillog")); err == nil {
				t.Logf("Postfix maillog (last 20,000 bytes):\n%s", b[max(0, len(b)-20000):])
			}
		}
		os.RemoveAll(dir)
	})
	if len(o.postconf) > 0 {
		// The recipe fixes some settings (delay_warning_time = 1m); change
		// them in this instance's main.cf and reload. The reload is done
		// when the master logs it: only then do new cleanup and qmgr
		// processes read the new values.
		r.run("postconf", append([]string{"-c", dir + "/etc", "-e"}, o.postconf...)...)
		r.run("postfix", "-c", dir+"/etc", "reload")
		teststack.Eventually(t, "Postfix's reload in its maillog", 30*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			return strings.Contains(string(b), "reload -- version")
		})
	}

	if o.keyPrefix == "" {
		o.keyPrefix = "pf"
	}
	_, redisURL := testenv.Redis(t, testenv.DBInbound)
	settings := map[string]string{
		"REDIS_URL": redisURL, "OSHIRASE_API_KEYS": teststack.APIKeys, "LISTEN_ADDR": "127.0.0.1:0",
		"SMTP_URL":      fmt.Sprintf("smtp://127.0.0.1:%d?tls=none", ports["RELAY_PORT"]),
		"BOUNCE_DOMAIN": "bounces.oshirase.test", "BOUNCE_SECRET": "e2e-secret-0123456789",
		"INBOUND_URL": fmt.Sprintf("lmtp://127.0.0.1:%d", ports["BOUNCE_LMTP"]), "KEY_PREFIX": o.keyPrefix,
		"WORKER_CONCURRENCY": "4", "CHUNK_SIZE": "10",
	}
	for k, v := range o.env {
		settings[k] = v
	}
	r.st = teststack.StartStack(t, testenv.Config(t, settings), service.Options{API: true, Worker: true})
	if r.st.Svc.Inbound == nil {
		t.Fatal("serve with INBOUND_URL runs no receiver")
	}
	return r
}

// run runs a command with the relay's environment (the recipe, postconf,
// postqueue) and fails the test if it fails.
func (r *relay) run(name string, args ...string) {
	r.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = r.env
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// campaign creates a campaign over the API, adds rcpts (in batches, as an
// upload would) and starts it.
func (r *relay) campaign(rcpts []notice.Recipient) (string, []int64) {
	t := r.t
	t.Helper()
	var c notice.Campaign
	if code, body := teststack.Do(t, r.st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	var ids []int64
	for from := 0; from < len(rcpts); from += 5000 {
		added, err := r.st.Svc.Store.AddRecipients(context.Background(), c.ID, rcpts[from:min(len(rcpts), from+5000)])
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, added.IDs...)
	}
	if code, body := teststack.Do(t, r.st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	return c.ID, ids
}

// TestThroughRealPostfix: notices go through a real Postfix smarthost to
// "remote" servers that accept, reject with 550 5.1.1, or defer; Postfix's
// own DSNs come back to oshirase's LMTP listener (serve with INBOUND_URL).
// The rejected recipients end bounced and suppressed, by the token in the
// return path; the others stay sent:
//   - queue 2m: the deferred ones are still in Postfix's queue;
//   - queue expired: with a queue life of 0 (one attempt) Postfix gives the
//     deferred ones up at once with "Action: failed, Status: 4.2.0": final,
//     so bounced too — but not suppressed, the address itself is fine;
//   - delayed then expired: Postfix warns of the delay after the first
//     attempt (delay_warning_time 1s) — an event, the recipient stays
//     sent — and, once the queue life (5s) is over, gives them up with
//     "failed 4.2.0": their history reads delayed, then bounced.
func TestThroughRealPostfix(t *testing.T) {
	testenv.Slow(t, "a real Postfix")
	recipe := postfixRecipe(t)
	t.Run("queue 2m", func(t *testing.T) { throughPostfix(t, recipe, "2m") })
	t.Run("queue expired", func(t *testing.T) { throughPostfix(t, recipe, "0") })
	t.Run("delayed then expired", func(t *testing.T) { throughPostfix(t, recipe, "delayed") })
}

func throughPostfix(t *testing.T, recipe, mode string) {
	o := relayOptions{queueLife: mode, keep: true}
	if mode == "delayed" {
		// Postfix takes any time in seconds; the delay warning goes out
		// when a delivery attempt ends at least delay_warning_time - 1s
		// after the message arrived, and a message is given up by the
		// first attempt that ends after maximal_queue_lifetime. The
		// next attempts are forced with postqueue -f below, not waited for.
		o.queueLife = "5s"
		o.postconf = []string{"delay_warning_time=1s"}
	}
	r := startRelay(t, recipe, o)
	st := r.st
	var rcpts []notice.Recipient
	kind := map[string]string{}
	for i := 0; i < 9; i++ {
		local := []string{"ok", "bad", "slow"}[i%3] + strconv.Itoa(i)
		addr := local + "@dest.test"
		kind[addr] = local[:len(local)-1]
		rcpts = append(rcpts, notice.Recipient{Email: addr, Locale: "ja"})
	}
	ctx := context.Background()
	cid, ids := r.campaign(rcpts)
	teststack.WaitCampaign(t, st.Base, cid, 60*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	// The rejected ones come back as DSNs (Postfix bounces at once on a 5xx).
	wantBounced := int64(3)
	if mode != "2m" {
		wantBounced = 6
	}
	if mode == "delayed" {
		// First the delay warnings, while Postfix keeps trying: the
		// recipients stay sent.
		teststack.Eventually(t, "a delay warning for every deferred recipient", 60*time.Second, func() bool {
			for i, rid := range ids {
				if kind[rcpts[i].Email] != "slow" {
					continue
				}
				rc, err := st.Svc.Store.Recipient(ctx, cid, rid)
				if err != nil {
					t.Fatal(err)
				}
				if len(rc.Returned) == 0 {
					return false
				}
				if rc.Status != notice.StatusSent || rc.Returned[0].Kind != "delayed" || rc.Returned[0].Action != "delayed" || !strings.HasPrefix(rc.Returned[0].Status, "4.") {
					t.Fatalf("%s after the delay warning: %s %+v, want sent with a delayed 4.x.x event", rcpts[i].Email, rc.Status, rc.Returned)
				}
			}
			return true
		})
		// Then the queue expires: force the queue runs rather than wait
		// for Postfix's backoff (postqueue -f tries every deferred message).
		last := time.Time{}
		teststack.WaitCampaign(t, st.Base, cid, 60*time.Second, func(c *notice.Campaign) bool {
			if c.Counts.Bounced == wantBounced {
				return true
			}
			if time.Since(last) > time.Second {
				r.run("postqueue", "-c", r.dir+"/etc", "-f")
				last = time.Now()
			}
			return false
		})
	}
	teststack.WaitCampaign(t, st.Base, cid, 90*time.Second, func(c *notice.Campaign) bool { return c.Counts.Bounced == wantBounced })
	teststack.Eventually(t, "the accepted notices at the remote server", 30*time.Second, func() bool { return r.ok.Count() == 3 })
	for _, m := range r.ok.Messages() {
		if !strings.HasPrefix(m.From, "b-") || !strings.HasSuffix(m.From, "@bounces.oshirase.test") {
			t.Errorf("envelope sender at the remote server %q, want b-<token>@bounces.oshirase.test", m.From)
		}
		if !strings.Contains(string(m.Data), "X-Oshirase-Token: ") {
			t.Error("notice without X-Oshirase-Token")
		}
	}
	for i, rid := range ids {
		// Over the API, as a person reads the recipient's history.
		var rc notice.Recipient
		if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", fmt.Sprintf("/v1/campaigns/%s/recipients/%d", cid, rid), "", nil, &rc); code != 200 {
			t.Fatalf("GET recipient %d: %d %s", rid, code, body)
		}
		addr := rcpts[i].Email
		_, supErr := st.Svc.Store.Suppression(ctx, addr)
		switch kind[addr] {
		case "bad":
			if rc.Status != notice.StatusBounced || len(rc.Returned) != 1 || rc.Returned[0].Action != "failed" ||
				rc.Returned[0].Status != "5.1.1" || rc.Returned[0].ReportingMTA != "relay.oshirase.test" {
				t.Errorf("%s: %s %+v, want bounced by a Postfix DSN failed 5.1.1", addr, rc.Status, rc.Returned)
			}
			if supErr != nil {
				t.Errorf("%s not suppressed: %v", addr, supErr)
			}
		case "slow":
			var kinds []string
			for _, e := range rc.Returned {
				kinds = append(kinds, e.Kind+" "+e.Action+" "+e.Status)
			}
			switch mode {
			case "2m":
				if rc.Status != notice.StatusSent || supErr == nil || len(kinds) != 0 {
					t.Errorf("%s: %s %v (suppression err %v), want sent, nothing back and not suppressed", addr, rc.Status, kinds, supErr)
				}
				continue
			case "0":
				if len(kinds) != 1 || !strings.HasPrefix(kinds[0], "bounced failed 4.") {
					t.Errorf("%s: %v, want one DSN failed 4.x.x (queue expired)", addr, kinds)
				}
			case "delayed":
				if len(kinds) != 2 || !strings.HasPrefix(kinds[0], "delayed delayed 4.") || !strings.HasPrefix(kinds[1], "bounced failed 4.") {
					t.Errorf("%s: %v, want delayed 4.x.x then failed 4.x.x", addr, kinds)
				}
			}
			if rc.Status != notice.StatusBounced {
				t.Errorf("%s: %s, want bounced once the queue expired", addr, rc.Status)
			}
			if supErr == nil {
				t.Errorf("%s suppressed for a temporary failure", addr)
			}
		default:
			if rc.Status != notice.StatusSent || supErr == nil || len(rc.Returned) != 0 {
				t.Errorf("%s: %s %+v (suppression err %v), want sent, nothing back and not suppressed", addr, rc.Status, rc.Returned, supErr)
			}
		}
	}
	// Postfix had DSN parameters from us: its DSNs carry our ENVID and ORCPT.
	raw, err := st.Svc.Store.ReturnedRaw(ctx, cid)
	wantRaw := wantBounced
	if mode == "delayed" {
		wantRaw += 3 // the delay warnings
	}
	if err != nil || int64(len(raw)) != wantRaw {
		t.Fatalf("raw DSNs kept: %d %v, want %d", len(raw), err, wantRaw)
	}
	for _, r := range raw {
		if !strings.Contains(r, "Original-Envelope-Id: "+cid+"-") || !strings.Contains(r, "Original-Recipient: rfc822;") {
			t.Errorf("Postfix DSN without our ENVID or ORCPT:\n%.2000s", r)
		}
	}
	final := teststack.WaitCampaign(t, st.Base, cid, time.Second, func(*notice.Campaign) bool { return true })
	t.Logf("counts after the DSNs: sent %d bounced %d", final.Counts.Sent, final.Counts.Bounced)
	if final.Counts.Sent != 9-wantBounced || final.Counts.Bounced != wantBounced {
		t.Errorf("counts %+v, want sent %d bounced %d", final.Counts, 9-wantBounced, wantBounced)
	}
}
