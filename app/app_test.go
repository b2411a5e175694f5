package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// fixture is an App over a real Redis and a real asynq queue, with no
// transport at all: what the API, the console and the CLI share.
type fixture struct {
	app   *app.App
	store *store.Store
	insp  *asynq.Inspector
}

func newFixture(t *testing.T, limits app.Limits) *fixture {
	t.Helper()
	return newFixtureWith(t, app.Config{Limits: limits})
}

// newFixtureWith is newFixture with the whole of cfg.
func newFixtureWith(t *testing.T, cfg app.Config) *fixture {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBApp)
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, "app")
	q := asynq.NewClientFromRedisClient(rdb)
	return &fixture{
		app:   app.New(cfg, st, q, ts, auth.NewKeys(nil), slog.New(slog.DiscardHandler)),
		store: st, insp: asynq.NewInspectorFromRedisClient(rdb),
	}
}

// draft makes a valid draft with the given recipients.
func (f *fixture) draft(t *testing.T, ctx context.Context, rcpts ...notice.Recipient) (*notice.Campaign, []int64) {
	t.Helper()
	var req app.CampaignRequest
	if err := json.Unmarshal(teststack.CampaignJSON(nil), &req); err != nil {
		t.Fatal(err)
	}
	c, err := f.app.CreateCampaign(ctx, req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if len(rcpts) == 0 {
		return c, nil
	}
	added, err := f.store.AddRecipients(ctx, c.ID, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	return c, added.IDs
}

// wantErr checks that err is an application refusal of kind k and code.
func wantErr(t *testing.T, what string, err error, k app.Kind, code string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %s %s", what, k, code)
		return
	}
	if app.KindOf(err) != k || app.CodeOf(err) != code {
		t.Errorf("%s: %s %s (%v), want %s %s", what, app.KindOf(err), app.CodeOf(err), err, k, code)
	}
}

// TestResendRefusals: every refusal of a resend is one typed error with its
// kind and code, the same whoever asks; an accepted resend is queued on the
// urgent queue.
func TestResendRefusals(t *testing.T) {
	f := newFixture(t, app.Limits{ResendsPerHour: 1})
	ctx := context.Background()
	c, ids := f.draft(t, ctx, notice.Recipient{Email: "pending@example.jp"}, notice.Recipient{Email: "blocked@example.jp"})
	if _, err := f.store.Mark(ctx, c.ID, ids[1:], []notice.Status{notice.StatusPending}, notice.StatusSuppressed); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Suppress(ctx, store.Suppression{Email: "blocked@example.jp", Reason: "hard bounce"}); err != nil {
		t.Fatal(err)
	}
	cancelled, cids := f.draft(t, ctx, notice.Recipient{Email: "c@example.jp"})
	if _, err := f.store.Start(ctx, cancelled.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.app.Cancel(ctx, cancelled.ID, "wrong list"); err != nil {
		t.Fatal(err)
	}
	ok := app.ResendRequest{Reason: "customer asked"}
	for _, tc := range []struct {
		name string
		cid  string
		rid  int64
		req  app.ResendRequest
		kind app.Kind
		code string
	}{
		{"no reason", c.ID, ids[1], app.ResendRequest{Reason: "  "}, app.Invalid, "reason_required"},
		{"long reason", c.ID, ids[1], app.ResendRequest{Reason: strings.Repeat("x", 1001)}, app.Invalid, "invalid_reason"},
		{"card in reason", c.ID, ids[1], app.ResendRequest{Reason: "read out 4111 1111 1111 1111"}, app.Invalid, "invalid_reason"},
		{"bad locale", c.ID, ids[1], app.ResendRequest{Reason: "r", Locale: "fr"}, app.Invalid, "invalid_locale"},
		{"bad corrected address", c.ID, ids[1], app.ResendRequest{Reason: "r", Email: "not an address"}, app.Invalid, "invalid_email"},
		{"not sent yet", c.ID, ids[0], ok, app.Conflict, app.CodeNotSent},
		{"suppressed", c.ID, ids[1], ok, app.Conflict, app.CodeSuppressed},
		{"cancelled with its campaign", cancelled.ID, cids[0], ok, app.Conflict, app.CodeCancelled},
		{"no such campaign", "nosuch", 1, ok, app.NotFound, "not_found"},
		{"no such recipient", c.ID, 99, ok, app.NotFound, "not_found"},
	} {
		_, err := f.app.Resend(ctx, tc.cid, tc.rid, tc.req)
		wantErr(t, tc.name, err, tc.kind, tc.code)
	}

	// Accepted: queued, and the quota (1 an hour for this key) is used.
	agent := auth.WithActor(ctx, &auth.Key{Name: "agent-1", Role: auth.RoleSupport})
	rs, err := f.app.Resend(agent, c.ID, ids[1], app.ResendRequest{Reason: "customer asked", OverrideSuppression: true})
	if err != nil {
		t.Fatalf("resend with the override: %v", err)
	}
	if rs.N != 1 || rs.Actor != "agent-1" {
		t.Errorf("resend %+v, want #1 by agent-1", rs)
	}
	if _, err := f.insp.GetTaskInfo(tasks.QueueUrgent, "resend:"+c.ID+":2:1"); err != nil {
		t.Errorf("the resend's task is not on the urgent queue: %v", err)
	}
	_, err = f.app.Resend(agent, c.ID, ids[1], app.ResendRequest{Reason: "again", OverrideSuppression: true})
	wantErr(t, "second resend within the hour", err, app.Limited, "rate_limited")
	var e *app.Error
	var le *app.LimitError
	if !errors.As(err, &e) || e.RetryAfter <= 0 || !errors.As(err, &le) || le.N != 1 || le.Limit != "resends" {
		t.Errorf("limited: %#v, want RetryAfter and the quota", err)
	}
}

// TestStartRefusals: a start's refusals and its success, without HTTP.
func TestStartRefusals(t *testing.T) {
	f := newFixture(t, app.Limits{})
	ctx := context.Background()
	empty, _ := f.draft(t, ctx)
	c, _ := f.draft(t, ctx, notice.Recipient{Email: "a@example.jp"})
	past, far := time.Now().Add(-time.Hour), time.Now().Add(app.MaxScheduleAhead+time.Hour)
	for _, tc := range []struct {
		name string
		id   string
		at   *time.Time
		kind app.Kind
		code string
	}{
		{"no recipients", empty.ID, nil, app.Invalid, "no_recipients"},
		{"in the past", c.ID, &past, app.Invalid, "invalid"},
		{"too far ahead", c.ID, &far, app.Invalid, "invalid"},
		{"no such campaign", "nosuch", nil, app.NotFound, "not_found"},
	} {
		_, err := f.app.Start(ctx, tc.id, tc.at)
		wantErr(t, tc.name, err, tc.kind, tc.code)
	}
	got, err := f.app.Start(ctx, c.ID, nil)
	if err != nil || got.Status != notice.CampaignSending {
		t.Fatalf("start: %v %v", got, err)
	}
	if _, err := f.app.Start(ctx, c.ID, nil); err != nil {
		t.Errorf("starting again is a no-op, got %v", err)
	}
	wantErr(t, "delete a sending campaign", f.app.DeleteDraft(ctx, c.ID), app.Conflict, "not_draft")
	_, _, err = f.app.Purge(ctx, c.ID, "done")
	wantErr(t, "purge while sending", err, app.Conflict, "conflict")
	if _, err := f.app.Cancel(ctx, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = f.app.Pause(ctx, c.ID, "")
	wantErr(t, "pause a cancelled campaign", err, app.Conflict, "conflict")
}
