package app_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/webhooks"
)

// lastAudit is the newest audit entry.
func (f *fixture) lastAudit(t *testing.T, ctx context.Context) store.AuditEntry {
	t.Helper()
	es, _, err := f.store.AuditLog(ctx, store.AuditQuery{Limit: 1})
	if err != nil || len(es) == 0 {
		t.Fatalf("audit log: %v %v", es, err)
	}
	return es[0]
}

// TestRetryRefusals: a retry's refusals by kind and code, and a retry that
// queues the failed recipients not suppressed, without HTTP.
func TestRetryRefusals(t *testing.T) {
	f := newFixture(t, app.Limits{})
	ctx := auth.WithActor(context.Background(), &auth.Key{Name: "ops-1", Role: auth.RoleOperator})
	draft, _ := f.draft(t, ctx, notice.Recipient{Email: "d@example.jp"})
	c, ids := f.draft(t, ctx, notice.Recipient{Email: "a@example.jp"}, notice.Recipient{Email: "b@example.jp"},
		notice.Recipient{Email: "blocked@example.jp"}, notice.Recipient{Email: "pending@example.jp"})
	if _, err := f.store.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Mark(ctx, c.ID, ids[:3], []notice.Status{notice.StatusPending}, notice.StatusFailed); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Suppress(ctx, store.Suppression{Email: "blocked@example.jp", Reason: "hard bounce"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		req  app.RetryRequest
		kind app.Kind
		code string
	}{
		{"code not a failure", c.ID, app.RetryRequest{Codes: []int{250}}, app.Invalid, "invalid"},
		{"bad enhanced code", c.ID, app.RetryRequest{Enhanced: []string{"2.0.0"}}, app.Invalid, "invalid"},
		{"bad class", c.ID, app.RetryRequest{Class: "2"}, app.Invalid, "invalid"},
		{"card in reason", c.ID, app.RetryRequest{Reason: "4111 1111 1111 1111"}, app.Invalid, "invalid"},
		{"no such campaign", "nosuch", app.RetryRequest{}, app.NotFound, "not_found"},
		{"a draft", draft.ID, app.RetryRequest{}, app.Conflict, "conflict"},
	} {
		_, err := f.app.Retry(ctx, tc.id, tc.req)
		wantErr(t, tc.name, err, tc.kind, tc.code)
	}

	// A selector none matches: nothing moves.
	res, err := f.app.Retry(ctx, c.ID, app.RetryRequest{Codes: []int{554}})
	if err != nil || res.Matched != 0 || res.Queued != 0 {
		t.Fatalf("retry of 554s: %+v %v, want none matched", res, err)
	}
	// Every failed one: the suppressed one is skipped, the others queued.
	res, err = f.app.Retry(ctx, c.ID, app.RetryRequest{Reason: "relay fixed"})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if res.Matched != 3 || res.Queued != 2 || res.SkippedSuppressed != 1 || res.Campaign == nil || res.Campaign.ID != c.ID {
		t.Errorf("retry: %+v, want 3 matched, 2 queued, 1 skipped, and the campaign", res)
	}
	queued, err := f.insp.ListPendingTasks(tasks.QueueRecipients)
	if err != nil || len(queued) != 2 {
		t.Errorf("retry tasks queued: %d (%v), want 2", len(queued), err)
	}
	for i, want := range []notice.Status{notice.StatusRetrying, notice.StatusRetrying, notice.StatusFailed} {
		if rc, err := f.store.Recipient(ctx, c.ID, ids[i]); err != nil || rc.Status != want {
			t.Errorf("recipient %d: %v %v, want %s", ids[i], rc.Status, err, want)
		}
	}
	if e := f.lastAudit(t, ctx); e.Action != "campaign.retry" || e.Reason != "relay fixed" || e.Actor != "ops-1" {
		t.Errorf("audit: %+v", e)
	}

	if _, err := f.app.Cancel(ctx, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.app.Purge(ctx, c.ID, "done"); err != nil {
		t.Fatal(err)
	}
	_, err = f.app.Retry(ctx, c.ID, app.RetryRequest{})
	wantErr(t, "a purged campaign", err, app.Conflict, "conflict")
	if msg := app.MessageOf(err); !strings.Contains(msg, "was purged") {
		t.Errorf("a purged campaign: %q, want it to say it was purged", msg)
	}
}

// TestSuppressions: adding to and taking from the suppression list, by
// kind and code, with their audit entries naming the address masked.
func TestSuppressions(t *testing.T) {
	f := newFixture(t, app.Limits{})
	ctx := auth.WithActor(context.Background(), &auth.Key{Name: "ops-1", Role: auth.RoleOperator})
	suppress := func(ctx context.Context, email, reason string) error {
		_, err := f.app.Suppress(ctx, email, reason)
		return err
	}
	for _, tc := range []struct {
		name          string
		do            func(ctx context.Context, email, reason string) error
		email, reason string
		kind          app.Kind
		code          string
	}{
		{"suppress: bad address", suppress, "not an address", "asked", app.Invalid, "invalid_email"},
		{"suppress: no reason", suppress, "a@example.jp", " ", app.Invalid, "reason_required"},
		{"suppress: card in reason", suppress, "a@example.jp", "card 4111 1111 1111 1111", app.Invalid, "invalid_reason"},
		{"suppress: both", suppress, "not an address", "", app.Invalid, "invalid"},
		{"unsuppress: no reason", f.app.Unsuppress, "keep@example.jp", "  ", app.Invalid, "reason_required"},
		{"unsuppress: card in reason", f.app.Unsuppress, "keep@example.jp", "4111 1111 1111 1111", app.Invalid, "invalid_reason"},
		{"unsuppress: not suppressed", f.app.Unsuppress, "keep@example.jp", "asked", app.NotFound, "not_found"},
	} {
		wantErr(t, tc.name, tc.do(ctx, tc.email, tc.reason), tc.kind, tc.code)
	}
	sup, err := f.app.Suppress(ctx, "Keep@Example.JP", "asked not to be written to")
	if err != nil {
		t.Fatalf("suppress: %v", err)
	}
	if sup.Email != "keep@example.jp" || sup.Actor != "ops-1" {
		t.Errorf("suppression %+v, want the kept form of the address, by ops-1", sup)
	}
	if _, err := f.store.Suppression(ctx, "keep@example.jp"); err != nil {
		t.Errorf("not on the list: %v", err)
	}
	e := f.lastAudit(t, ctx)
	var d map[string]string
	json.Unmarshal(e.Details, &d)
	if e.Action != "suppression.add" || d["email"] != notice.MaskEmail("keep@example.jp") {
		t.Errorf("audit %+v %s, want suppression.add with the address masked", e, e.Details)
	}

	if err := f.app.Unsuppress(ctx, "KEEP@example.jp", " wants it again "); err != nil {
		t.Fatalf("unsuppress: %v", err)
	}
	if e := f.lastAudit(t, ctx); e.Action != "suppression.remove" || e.Reason != "wants it again" {
		t.Errorf("audit %+v, want suppression.remove with the trimmed reason", e)
	}
	wantErr(t, "unsuppress again", f.app.Unsuppress(ctx, "keep@example.jp", "again"), app.NotFound, "not_found")
}

// TestWebhookAdmin: registering, rotating, deleting and redelivering an
// endpoint, by kind and code.
func TestWebhookAdmin(t *testing.T) {
	ctx := context.Background()
	ok := app.WebhookRequest{URL: "https://hooks.example.com/oshirase", Events: []string{webhooks.CampaignStarted}}
	// Private addresses, with WEBHOOK_ALLOW_PRIVATE. (First: a fixture
	// empties the package's database.)
	private := newFixtureWith(t, app.Config{WebhookAllowPrivate: true})
	if _, err := private.app.CreateWebhook(ctx, app.WebhookRequest{URL: "http://127.0.0.1:9000/hook", Events: ok.Events}); err != nil {
		t.Errorf("a private address allowed: %v", err)
	}

	f := newFixtureWith(t, app.Config{WebhookRotateOverlap: time.Hour})
	for _, tc := range []struct {
		name string
		req  app.WebhookRequest
	}{
		{"not a URL", app.WebhookRequest{URL: "hooks", Events: ok.Events}},
		{"a private address", app.WebhookRequest{URL: "http://10.0.0.1/hook", Events: ok.Events}},
		{"localhost", app.WebhookRequest{URL: "http://localhost:8080/hook", Events: ok.Events}},
		{"no events", app.WebhookRequest{URL: ok.URL}},
		{"an unknown event", app.WebhookRequest{URL: ok.URL, Events: []string{"campaign.exploded"}}},
		{"no such campaign", app.WebhookRequest{URL: ok.URL, Events: ok.Events, CampaignID: "nosuch"}},
	} {
		_, err := f.app.CreateWebhook(ctx, tc.req)
		wantErr(t, "create: "+tc.name, err, app.Invalid, "invalid")
	}
	v, err := f.app.CreateWebhook(ctx, app.WebhookRequest{URL: ok.URL, Events: []string{"*", webhooks.CampaignStarted, "*"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if v.ID == "" || v.Secret == "" || len(v.Events) != 2 {
		t.Errorf("created %+v, want an id, the secret once, the events sorted without repeats", v)
	}
	if e := f.lastAudit(t, ctx); e.Action != "webhook.create" {
		t.Errorf("audit %+v", e)
	}
	if shown, err := f.app.Webhook(ctx, v.ID); err != nil || shown.Secret != "" {
		t.Errorf("shown again: %+v %v, want no secret", shown, err)
	}

	_, err = f.app.RotateWebhookSecret(ctx, "nosuch")
	wantErr(t, "rotate: no such webhook", err, app.NotFound, "not_found")
	rot, err := f.app.RotateWebhookSecret(ctx, v.ID)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if rot.Secret == "" || rot.Secret == v.Secret || rot.PreviousSecretUntil == nil ||
		time.Until(*rot.PreviousSecretUntil) > time.Hour || time.Until(*rot.PreviousSecretUntil) < 59*time.Minute {
		t.Errorf("rotated %+v, want a new secret and the old one signing for the overlap (1h)", rot)
	}

	wantErr(t, "redeliver: no such webhook", f.app.RedeliverWebhook(ctx, "nosuch", "d1"), app.NotFound, "not_found")
	wantErr(t, "redeliver: no such delivery", f.app.RedeliverWebhook(ctx, v.ID, "d1"), app.NotFound, "not_found")
	if _, err := f.store.UpdateWebhook(ctx, v.ID, func(w *store.Webhook) error {
		now := time.Now().UTC()
		w.DisabledAt, w.DisabledReason = &now, "410 Gone"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "redeliver: disabled", f.app.RedeliverWebhook(ctx, v.ID, "d1"), app.Conflict, "webhook_disabled")

	wantErr(t, "delete: no such webhook", f.app.DeleteWebhook(ctx, "nosuch"), app.NotFound, "not_found")
	if err := f.app.DeleteWebhook(ctx, v.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if e := f.lastAudit(t, ctx); e.Action != "webhook.delete" {
		t.Errorf("audit %+v", e)
	}
	if hs, err := f.app.Webhooks(ctx); err != nil || len(hs) != 0 {
		t.Errorf("left: %+v %v", hs, err)
	}
}
