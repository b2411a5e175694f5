package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/tasks"

	"github.com/oshirase/oshirase/internal/testenv"
)

// TestScheduledStart: a draft scheduled to start sends nothing before its
// time and everything after it; only the latest schedule counts; an
// unscheduled one stays a draft.
func TestScheduledStart(t *testing.T) {
	testenv.Slow(t, "waits for a scheduled start")
	st, sink := startSupportStack(t, nil)
	ctx := context.Background()
	draft := func(name string) string {
		t.Helper()
		var c notice.Campaign
		if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
			teststack.CampaignJSON(map[string]any{"name": name}), &c); code != 201 {
			t.Fatalf("create: %d %s", code, body)
		}
		var rs []notice.Recipient
		for i := range 5 {
			rs = append(rs, notice.Recipient{Email: fmt.Sprintf("%s%d@example.jp", name, i), Locale: "ja"})
		}
		if _, err := st.Svc.Store.AddRecipients(ctx, c.ID, rs); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	start := func(id string, at time.Time) (int, notice.Campaign) {
		t.Helper()
		var c notice.Campaign
		code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+id+"/start", "application/json",
			[]byte(`{"at":"`+at.Format(time.RFC3339Nano)+`"}`), &c)
		if code >= 500 {
			t.Fatalf("start: %d %s", code, body)
		}
		return code, c
	}
	get := func(id string) notice.Campaign {
		var c notice.Campaign
		teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns/"+id, "", nil, &c)
		return c
	}
	sent := func(prefix string) int {
		n := 0
		for _, m := range sink.Messages() {
			if strings.HasPrefix(m.To[0], prefix) {
				n++
			}
		}
		return n
	}

	t0 := time.Now()
	plain, moved, dropped := draft("plain"), draft("moved"), draft("dropped")
	code, c := start(plain, t0.Add(2*time.Second))
	if code != 202 || c.Status != notice.CampaignDraft || c.ScheduledAt == nil || c.ScheduledAt.Sub(t0.Add(2*time.Second)).Abs() > time.Millisecond {
		t.Fatalf("schedule: %d %+v", code, c)
	}
	start(moved, t0.Add(2*time.Second))
	start(moved, t0.Add(4*time.Second)) // the latest schedule counts
	start(dropped, t0.Add(2*time.Second))
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "DELETE", "/v1/campaigns/"+dropped+"/schedule", "", nil, nil); code != 200 {
		t.Fatalf("unschedule: %d %s", code, body)
	}
	if code, _ := start(draft("far"), t0.Add(100*24*time.Hour)); code != 422 {
		t.Errorf("a start 100 days ahead: %d, want 422", code)
	}
	// Operators see only the starts that will happen: a replaced or dropped
	// schedule's task is deleted.
	insp := asynq.NewInspectorFromRedisClient(st.Svc.Redis)
	startTasks := func() map[string]int {
		m := map[string]int{}
		ts, _ := insp.ListScheduledTasks(tasks.QueueUrgent, asynq.PageSize(100))
		for _, ti := range ts {
			var p tasks.StartPayload
			json.Unmarshal(ti.Payload, &p)
			m[p.CampaignID]++
		}
		return m
	}
	if m := startTasks(); m[plain] != 1 || m[moved] != 1 || m[dropped] != 0 {
		t.Errorf("scheduled start tasks: plain %d, moved %d, dropped %d; want 1, 1, 0", m[plain], m[moved], m[dropped])
	}
	time.Sleep(time.Until(t0.Add(1500 * time.Millisecond)))
	// (On a machine so loaded that setting up took past the time, the
	// started_at checks below still hold the campaign to its time.)
	if n, st := sent("plain")+sent("moved")+sent("dropped"), get(plain).Status; time.Since(t0) < 1900*time.Millisecond &&
		(n != 0 || st != notice.CampaignDraft) {
		t.Fatalf("before its time: %d messages, status %s", n, st)
	}
	teststack.Eventually(t, "the scheduled campaign done", 10*time.Second, func() bool { return get(plain).Status == notice.CampaignDone })
	if c := get(plain); sent("plain") != 5 || c.StartedAt == nil || c.StartedAt.Before(t0.Add(2*time.Second)) || c.ScheduledAt != nil {
		t.Errorf("scheduled campaign: %d sent, started %v (scheduled for %v), scheduled_at %v", sent("plain"), c.StartedAt, t0.Add(2*time.Second), c.ScheduledAt)
	}
	teststack.Eventually(t, "the rescheduled campaign done", 10*time.Second, func() bool { return get(moved).Status == notice.CampaignDone })
	if c := get(moved); c.StartedAt.Before(t0.Add(4 * time.Second)) {
		t.Errorf("rescheduled campaign started at %v, before %v", c.StartedAt, t0.Add(4*time.Second))
	}
	if c := get(dropped); c.Status != notice.CampaignDraft || c.ScheduledAt != nil || sent("dropped") != 0 {
		t.Errorf("unscheduled campaign: %s, scheduled_at %v, %d sent", c.Status, c.ScheduledAt, sent("dropped"))
	}
	// A started campaign cannot be scheduled; a time that has just passed
	// (clock skew, a slow request) starts now; one long past is a mistake
	// (a mistyped year) and is refused: a breach notice must not go out on
	// the spot by accident.
	if code, _ := start(plain, time.Now().Add(time.Hour)); code != 409 {
		t.Errorf("scheduling a done campaign: %d, want 409", code)
	}
	past := draft("past")
	if code, c := start(past, time.Now().AddDate(-1, 0, 0)); code != 422 || get(past).Status != notice.CampaignDraft {
		t.Errorf("start a year ago: %d %s, want 422 and still a draft", code, c.Status)
	}
	now := draft("now")
	if code, c := start(now, time.Now().Add(-20*time.Second)); code != 202 || c.Status == notice.CampaignDraft {
		t.Errorf("start 20 s ago: %d %s, want it started", code, c.Status)
	}

	// A start run by hand long before its time (asynqmon's "run now")
	// neither starts the campaign nor holds a worker: it is queued again
	// for its time.
	early := draft("early")
	start(early, t0.Add(time.Hour))
	ts, _ := insp.ListScheduledTasks(tasks.QueueUrgent, asynq.PageSize(100))
	for _, ti := range ts {
		if strings.Contains(ti.ID, early) {
			if err := insp.RunTask(tasks.QueueUrgent, ti.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	teststack.Eventually(t, "the early start task queued again", 5*time.Second, func() bool {
		active, _ := insp.ListActiveTasks(tasks.QueueUrgent)
		pending, _ := insp.ListPendingTasks(tasks.QueueUrgent)
		return startTasks()[early] == 1 && len(active) == 0 && len(pending) == 0
	})
	if c := get(early); c.Status != notice.CampaignDraft || c.ScheduledAt == nil {
		t.Errorf("early run: %s, scheduled_at %v", c.Status, c.ScheduledAt)
	}

	var audit struct {
		Entries []struct{ Actor, Action string } `json:"entries"`
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit?campaign="+plain, "", nil, &audit)
	var actions []string
	for _, e := range audit.Entries {
		actions = append(actions, e.Actor+":"+e.Action)
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "admin:campaign.schedule") || !strings.Contains(got, "scheduler:campaign.start") {
		t.Errorf("audit of the scheduled campaign: %s", got)
	}
}
