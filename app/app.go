// Package app is what oshirase does, apart from how it is asked: start,
// schedule, pause, resume, cancel and purge a campaign, look up and search
// notices, resend one, send a single notice, manage accounts — with their
// checks, quotas, audit entries, lifecycle log lines and status webhooks.
//
// It knows no transport. The HTTP API (package api), the support console
// (package console) and, through the API, the CLI are adapters: they read a
// request, call App, and turn its answer or its error into theirs. Every
// refusal is an *Error whose Kind each adapter maps in one place (api's
// fail, console's explain), so a new refusal is written once, here.
//
// The request types carry JSON tags because the API's bodies are exactly
// these; nothing here reads or writes HTTP.
package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
)

// Config is what the application needs besides its parts.
type Config struct {
	// DKIMDomains are the domains notices are signed for (DKIM_DOMAIN and
	// DKIM_KEYS). A campaign whose From domain aligns with none is refused:
	// DMARC would fail. Empty: signing is off and nothing is checked.
	DKIMDomains []string
	// Limits are the keys' quotas.
	Limits Limits
	// WebhookAllowPrivate lets endpoints be registered on loopback and
	// private addresses (WEBHOOK_ALLOW_PRIVATE).
	WebhookAllowPrivate bool
	// WebhookRotateOverlap is how long a rotated-out secret still signs
	// (WEBHOOK_ROTATE_OVERLAP; 0: 24 h).
	WebhookRotateOverlap time.Duration
}

// App carries out the actions. Its methods take the actor from ctx
// (auth.WithActor): quotas, audit entries and log lines name it.
type App struct {
	cfg       Config
	store     *store.Store
	queue     tasks.Enqueuer
	templates *templates.Set
	keys      *auth.Keys
	log       *slog.Logger
	limiter   *redis_rate.Limiter // the keys' quotas
	limitLog  logSampler          // "API key reached its limit", sampled
	events    *webhooks.Emitter   // status webhooks (nil: off)
}

// New returns an App.
func New(cfg Config, st *store.Store, q tasks.Enqueuer, ts *templates.Set, keys *auth.Keys, log *slog.Logger) *App {
	if log == nil {
		log = slog.Default()
	}
	return &App{cfg: cfg, store: st, queue: q, templates: ts, keys: keys, log: log, limiter: redis_rate.NewLimiter(st.Redis())}
}

// SetEvents connects the status webhooks' emitter (nil: off).
func (a *App) SetEvents(e *webhooks.Emitter) { a.events = e }

// emit sends a campaign event (a no-op without webhooks).
func (a *App) emit(typ, cid, status string) {
	a.events.Emit(webhooks.Event{Type: typ, Data: webhooks.Data{CampaignID: cid, Status: status}})
}

// lifecycle logs a campaign's change of state with the actor in ctx: the
// operator's record of who started, paused or cancelled what.
func (a *App) lifecycle(ctx context.Context, msg, id string, attrs ...any) {
	a.log.Info(msg, append([]any{"campaign", id, "actor", actorName(ctx)}, attrs...)...)
}

// actorName is the name of the key or account in ctx, or "".
func actorName(ctx context.Context) string {
	if k := auth.Actor(ctx); k != nil {
		return k.Name
	}
	return ""
}
