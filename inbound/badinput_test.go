package inbound_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// anyAddress finds an address in clear in a log: a local part before an @
// (a masked one is "u***@…").
var anyAddress = regexp.MustCompile(`[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-]@[A-Za-z0-9-]+\.`)

// TestBadInput: a malformed DSN, an oversized one, a token whose HMAC
// fails and a bounce for a purged campaign each get one clear log line
// without an address in clear, and change nothing they should not: no
// status, no suppression, nothing kept of the purged campaign.
func TestBadInput(t *testing.T) {
	f := setup(t, true, 8<<10)
	ctx := context.Background()
	rp1, _ := f.rp(t, 1)
	rp2, tok2 := f.rp(t, 2)
	_, tok3 := f.rp(t, 3)

	// A campaign whose personal data was purged after it ended.
	gone := sentCampaign(t, f.st, "gone", 2)
	if _, err := f.st.Purge(ctx, gone); err != nil {
		t.Fatal(err)
	}
	rpGone, tokGone, err := f.codec.ReturnPath(bounce.Ref{Campaign: gone, Recipient: 1})
	if err != nil {
		t.Fatal(err)
	}
	forged := "b-" + altered(tok3) + "@" + domain

	malformed := strings.ReplaceAll(`From: MAILER-DAEMON@relay.oshirase.test
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.oshirase.test
`, "\n", "\r\n") // no per-recipient fields, no closing boundary

	steps := []struct {
		name, rcpt, msg string
		code            int
		log             string // what the one log line says
	}{
		{"malformed DSN", rp1, malformed, 250, `msg="returned message recorded" via=mail campaign=` + f.cid + ` recipient=1 delivery=0 kind=unrecognised`},
		{"oversized DSN", rp2, dsn(tok2, "failed", "5.1.1", tok2) + strings.Repeat("0123456789abcdef\r\n", 600), 552,
			`msg="returned message larger than INBOUND_MAX_BYTES refused (552): nothing recorded" max_bytes=8192`},
		{"token fails its HMAC", forged, dsn("", "failed", "5.1.1", ""), 250,
			`msg="returned message tied to no notice: kept aside, no recipient changed" kind=bounced outcome=bad_token token_from=rcpt`},
		{"bounce for a purged campaign", rpGone, dsn(tokGone, "failed", "5.1.1", tokGone), 250,
			`msg="returned message for a campaign or recipient that is gone: not recorded" via=mail campaign=` + gone + ` recipient=1 kind=bounced`},
	}
	for _, s := range steps {
		f.log.Take()
		if err := send(t, f.srv.Addr(), true, s.rcpt, s.msg); code(err) != s.code {
			t.Errorf("%s: reply %d (%v), want %d", s.name, code(err), err, s.code)
		}
		logged := f.log.Take()
		if n := strings.Count(logged, "\n"); n != 1 || !strings.Contains(logged, s.log) {
			t.Errorf("%s: logged %d lines %q, want one with %q", s.name, n, logged, s.log)
		}
		if a := anyAddress.FindString(logged); a != "" {
			t.Errorf("%s: the log shows an address in clear (%q): %s", s.name, a, logged)
		}
	}

	// Nothing changed that should not: every recipient still sent; the
	// malformed message is kept in recipient 1's history as unrecognised
	// for a person to look at; nobody suppressed.
	for rid, kinds := range map[int64]string{1: "unrecognised", 2: "", 3: "", 4: "", 5: ""} {
		r, err := f.st.Recipient(ctx, f.cid, rid)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range r.Returned {
			got = append(got, e.Kind)
		}
		if r.Status != notice.StatusSent || strings.Join(got, ",") != kinds {
			t.Errorf("recipient %d: %s %v, want sent %q", rid, r.Status, got, kinds)
		}
		if sup, _ := f.st.Suppression(ctx, r.Email); sup != nil {
			t.Errorf("recipient %d suppressed: %+v", rid, sup)
		}
	}
	if sup, _ := f.st.Suppression(ctx, "gone1@dest.test"); sup != nil {
		t.Errorf("the purged campaign's address suppressed: %+v", sup)
	}
	if raw, _ := f.st.ReturnedRaw(ctx, gone); len(raw) != 0 {
		t.Errorf("a bounce of the purged campaign kept: %d", len(raw))
	}
	if um, _ := f.st.Unmatched(ctx); len(um) != 1 || !strings.Contains(um[0], `"why":"bad_token"`) {
		t.Errorf("kept aside: %d, want the forged one only", len(um))
	}
	cp, _ := f.st.Campaign(ctx, f.cid)
	if cp.Counts.Sent != 5 {
		t.Errorf("counts %+v, want 5 sent", cp.Counts)
	}
}

// TestFlood: a flood of returned messages from 8 connections at once —
// every recipient's hard bounce twice, a delay warning each, and junk with
// no token — ends with each recipient bounced once, suppressed once, its
// history holding one delay and one bounce; the junk kept aside; another
// campaign's recipients untouched; one log line per message, no address
// in clear; the campaign's bounces in the outcome metrics once each.
func TestFlood(t *testing.T) {
	f := setup(t, true, 64<<10)
	ctx := context.Background()
	const n = 200
	cid := sentCampaign(t, f.st, "flood", n)
	type msg struct{ rcpt, body string }
	var msgs []msg
	for rid := int64(1); rid <= n; rid++ {
		rp, tok, err := f.codec.ReturnPath(bounce.Ref{Campaign: cid, Recipient: rid})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg{rp, dsn(tok, "delayed", "4.2.0", tok)}, msg{rp, dsn(tok, "failed", "5.1.1", tok)},
			msg{rp, dsn(tok, "failed", "5.1.1", tok)}, msg{"postmaster@" + domain, "Subject: junk\r\n\r\nnothing " + fmt.Sprint(rid) + "\r\n"})
	}
	f.log.Take()
	work := make(chan msg)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				c := code(send(t, f.srv.Addr(), true, m.rcpt, m.body))
				mu.Lock()
				codes[c]++
				mu.Unlock()
			}
		}()
	}
	for _, m := range msgs {
		work <- m
	}
	close(work)
	wg.Wait()
	if codes[250] != len(msgs) {
		t.Errorf("replies %v, want %d × 250", codes, len(msgs))
	}

	cp, err := f.st.Campaign(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Counts.Bounced != n || cp.Counts.Sent != 0 {
		t.Errorf("counts %+v, want %d bounced", cp.Counts, n)
	}
	for rid := int64(1); rid <= n; rid++ {
		r, err := f.st.Recipient(ctx, cid, rid)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range r.Returned {
			kinds = append(kinds, e.Kind)
		}
		// The delay and the bounce may arrive in either order.
		if k := strings.Join(kinds, ","); r.Status != notice.StatusBounced || (k != "delayed,bounced" && k != "bounced,delayed") {
			t.Errorf("recipient %d: %s %v", rid, r.Status, kinds)
		}
		if sup, err := f.st.Suppression(ctx, r.Email); err != nil || sup.CampaignID != cid {
			t.Errorf("recipient %d not suppressed: %+v %v", rid, sup, err)
		}
	}
	if other, _ := f.st.Campaign(ctx, f.cid); other.Counts.Sent != 5 {
		t.Errorf("the other campaign changed: %+v", other.Counts)
	}
	if um, _ := f.st.Unmatched(ctx); len(um) != n {
		t.Errorf("junk kept aside: %d, want %d", len(um), n)
	}
	if raw, _ := f.st.ReturnedRaw(ctx, cid); len(raw) != 2*n {
		t.Errorf("raw messages kept: %d, want %d (not the duplicates)", len(raw), 2*n)
	}
	if got := testutil.ToFloat64(metrics.Messages.WithLabelValues(cid, "bounced")); got != n {
		t.Errorf("oshirase_messages_total{result=bounced} %v, want %d", got, n)
	}
	// Each bounce audited once.
	audit, _, err := f.st.AuditLog(ctx, store.AuditQuery{CampaignID: cid, Limit: 2 * n})
	if err != nil || len(audit) != n {
		t.Errorf("%d audit entries (%v), want %d", len(audit), err, n)
	}
	for _, e := range audit {
		if e.Actor != "inbound" || e.Action != "recipient.bounced" {
			t.Errorf("audit entry %s %s", e.Actor, e.Action)
		}
	}
	logged := f.log.Take()
	if lines := strings.Count(logged, "\n"); lines != len(msgs)-n {
		// One line per message recorded or kept aside; a duplicate is
		// counted in the metrics only.
		t.Errorf("%d log lines for %d messages (%d duplicates)", lines, len(msgs), n)
	}
	if a := anyAddress.FindString(logged); a != "" {
		t.Errorf("the log shows an address in clear: %q", a)
	}
}

// TestBounceBeforeSentRecorded: a relay that bounces a notice at once may
// deliver the DSN before the worker has recorded the relay's 250 (the
// recipient is still sending). Recorded then, the bounce would be
// overwritten by "sent" and its retry be a duplicate: the receiver answers
// 451 and records nothing, and the relay's retry, once the notice is sent,
// makes it bounced.
func TestBounceBeforeSentRecorded(t *testing.T) {
	f := setup(t, true, 64<<10)
	ctx := context.Background()
	// Notices the worker is sending: the relay took them, the 250 is not
	// recorded yet (a sent recipient never goes back to sending).
	f.cid = campaignIn(t, f.st, "u", 2, notice.StatusSending)
	rp, tok := f.rp(t, 1)
	msg := dsn(tok, "failed", "5.1.1", tok)
	if err := send(t, f.srv.Addr(), true, rp, msg); code(err) != 451 {
		t.Fatalf("DSN while sending: %d (%v), want 451", code(err), err)
	}
	if r, _ := f.st.Recipient(ctx, f.cid, 1); r.Status != notice.StatusSending || len(r.Returned) != 0 {
		t.Errorf("after the early DSN: %s %+v, want sending with nothing recorded", r.Status, r.Returned)
	}
	if sup, _ := f.st.Suppression(ctx, "u1@dest.test"); sup != nil {
		t.Errorf("suppressed by the early DSN: %+v", sup)
	}
	if logged := f.log.Take(); !strings.Contains(logged, "not recorded yet: asked to try again later") {
		t.Errorf("log: %s", logged)
	}
	// The worker records the 250; the relay tries the DSN again.
	if _, err := f.st.Mark(ctx, f.cid, []int64{1}, []notice.Status{notice.StatusSending}, notice.StatusSent); err != nil {
		t.Fatal(err)
	}
	if err := send(t, f.srv.Addr(), true, rp, msg); code(err) != 250 {
		t.Fatalf("DSN again: %d (%v), want 250", code(err), err)
	}
	if r, _ := f.st.Recipient(ctx, f.cid, 1); r.Status != notice.StatusBounced || len(r.Returned) != 1 {
		t.Errorf("after the retried DSN: %s %+v, want bounced", r.Status, r.Returned)
	}
	if sup, err := f.st.Suppression(ctx, "u1@dest.test"); err != nil || sup == nil {
		t.Errorf("not suppressed after the retried DSN: %v", err)
	}
	// A delay warning while sending is only an event: taken at once.
	rp2, tok2 := f.rp(t, 2)
	if err := send(t, f.srv.Addr(), true, rp2, dsn(tok2, "delayed", "4.2.0", tok2)); code(err) != 250 {
		t.Errorf("delay warning while sending: %d, want 250", code(err))
	}
}
