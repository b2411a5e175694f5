package inbound_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestPostfixCampaignCounts: a campaign with 5% of its recipients at a
// "remote" server that answers 550 5.1.1 goes through the real Postfix
// smarthost; Postfix's DSNs come back to the LMTP receiver inside serve.
// It must end with exactly 95% sent (each accepted notice at the remote
// server once) and 5% bounced and suppressed — each with one DSN event,
// nothing lost, nothing counted twice — and the process's live heap must
// not grow with the DSNs.
//
// 400 recipients by default (about 20 s); POSTFIX_CAMPAIGN_SIZE=10000 is
// the figure (see docs/bounces.md for the measured run).
func TestPostfixCampaignCounts(t *testing.T) {
	testenv.Slow(t, "a real Postfix, 400 recipients")
	recipe := postfixRecipe(t)
	n := 400
	if v := os.Getenv("POSTFIX_CAMPAIGN_SIZE"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			t.Fatalf("POSTFIX_CAMPAIGN_SIZE=%q: want a number ≥ 20", v)
		}
	}
	r := startRelay(t, recipe, relayOptions{queueLife: "2m", keyPrefix: "pfc",
		env: map[string]string{"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "100"}})
	ctx := context.Background()

	rcpts := make([]notice.Recipient, n)
	bad := map[string]bool{}
	for i := range rcpts {
		addr := fmt.Sprintf("ok%05d@dest.test", i)
		if i%20 == 7 { // 5%
			addr = fmt.Sprintf("bad%05d@dest.test", i)
			bad[addr] = true
		}
		rcpts[i] = notice.Recipient{Email: addr, Locale: "ja", CustomerID: strconv.Itoa(i)}
	}
	wantBounced := int64(len(bad))

	// The live heap (after a collection) before, the peak heap in use
	// while mail flows both ways, and the live heap after.
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()

	start := time.Now()
	cid, ids := r.campaign(rcpts)
	done := teststack.WaitCampaign(t, r.st.Base, cid, 10*time.Minute, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	sentIn := time.Since(start)
	final := teststack.WaitCampaign(t, r.st.Base, cid, 5*time.Minute, func(c *notice.Campaign) bool { return c.Counts.Bounced >= wantBounced })
	bouncedIn := time.Since(start)
	teststack.Eventually(t, "the accepted notices at the remote server", 2*time.Minute, func() bool { return r.ok.Count() >= int64(n)-wantBounced })
	close(stop)
	wg.Wait()
	after := heap()

	if final.Counts.Sent != int64(n)-wantBounced || final.Counts.Bounced != wantBounced || final.Counts.Total != int64(n) ||
		final.Counts.Failed+final.Counts.Suppressed+final.Counts.Complained+final.Counts.Open() != 0 {
		t.Errorf("counts %+v, want %d sent and %d bounced", final.Counts, int64(n)-wantBounced, wantBounced)
	}
	// Each accepted notice reached the remote server once.
	got := r.ok.PerRecipient()
	if int64(len(got)) != int64(n)-wantBounced {
		t.Errorf("%d addresses at the remote server, want %d", len(got), int64(n)-wantBounced)
	}
	for addr, k := range got {
		if k != 1 || bad[addr] || !strings.HasPrefix(addr, "ok") {
			t.Errorf("%s got %d notices at the accepting server", addr, k)
		}
	}
	// Each recipient as it should be: the bounced ones with one DSN event
	// and on the suppression list, the others with nothing back.
	wrong := 0
	for from := 0; from < len(ids); from += 1000 {
		ch, err := r.st.Svc.Store.LoadRecipients(ctx, cid, ids[from], ids[min(len(ids), from+1000)-1]+1, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for _, rc := range ch.Recipients {
			var ok bool
			if bad[rc.Email] {
				ok = rc.Status == notice.StatusBounced && len(rc.Returned) == 1 && rc.Returned[0].Status == "5.1.1"
				if _, err := r.st.Svc.Store.Suppression(ctx, rc.Email); err != nil {
					ok = false
				}
			} else {
				ok = rc.Status == notice.StatusSent && len(rc.Returned) == 0
			}
			if !ok && wrong < 10 {
				t.Errorf("recipient %d (%s): %s %+v", rc.ID, rc.Email, rc.Status, rc.Returned)
			}
			if !ok {
				wrong++
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d recipients wrong", wrong)
	}
	// DSNs the receiver asked Postfix to bring again (451: their notice's
	// 250 was not recorded yet), from Postfix's own log.
	maillog, _ := os.ReadFile(r.dir + "/maillog")
	early := 0
	for _, l := range strings.Split(string(maillog), "\n") {
		if strings.Contains(l, "postfix/lmtp") && strings.Contains(l, "status=deferred") {
			early++
		}
	}
	status, _ := os.ReadFile("/proc/self/status")
	var hwm string
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	t.Logf("%d recipients through Postfix: all sent in %s (%s), all %d DSNs recorded after %s (%d DSN deliveries deferred by the receiver and retried); "+
		"live heap %.1f MiB before, %.1f MiB after, peak heap in use %.1f MiB; peak RSS of the test process (serve, sinks, test) %s",
		n, sentIn.Round(time.Millisecond), done.Status, wantBounced, bouncedIn.Round(time.Millisecond), early,
		mib(before), mib(after), mib(peak), hwm)
	// Flat: what the run leaves behind is the sink's per-address count and
	// caches, not a copy of each DSN or notice (a 10,000-recipient run
	// leaves under 8 MiB).
	if growth := int64(after) - int64(before); growth > 8<<20+int64(n)*200 {
		t.Errorf("live heap grew by %.1f MiB over the run", float64(growth)/(1<<20))
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
