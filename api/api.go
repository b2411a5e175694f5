// Package api is oshirase's HTTP API: an adapter over package app, which
// does what is asked (campaigns, uploads, look-ups, resends, accounts, …),
// plus the reads, reports and health endpoints. JSON in and out; every
// error is {"error":{"code","message","details"}} with a 4xx or 5xx status,
// an application error mapped in one place (fail).
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// Pinger checks a dependency for /readyz.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config is what the API needs besides its parts.
type Config struct {
	MaxUploadBytes int64 // 413 past this (default 2 GiB)
	// ReadTimeout and WriteTimeout are the HTTP server's (HTTP_READ_TIMEOUT,
	// HTTP_WRITE_TIMEOUT). An upload or a report download may take longer
	// than either, as long as bytes flow: they push their connection's
	// deadlines on by these amounts as they go (0: the server has none).
	ReadTimeout, WriteTimeout time.Duration
	// Checks are /readyz's checks beyond Redis answering and SMTP.
	Checks []Check
	Limits app.Limits
	// DKIMDomains are the domains notices are signed for (DKIM_DOMAIN and
	// DKIM_KEYS). A campaign whose From domain aligns with none is refused:
	// DMARC would fail. Empty: signing is off and nothing is checked.
	DKIMDomains []string
	// IdempotencyTTL is how long the first answer to a request with an
	// Idempotency-Key is kept (IDEMPOTENCY_TTL; 0: 24 h).
	IdempotencyTTL time.Duration
	// WebhookAllowPrivate lets endpoints be registered on loopback and
	// private addresses (WEBHOOK_ALLOW_PRIVATE).
	WebhookAllowPrivate bool
	// WebhookRotateOverlap is how long a rotated-out secret still signs
	// (WEBHOOK_ROTATE_OVERLAP; 0: 24 h).
	WebhookRotateOverlap time.Duration
	// BounceWindow is how long after a campaign's last send a bounce may
	// still come (BOUNCE_WINDOW): until then its sent recipients are
	// "unknown" in the reach summary, after it "reached" (default 72h).
	BounceWindow time.Duration
	// RetryMaxAge is how long the worker tries a recipient (RETRY_MAX_AGE):
	// one still unresolved that long after its first attempt is listed as
	// not reached (default 72h).
	RetryMaxAge time.Duration
}

// Check is a readiness check beyond "it answers": Run returns the word
// /readyz shows under Name (public: no details) and whether the service is
// ready as far as this check goes.
type Check struct {
	Name string
	Run  func(ctx context.Context) (state string, ok bool)
}

// Server serves the API.
type Server struct {
	cfg       Config
	store     *store.Store
	templates *templates.Set
	keys      *auth.Keys
	log       *slog.Logger
	smtp      Pinger // optional, for /readyz
	mux       *http.ServeMux
	observed  http.Handler // mux behind the access log and HTTP metrics
	app       *app.App     // what the handlers do
	sentSeen  sync.Map     // campaign id → highest sent count shown (sentNeverBack)
	patterns  []string     // every pattern mounted, in order (Routes)
}

// New returns a Server. Mount extra handlers (monitoring, metrics, support
// console) with Handle before serving.
func New(cfg Config, st *store.Store, q tasks.Enqueuer, ts *templates.Set, keys *auth.Keys, smtp Pinger, log *slog.Logger) *Server {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 2 << 30
	}
	if cfg.BounceWindow <= 0 {
		cfg.BounceWindow = 72 * time.Hour
	}
	if cfg.RetryMaxAge <= 0 {
		cfg.RetryMaxAge = 72 * time.Hour
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, store: st, templates: ts, keys: keys, smtp: smtp, log: log, mux: http.NewServeMux(),
		app: app.New(app.Config{DKIMDomains: cfg.DKIMDomains, Limits: cfg.Limits,
			WebhookAllowPrivate: cfg.WebhookAllowPrivate, WebhookRotateOverlap: cfg.WebhookRotateOverlap}, st, q, ts, keys, log)}
	// Managed accounts live beside everything else in Redis; every way
	// in (API, console, monitoring) shares this key set.
	keys.UseAccounts(st)
	if cfg.Limits.AuthFailuresPerMinute > 0 {
		// The key set is shared with the console and the monitoring UI:
		// one guard for every way in.
		keys.Guard(st.Redis(), st.Prefix(), cfg.Limits.AuthFailuresPerMinute, log)
	}
	s.routes()
	s.observed = observe(log, s.mux)
	return s
}

// App is the application the handlers call, for the adapters mounted
// beside the API (the support console).
func (s *Server) App() *app.App { return s.app }

// Keys returns the server's key set, for handlers mounted beside the API.
func (s *Server) Keys() *auth.Keys { return s.keys }

// Handle mounts h at pattern behind the given roles.
func (s *Server) Handle(pattern string, h http.Handler, roles ...auth.Role) {
	s.HandlePublic(pattern, s.keys.Require(h, roles...))
}

// HandlePublic mounts h with no authentication (pages that do their own).
func (s *Server) HandlePublic(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, h)
}

// Routes lists the patterns mounted ("GET /v1/campaigns/{id}", "/support/"),
// for the test that holds them and the OpenAPI document to each other.
func (s *Server) Routes() []string { return slices.Clone(s.patterns) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	s.observed.ServeHTTP(w, r)
}

func (s *Server) routes() {
	all := []auth.Role{auth.RoleSupport, auth.RoleOperator}
	h := func(pattern string, fn http.HandlerFunc, roles ...auth.Role) { s.Handle(pattern, fn, roles...) }

	s.HandlePublic("GET /healthz", http.HandlerFunc(Healthz))
	s.HandlePublic("GET /readyz", http.HandlerFunc(s.readyz))
	s.HandlePublic("GET /v1/openapi.json", http.HandlerFunc(serveOpenAPI))

	h("POST /v1/campaigns", s.idempotent(s.createCampaign))
	h("GET /v1/campaigns", s.listCampaigns, all...)
	h("GET /v1/campaigns/{id}", s.getCampaign, all...)
	h("PATCH /v1/campaigns/{id}", s.patchCampaign)
	h("DELETE /v1/campaigns/{id}", s.deleteCampaign)
	h("POST /v1/campaigns/{id}/recipients", s.idempotentUpload(s.uploadRecipients))
	h("GET /v1/campaigns/{id}/recipients", s.listRecipients, auth.RoleSupport)
	h("GET /v1/campaigns/{id}/recipients/{rid}", s.getRecipient, auth.RoleSupport)
	h("GET /v1/campaigns/{id}/rejections", s.listRejections)
	h("POST /v1/campaigns/{id}/start", s.idempotent(s.startCampaign))
	h("DELETE /v1/campaigns/{id}/schedule", s.unscheduleCampaign)
	h("POST /v1/campaigns/{id}/pause", s.pauseCampaign)
	h("POST /v1/campaigns/{id}/resume", s.resumeCampaign)
	h("POST /v1/campaigns/{id}/cancel", s.cancelCampaign)
	h("GET /v1/campaigns/{id}/preview", s.previewCampaign)
	h("GET /v1/campaigns/{id}/report", s.campaignReport)
	h("GET /v1/campaigns/{id}/unreachable", s.unreachableReport)
	h("POST /v1/campaigns/{id}/test", s.idempotent(s.testSend))
	h("POST /v1/campaigns/{id}/purge", s.idempotent(s.purgeCampaign))
	h("POST /v1/campaigns/{id}/retry", s.idempotent(s.retryCampaign))

	h("GET /v1/templates", s.listTemplates, all...)
	h("POST /v1/templates/{name}/preview", s.previewTemplate)

	h("GET /v1/suppressions", s.listSuppressions, auth.RoleSupport)
	h("GET /v1/suppressions/{email}", s.getSuppression, auth.RoleSupport)
	h("POST /v1/suppressions", s.idempotent(s.addSuppression))
	h("DELETE /v1/suppressions/{email}", s.deleteSuppression)

	h("GET /v1/recipients", s.lookupRecipients, auth.RoleSupport)
	h("POST /v1/campaigns/{id}/recipients/{rid}/resend", s.idempotent(s.resend), auth.RoleSupport)
	h("GET /v1/audit", s.auditLog)
	h("POST /v1/notifications", s.idempotent(s.notify))

	h("POST /v1/webhooks", s.idempotent(s.createWebhook))
	h("GET /v1/webhooks", s.listWebhooks)
	h("GET /v1/webhooks/{id}", s.getWebhook)
	h("DELETE /v1/webhooks/{id}", s.deleteWebhook)
	h("POST /v1/webhooks/{id}/rotate", s.rotateWebhook)
	h("GET /v1/webhooks/{id}/deliveries", s.webhookDeliveries)
	h("POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", s.idempotent(s.redeliverWebhook))

	// Accounts: admins only (no roles listed).
	h("POST /v1/accounts", s.createAccount)
	h("GET /v1/accounts", s.listAccounts)
	h("GET /v1/accounts/{name}", s.getAccount)
	h("PATCH /v1/accounts/{name}", s.patchAccount)
	h("POST /v1/accounts/{name}/rotate", s.rotateAccount)
	h("DELETE /v1/accounts/{name}", s.deleteAccount)

	// Anything else under /v1 needs a key like the rest (no probing for
	// endpoints without one), then is a JSON 405 or 404, not the mux's text.
	s.Handle("/v1/", http.HandlerFunc(s.noRoute), auth.RoleSupport, auth.RoleOperator)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	Ready(s.store, s.smtp, s.log, s.store, s.cfg.Checks...).ServeHTTP(w, r)
}

// noRoute answers a /v1 request no route takes: 405 with Allow when the path
// exists for other methods, else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/v1/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+strings.Join(allow, ", "), nil)
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path, nil)
}

// Healthz answers that the process is up (no checks, no key).
func Healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// RelayChecker lists the campaigns the worker paused because the relay
// refuses every message (a *store.Store).
type RelayChecker interface {
	RelayPaused(ctx context.Context) ([]string, error)
}

// Ready returns the /readyz handler: 200 when Redis answers and takes
// writes and, when smtp is not nil, the SMTP server answers and every extra
// check passes; 503 with what is down otherwise (the check's word, e.g.
// redis_state "lost"). Redis may answer while refusing every write
// (NOREPLICAS: min-replicas-to-write not met; READONLY: a replica): then
// "redis_writes" is "refused" with the reason, and every campaign stands
// still. The answer is public, so it says only "down" or the refusal's
// name; why (addresses, errors) goes to log.
//
// With relay, a campaign paused because the relay refuses every message
// (the server answers, but takes nothing) makes the answer "status":
// "degraded" with "checks":{"relay":"refusing"} — still 200: the API is
// the way out (resume, retry), and a load balancer that dropped it on a 503
// would lock the operators out. Otherwise "status" is "ok" or "down".
func Ready(st *store.Store, smtp Pinger, log *slog.Logger, relay RelayChecker, extra ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		checks := map[string]string{}
		ok := true
		if err := st.Redis().Ping(ctx).Err(); err != nil {
			checks["redis"], ok = "down", false
			log.Warn("readiness: Redis is down", "err", err)
		} else {
			checks["redis"] = "ok"
			switch err := st.WriteProbe(ctx); {
			case err == nil:
				checks["redis_writes"] = "ok"
			case store.Refusal(err) != "":
				checks["redis_writes"], ok = "refused: "+store.Refusal(err), false
			default:
				checks["redis_writes"], ok = "down", false
				log.Warn("readiness: a write to Redis failed", "err", err)
			}
		}
		if smtp != nil {
			if err := smtp.Ping(ctx); err != nil {
				checks["smtp"], ok = "down", false
				log.Warn("readiness: the SMTP server is down", "err", err)
			} else {
				checks["smtp"] = "ok"
			}
		}
		for _, c := range extra {
			state, good := c.Run(ctx)
			checks[c.Name] = state
			ok = ok && good
		}
		state := "ok"
		if relay != nil && checks["redis"] == "ok" {
			checks["relay"] = "ok"
			if ids, err := relay.RelayPaused(ctx); err != nil {
				checks["relay"] = "unknown"
				log.Warn("readiness: campaigns paused for the relay", "err", err)
			} else if len(ids) > 0 {
				checks["relay"], state = "refusing", "degraded"
			}
		}
		status := http.StatusOK
		if !ok {
			status, state = http.StatusServiceUnavailable, "down"
		}
		writeJSON(w, status, map[string]any{"ready": ok, "status": state, "checks": checks})
	})
}

// apiError is the body of every error answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string, details any) {
	// The net under every message that quotes what it refused: a card
	// number is never echoed back.
	msg = ingest.MaskCardNumbers(msg)
	if fe, ok := details.([]fieldError); ok && len(fe) == 0 {
		details = nil // no field to name: no details, not an empty list
	} else if ok {
		masked := make([]fieldError, len(fe))
		for i, f := range fe {
			masked[i] = fieldError{Field: ingest.MaskCardNumbers(f.Field), Error: ingest.MaskCardNumbers(f.Error)}
		}
		details = masked
	}
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: msg, Details: details}})
}

// fail answers err: the one place an application error becomes an HTTP
// answer. The Kind chooses the status; the code, message and fields are
// the error's. A failure of the server's own (Internal, Unavailable) is
// logged with its cause and answered with a message that names nothing
// internal.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *app.Error
	errors.As(err, &e)
	var details any
	if fe := fieldsOf(e); len(fe) > 0 {
		details = fe
	} else if e != nil && e.Details != nil {
		details = e.Details
	}
	k := app.KindOf(err)
	status, ok := kindStatus[k]
	if !ok || k == app.Internal {
		// The pattern, not the path: a path may hold an address
		// (/v1/suppressions/{email}).
		s.log.Error("request failed", "route", r.Pattern, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the server log", nil)
		return
	}
	code, msg := app.CodeOf(err), app.MessageOf(err)
	switch k {
	case app.Limited:
		w.Header().Set("Retry-After", strconv.Itoa(app.RetrySeconds(e.RetryAfter)))
	case app.Unavailable:
		s.log.Error("request failed", "route", r.Pattern, "kind", k.String(), "err", err)
		if msg == "" {
			msg = "the server cannot do this now (server problem); nothing was changed; try again later"
		}
	}
	if msg == "" {
		// A refusal made without words: the status's, never the cause's.
		msg = strings.ToLower(http.StatusText(status))
	}
	writeError(w, status, code, msg, details)
}

// kindStatus is the status of each Kind's answer.
var kindStatus = map[app.Kind]int{
	app.Internal: 500, app.BadRequest: 400, app.Invalid: 422, app.NotFound: 404, app.Conflict: 409,
	app.Forbidden: 403, app.Limited: 429, app.Unavailable: 503, app.TooLarge: 413, app.Timeout: 408,
}

// fieldsOf is e's fields (none for nil).
func fieldsOf(e *app.Error) []fieldError {
	if e == nil {
		return nil
	}
	return e.Fields
}

// fieldError is one problem with a request field.
type fieldError = app.FieldError

// maxJSONBody bounds a JSON request body (413 past it).
const maxJSONBody = 1 << 20

// bodyError answers a JSON body that could not be read: 413 past
// maxJSONBody, 400 otherwise.
func bodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body larger than %d bytes", mbe.Limit), nil)
		return
	}
	writeError(w, http.StatusBadRequest, "bad_json", "request body: "+err.Error(), jsonDetails(err))
}

// jsonKind says in JSON's words what a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// jsonDetails names the field a JSON decoding error is about, when it is
// about one: a field the request has no such name for, or a value of the
// wrong type.
func jsonDetails(err error) []fieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return []fieldError{{Field: te.Field, Error: "must be " + jsonKind(te.Type) + ", not a JSON " + te.Value}}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, err := strconv.Unquote(f); err == nil {
			return []fieldError{{Field: name, Error: "unknown field"}}
		}
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body that may also be empty.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		bodyError(w, err)
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return decodeJSON(w, r, v)
}

// decodeJSON reads a JSON body strictly (unknown fields are errors: a typo in
// a field name must not silently drop data).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		bodyError(w, err)
		return false
	}
	return true
}
