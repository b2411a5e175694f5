package worker

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// TestPurgedCampaignLeavesTheCache: a long-lived worker does not keep the
// campaigns it ran. Once a campaign is done (and purged), the next
// watchdog round forgets its definition and its prepared notices.
func TestPurgedCampaignLeavesTheCache(t *testing.T) {
	w, st, _, id, _ := watchdogFixture(t, 2)
	ctx := context.Background()
	if _, err := w.campaign(ctx, id); err != nil {
		t.Fatal(err)
	}
	w.notices.Add(preparedKey{id, "ja", 1}, &templates.Prepared{})
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if !w.campaigns.Contains(id) {
		t.Fatal("a sending campaign was dropped from the cache")
	}
	if _, err := st.Mark(ctx, id, []int64{1, 2}, []notice.Status{notice.StatusPending}, notice.StatusSent); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Purge(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if w.campaigns.Contains(id) {
		t.Fatal("the purged campaign is still cached")
	}
	for _, k := range w.notices.Keys() {
		if k.campaign == id {
			t.Fatalf("a notice of the purged campaign is still cached: %+v", k)
		}
	}
	// Bounded whatever happens: the least recently used go first.
	for i := range campaignCacheSize + 10 {
		w.campaigns.Add(strconv.Itoa(i), &notice.Campaign{})
	}
	if n := w.campaigns.Len(); n > campaignCacheSize {
		t.Fatalf("%d campaigns cached, bound %d", n, campaignCacheSize)
	}
}

// TestSweepSurvivesABadCampaign: campaigns whose records cannot be read do
// not stop the watchdog's round: a dead worker's claim on another campaign
// is still recovered, and the error names every campaign that failed.
func TestSweepSurvivesABadCampaign(t *testing.T) {
	w, st, insp, id, cs := watchdogFixture(t, 3)
	ctx := context.Background()
	// A dead worker's claim on recipient 1, already expired.
	if res, err := st.Do(ctx, id, store.Step{Token: "dead", ClaimID: 1, ClaimTTL: -time.Second, Gen: cs.Gen}); err != nil || !res.Claimed {
		t.Fatalf("claim: %+v %v", res, err)
	}
	rdb := st.Redis()
	bad := []string{"0bad", "zbad"} // one sorts before the good campaign, one after
	for _, b := range bad {
		rdb.SAdd(ctx, st.Prefix()+":active", b)
		rdb.Set(ctx, st.Prefix()+":{c:"+b+"}:state", "not a hash", 0) // WRONGTYPE on every read
	}
	err := w.Sweep(ctx)
	if err == nil {
		t.Fatal("Sweep hid the broken campaigns")
	}
	for _, b := range bad {
		if !strings.Contains(err.Error(), "campaign "+b) {
			t.Errorf("Sweep's error does not name %s: %v", b, err)
		}
	}
	if got := bulkTasks(t, insp, "rc:"+id+":1:"); len(got) != 1 {
		t.Fatalf("the expired claim was not recovered past the broken campaigns: tasks %v", got)
	}
}
