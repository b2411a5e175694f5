package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
)

// The stored codes cover every status once, and nothing else.
func TestStatusCodes(t *testing.T) {
	if len(codeStatus) != len(notice.Statuses) {
		t.Fatalf("%d codes for %d statuses", len(codeStatus), len(notice.Statuses))
	}
	for _, s := range notice.Statuses {
		c, err := codeOf(s)
		if err != nil {
			t.Fatalf("%s has no code: %v", s, err)
		}
		if back, err := statusOf(byte(c)); err != nil || back != s {
			t.Fatalf("code %d of %s reads back as %q, %v", c, s, back, err)
		}
	}
	if _, err := codeOf("delivered"); !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("codeOf(unknown) = %v, want ErrUnknownStatus", err)
	}
	if s, err := statusOf(byte(len(codeStatus))); !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("statusOf(unknown) = %q, %v; want ErrUnknownStatus (never pending)", s, err)
	}
}

// The Lua head the scripts run under says what Go says: each status's
// code and name, which are final, and which moves are allowed.
func TestLuaStatusMatchesGo(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	ctx := context.Background()
	src := luaStatus + `
local out = {}
for c = 0, NSTATUS - 1 do
  local row = NAMES[c] .. ' ' .. ST[NAMES[c]] .. ' ' .. (isfinal(c) and 'final' or 'open') .. ' '
  for n = 0, NSTATUS - 1 do row = row .. (canmove(c, n) and '1' or '0') end
  out[#out+1] = row
end
return out`
	got, err := rdb.Eval(ctx, src, nil).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(notice.Statuses) {
		t.Fatalf("Lua knows %d statuses, Go %d", len(got), len(notice.Statuses))
	}
	for c, s := range codeStatus {
		want := string(s) + " " + strconv.Itoa(c) + " "
		if s.Final() {
			want += "final "
		} else {
			want += "open "
		}
		for _, n := range codeStatus {
			if s.CanBecome(n) {
				want += "1"
			} else {
				want += "0"
			}
		}
		if got[c] != want {
			t.Errorf("code %d: Lua %q, Go %q", c, got[c], want)
		}
	}
}

// Every status write of every script goes through setst, which refuses a
// move the state machine does not allow and leaves the recipient and the
// counts as they were; allowed moves keep the counts in step.
func TestScriptsRefuseMovesNotAllowed(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	ctx := context.Background()
	s := New(rdb, "t")
	c := statusCampaign(t, s, "a@example.jp")
	ck := s.k.campaign(c.ID)
	for fc, from := range codeStatus {
		for tc, to := range codeStatus {
			t.Run(fmt.Sprintf("%s→%s", from, to), func(t *testing.T) {
				// Put recipient 1 in from, with counts to match.
				if err := rdb.SetRange(ctx, ck.st, 1, string([]byte{byte(fc)})).Err(); err != nil {
					t.Fatal(err)
				}
				rdb.Del(ctx, ck.counts)
				rdb.HSet(ctx, ck.counts, "total", 1, string(from), 1)
				err := markScript.Run(ctx, rdb, ck.scriptKeys(), 0, tc, strconv.Itoa(fc), 1).Err()
				err = scriptStatusError(err)
				r, lerr := s.Recipient(ctx, c.ID, 1)
				if lerr != nil {
					t.Fatal(lerr)
				}
				counts, _ := s.Campaign(ctx, c.ID)
				if from.CanBecome(to) {
					if err != nil || r.Status != to || counts.Counts.Get(to) != 1 || (from != to && counts.Counts.Get(from) != 0) {
						t.Fatalf("allowed move: err %v, status %s, counts %+v", err, r.Status, counts.Counts)
					}
					return
				}
				if !errors.Is(err, ErrBadTransition) {
					t.Fatalf("move not allowed ran: err %v, status %s", err, r.Status)
				}
				if r.Status != from || counts.Counts.Get(from) != 1 || counts.Counts.Get(to) != 0 {
					t.Fatalf("refused move changed the recipient: status %s, counts %+v", r.Status, counts.Counts)
				}
			})
		}
	}
}

// A status byte no version wrote is an error wherever it is read, never
// "pending" (which the worker would send).
func TestUnknownStatusIsAnError(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	ctx := context.Background()
	s := New(rdb, "t")
	c := statusCampaign(t, s, "a@example.jp", "b@example.jp")
	ck := s.k.campaign(c.ID)
	if err := rdb.SetRange(ctx, ck.st, 2, string([]byte{42})).Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Recipient(ctx, c.ID, 2); !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("Recipient: %+v, %v; want ErrUnknownStatus", r, err)
	}
	if _, err := s.Recipients(ctx, c.ID, notice.StatusPending, 1, 10); !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("Recipients(pending): %v; want ErrUnknownStatus", err)
	}
	if _, err := s.Mark(ctx, c.ID, []int64{2}, []notice.Status{notice.StatusPending}, "delivered"); !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("Mark to an unknown status: %v", err)
	}
	if _, err := s.Mark(ctx, c.ID, []int64{1}, []notice.Status{notice.StatusSent}, notice.StatusPending); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("Mark sent → pending: %v; want ErrBadTransition", err)
	}
	// A script that meets the byte refuses to touch the recipient.
	err := scriptStatusError(markScript.Run(ctx, rdb, ck.scriptKeys(), 0, codeCancelled, "0", 2).Err())
	if !errors.Is(err, ErrUnknownStatus) {
		t.Fatalf("mark script over an unknown byte: %v", err)
	}
}

// docs/design.md's key map names every key keys.go builds.
func TestDesignDocNamesEveryKey(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	k := keys{p: "<p>"}
	names := []string{k.campaigns(), k.active(), k.emailIndex(), k.suppressed(), k.audit(), k.unmatched(),
		k.rateGlobal(), k.relayPaused(), k.rateCampaign("ID")}
	names = append(names, k.campaign("ID").everything()...)
	for _, n := range names {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/design.md does not name key %s", n)
		}
	}
}

// The step script's head names each of its stepArgc ARGV once, in order,
// stepArgv builds that many, and a call with another count is refused
// rather than read shifted.
func TestStepScriptContract(t *testing.T) {
	script := stepSource
	for i := 1; i <= stepArgc; i++ {
		want := fmt.Sprintf("ARGV[%d]", i)
		if n := strings.Count(script, want); n != 1 {
			t.Errorf("step script reads ARGV[%d] %d times by name, want once at its head", i, n)
		}
	}
	if strings.Contains(script, fmt.Sprintf("ARGV[%d]", stepArgc+1)) {
		t.Errorf("step script reads past ARGV[%d]", stepArgc)
	}
	if n := len(stepArgv(time.Now(), Step{}, 0, "", "", "")); n != stepArgc {
		t.Fatalf("stepArgv builds %d ARGV, the script takes %d", n, stepArgc)
	}
	rdb, _ := testenv.Redis(t, testenv.DBStore)
	s := New(rdb, "t")
	args := stepArgv(time.Now(), Step{Token: "x"}, 0, "", "", "")
	err := stepScript.Run(context.Background(), rdb, s.k.campaign("c").scriptKeys(), args[:stepArgc-1]...).Err()
	if err == nil || !strings.Contains(err.Error(), "STEPARGS") {
		t.Fatalf("step with %d ARGV: %v, want STEPARGS", stepArgc-1, err)
	}
}

// statusCampaign is a draft campaign of recipients at addrs (ids 1, 2, …).
func statusCampaign(t *testing.T, s *Store, addrs ...string) *notice.Campaign {
	t.Helper()
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := s.CreateCampaign(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rs []notice.Recipient
	for _, a := range addrs {
		rs = append(rs, notice.Recipient{Email: a, Locale: "ja"})
	}
	if _, err := s.AddRecipients(ctx, c.ID, rs); err != nil {
		t.Fatal(err)
	}
	return c
}
