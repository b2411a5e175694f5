package faults_test

import (
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/smtpsink"
)

// TestFrozenWorkerDropsTakenOverWork: a worker frozen (SIGSTOP, as a VM
// pause or a container freeze does) for longer than CLAIM_TTL while it holds
// claims comes back after another worker has taken its work over and sent
// it. It must drop that work, not send it a second time: the claim is
// checked right before MAIL FROM and right before the end of DATA.
//
// The frozen worker has 16 handlers and 2 SMTP connections, so most of its
// handlers hold a claim while they wait for a connection: on the old code
// each of them sent its recipient again on waking up. The sink knows who sent
// what by the HELO name. The bound the check leaves is a freeze that lands
// between the check and the write of the command (microseconds): at most one
// message per SMTP connection of the frozen worker.
func TestFrozenWorkerDropsTakenOverWork(t *testing.T) {
	const n, pool = 2000, 2
	h := newHarness(t, setup{
		Env:  env{"CLAIM_TTL": "2s", "WORKER_CONCURRENCY": "16", "SMTP_POOL": "2", "CHUNK_SIZE": "50"},
		Sink: smtpsink.Options{Keep: true, Delay: 5 * time.Millisecond},
	})
	id, addrs := h.createCampaign(n, nil)
	frozen := h.startWorker(env{"SMTP_URL": h.sink.URL() + "&helo=frozen.test"})
	h.startWorker(env{"SMTP_URL": h.sink.URL() + "&helo=other.test"})
	h.action(id, "start")
	h.waitCount(300, 30*time.Second)
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The other worker takes over what the frozen one held once its claims
	// and leases expire, and finishes the campaign while it sleeps.
	h.wait(id, 60*time.Second, done)
	atWake := h.sink.Count()
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozenFor := time.Since(stopped)
	time.Sleep(3 * time.Second) // what the woken worker does, it does now

	msgs := h.sink.Messages()
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].Received.Before(msgs[j].Received) })
	seen := map[string]int{}
	late, fromFrozen := 0, 0
	for _, m := range msgs {
		rcpt := strings.ToLower(m.To[0])
		if m.Helo == "frozen.test" {
			fromFrozen++
			if seen[rcpt] > 0 {
				late++ // a second copy, sent by the frozen worker after another's
			}
		}
		seen[rcpt]++
	}
	twice, extra := h.duplicates(addrs)
	t.Logf("frozen %.1fs (CLAIM_TTL 2s) after %d messages; campaign done while frozen (%d messages); after waking: %d more; "+
		"%d recipients got %d extra copies, %d of them sent by the frozen worker after another worker's (it sent %d in all)",
		frozenFor.Seconds(), 300, atWake, h.sink.Count()-atWake, twice, extra, late, fromFrozen)
	if fromFrozen == 0 {
		t.Fatal("the frozen worker sent nothing: the test did not exercise it")
	}
	if late > pool {
		t.Errorf("the frozen worker sent %d recipients again that another worker had delivered while it was frozen (bound: %d, one per SMTP connection)", late, pool)
	}
}

// TestSlowEndOfDataSentOnce: the relay answers the end of DATA of one
// message only after SMTP_TIMEOUT (RFC 5321 gives that reply 10 minutes).
// The message is sent once: the final reply has its own SMTP_DATA_TIMEOUT.
// The other recipients of its chunk do not wait behind it: past
// SMTP_TIMEOUT the rest of the chunk is handed to another slot.
func TestSlowEndOfDataSentOnce(t *testing.T) {
	const n = 40
	const slowReply = 4 * time.Second
	slow := "u00002@example.jp"
	var mu sync.Mutex
	var slowDone time.Time
	h := newHarness(t, setup{
		Env: env{"SMTP_TIMEOUT": "1s", "SMTP_DATA_TIMEOUT": "20s", "CLAIM_TTL": "1s", "WORKER_CONCURRENCY": "2", "CHUNK_SIZE": "40"},
		Sink: smtpsink.Options{Keep: true, Reply: func(st smtpsink.Stage, from, rcpt string, k int) *smtp.SMTPError {
			if st == smtpsink.StageData && rcpt == slow && k == 1 {
				time.Sleep(slowReply)
				mu.Lock()
				slowDone = time.Now()
				mu.Unlock()
			}
			return nil
		}},
	})
	h.startWorker(nil)
	id, addrs := h.createCampaign(n, nil)
	h.action(id, "start")
	c := h.wait(id, 30*time.Second, done)
	if c.Counts.Sent != n {
		t.Fatalf("counts %+v", c.Counts)
	}
	// Until the slow reply has gone out, its message is not counted.
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		sd := slowDone
		mu.Unlock()
		if !sd.IsZero() && h.sink.CountFor(slow) > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the slow reply never went out")
		}
	}
	time.Sleep(300 * time.Millisecond) // a second copy, if any, is on its way
	if twice, extra := h.duplicates(addrs); twice != 0 {
		t.Errorf("%d recipients got %d extra copies: the slow reply to the end of DATA was given up on", twice, extra)
	}
	for _, r := range h.recipients(id) {
		if r.Attempts != 1 {
			t.Errorf("recipient %d: %d attempts (history %+v)", r.ID, r.Attempts, r.History)
		}
	}
	mu.Lock()
	sd := slowDone
	mu.Unlock()
	behind := 0
	var last time.Time
	for _, m := range h.sink.Messages() {
		if strings.EqualFold(m.To[0], slow) {
			continue
		}
		if m.Received.After(sd) {
			behind++
		}
		if m.Received.After(last) {
			last = m.Received
		}
	}
	t.Logf("slow reply after %s (SMTP_TIMEOUT 1s); the %d others were all in %s before it", slowReply, n-1, sd.Sub(last).Round(time.Millisecond))
	if behind > 0 {
		t.Errorf("%d of the other %d recipients were delivered only after the slow reply: they waited behind it", behind, n-1)
	}
}
