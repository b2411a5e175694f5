// Package service wires oshirase's parts into a running process: the HTTP API,
// the asynq worker, or both. cmd/oshirase, the demo, the benchmark and the
// end-to-end tests all start the system through it, so they run the same code.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/net/netutil"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
	"github.com/oshirase/oshirase/worker"
)

// Options chooses what a process runs.
type Options struct {
	API    bool
	Worker bool
	// Sender replaces the SMTP pool (tests of failure handling may wrap it).
	Sender worker.Sender
	// EmbeddedRedis skips the check of Redis' eviction and persistence
	// settings: the demo's in-process Redis lives and dies with the
	// process, so there is nothing it could keep across a restart.
	EmbeddedRedis bool
	// Inbound runs the bounce receiver on INBOUND_URL (`oshirase
	// inbound`); serve (API and Worker) runs it too when INBOUND_URL is set.
	Inbound bool
}

// Service is a configured oshirase process.
type Service struct {
	Config    *config.Config
	Log       *slog.Logger
	Redis     redis.UniversalClient
	Refusals  *store.RefusalHook
	Store     *store.Store
	Templates *templates.Set
	Queue     *asynq.Client
	Mailer    *mailer.Pool
	API       *api.Server
	Worker    *worker.Worker
	Bounce    *bounce.Codec // BOUNCE_DOMAIN and BOUNCE_SECRET; nil when unset
	Inbound   *inbound.Server
	// Events batches status webhook events of this process (API and worker).
	Events *webhooks.Emitter

	opts   Options
	guard  *redisGuard // what the guarantees rest on: Redis settings and state
	server *asynq.Server
	urgent *asynq.Server // urgent queue only: resends never wait for a bulk slot
	hooks  *asynq.Server // webhooks queue only: a slow receiver never holds a sending slot
	http   *http.Server
	ln     net.Listener

	// A worker-only process's /metrics, /healthz and /readyz (METRICS_ADDR).
	metricsHandler http.Handler
	metricsHTTP    *http.Server
	metricsLn      net.Listener
}

// New builds a Service from cfg. It fails early — before taking any work —
// on a bad setting, an unreachable Redis, a Redis that may evict or forget
// (unless REDIS_ACCEPT_RISK accepts it) or a broken template.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*Service, error) {
	s := &Service{Config: cfg, Log: log, opts: opts}
	ts, err := templates.Load(cfg.TemplatesDir)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	s.Templates = ts
	// go-redis's own lines (a pool that cannot dial, a timeout truncated)
	// go to the process's log as structured lines, not to stderr as text.
	redis.SetLogger(redisLogger{log})
	rdb, err := config.OpenRedis(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	s.Redis = rdb
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", config.Redact(cfg.RedisURL), err)
	}
	// Writes refused for the replication state (NOREPLICAS, READONLY, …)
	// are counted and logged here, once per 10 s, whoever made them (our
	// scripts, asynq's): while a primary waits for its replica every
	// write of every worker is refused.
	s.Refusals = store.NewRefusalHook(log, 10*time.Second)
	rdb.AddHook(s.Refusals)
	s.Store = store.New(rdb, cfg.KeyPrefix)
	if s.guard, err = startRedisGuard(pctx, rdb, s.Store, cfg.RedisAcceptRisk, !opts.EmbeddedRedis, log); err != nil {
		rdb.Close()
		return nil, err
	}
	s.Store.SetWaitReplicas(cfg.RedisWaitReplicas, cfg.RedisWaitTimeout)
	s.Queue = asynq.NewClientFromRedisClient(rdb)

	mopts := mailer.Options{
		URL: cfg.SMTPURL, PoolSize: cfg.SMTPPool, Timeout: cfg.SMTPTimeout, DataTimeout: cfg.SMTPDataTimeout,
		ListUnsubscribe: cfg.ListUnsubscribe, IdleTimeout: time.Minute, SendGridSMTPAPI: cfg.SendGridSMTPAPI, Log: log,
	}
	if cfg.DKIMKeyFile != "" {
		if cfg.DKIMDomain == "" || cfg.DKIMSelector == "" {
			return nil, errors.New("DKIM_KEY_FILE is set: DKIM_DOMAIN and DKIM_SELECTOR are required too")
		}
		mopts.DKIM = &mailer.DKIMOptions{Domain: cfg.DKIMDomain, Selector: cfg.DKIMSelector, KeyFile: cfg.DKIMKeyFile}
	}
	if mopts.DKIMKeys, err = mailer.ParseDKIMKeys(cfg.DKIMKeys); err != nil {
		return nil, err
	}
	if err := mailer.CheckDKIM(&mopts); err != nil {
		return nil, err
	}
	pool, err := mailer.NewPool(mopts)
	if err != nil {
		return nil, fmt.Errorf("smtp: %w", err)
	}
	s.Mailer = pool
	metrics.ObservePool(pool.Stats)

	// Status webhook events of this process (API, worker, bounce receiver).
	if opts.Worker || opts.API || opts.Inbound || cfg.InboundURL != "" {
		s.Events = webhooks.NewEmitter(s.Store, s.Queue, cfg.WebhookBatchSize, log)
	}
	if cfg.BounceDomain != "" || cfg.BounceSecret != "" {
		if s.Bounce, err = bounce.New(cfg.BounceDomain, cfg.BounceSecret); err != nil {
			return nil, err
		}
	}
	if cfg.SendGridSMTPAPI && s.Bounce == nil {
		return nil, errors.New("SENDGRID_SMTPAPI is on: BOUNCE_DOMAIN and BOUNCE_SECRET are required too (the header carries the bounce token)")
	}
	if opts.Inbound || (opts.API && opts.Worker && cfg.InboundURL != "") {
		if cfg.InboundURL == "" {
			return nil, errors.New("INBOUND_URL is not set: give the receiver lmtp://host:port or smtp://host:port")
		}
		if s.Inbound, err = inbound.Listen(inbound.Config{URL: cfg.InboundURL, MaxBytes: cfg.InboundMaxBytes,
			Codec: s.Bounce, Store: s.Store, Log: log, Events: s.Events}); err != nil {
			return nil, err
		}
	}
	if opts.Worker {
		sender := opts.Sender
		if sender == nil {
			sender = pool
		}
		s.Worker = worker.New(worker.Config{
			ChunkSize: cfg.ChunkSize, ClaimTTL: cfg.ClaimTTL, RetryBase: cfg.RetryBase,
			RetryMaxDelay: cfg.RetryMaxDelay, RetryMaxAge: cfg.RetryMaxAge, Concurrency: cfg.WorkerConcurrency,
			Rate: cfg.SMTPRate, Burst: cfg.SMTPBurst, MessageIDHost: cfg.MessageIDDomain, Bounce: s.Bounce,
		}, s.Store, s.Queue, ts, sender, log)
		s.server = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: cfg.WorkerConcurrency,
			// Resends and single notices never wait behind a bulk campaign:
			// they come first here, and a small server of their own (below)
			// takes them even while every bulk slot is busy with a chunk.
			// A chunk whose rate turn has come (paced) goes before the
			// bulk backlog, or a rate-limited campaign would fall short of
			// its rate behind a big one.
			// One recipient's retry whose time has come goes before the bulk
			// backlog too: it waited its turn already.
			Queues:          map[string]int{tasks.QueueUrgent: 10, tasks.QueuePaced: 5, tasks.QueueRecipients: 2, tasks.QueueBulk: 1},
			StrictPriority:  true,
			RetryDelayFunc:  worker.RetryDelay,
			IsFailure:       worker.IsFailure,
			ShutdownTimeout: cfg.ShutdownTimeout,
			// How long an idle processor sleeps before looking for work
			// again. asynq sleeps after every empty look, so a campaign's
			// start (fan-out task, then its chunk tasks) waits for up to two
			// of these: 25 ms instead of 100 ms is ~5% of a 15,370-recipient
			// run, for ~40 cheap Redis calls a second while idle.
			TaskCheckInterval:        25 * time.Millisecond,
			DelayedTaskCheckInterval: time.Second,
			Logger:                   asynqLogger{log, s.Worker.Explained},
			LogLevel:                 asynq.WarnLevel,
		})
		s.urgent = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: 4, Queues: map[string]int{tasks.QueueUrgent: 1},
			RetryDelayFunc: worker.RetryDelay, IsFailure: worker.IsFailure, ShutdownTimeout: cfg.ShutdownTimeout,
			TaskCheckInterval: 50 * time.Millisecond, DelayedTaskCheckInterval: time.Second,
			Logger: asynqLogger{log, s.Worker.Explained}, LogLevel: asynq.WarnLevel,
		})
	}
	if opts.Worker {
		s.Worker.SetEvents(s.Events)
		s.hooks = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: max(1, cfg.WebhookConcurrency), Queues: map[string]int{webhooks.Queue: 1},
			RetryDelayFunc: webhooks.RetryDelay, ShutdownTimeout: webhooks.Timeout + time.Second,
			TaskCheckInterval: 100 * time.Millisecond, DelayedTaskCheckInterval: time.Second,
			Logger: asynqLogger{l: log}, LogLevel: asynq.ErrorLevel,
		})
	}
	if opts.Worker && !opts.API && cfg.MetricsAddr != "" {
		if err := s.workerHTTP(); err != nil {
			return nil, err
		}
	}
	if opts.API {
		keys, err := auth.ParseKeys(cfg.APIKeys)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			log.Warn("OSHIRASE_API_KEYS is empty: only accounts made earlier (/v1/accounts) can use the API")
		}
		s.API = api.New(api.Config{MaxUploadBytes: cfg.MaxUploadBytes, ReadTimeout: cfg.HTTPReadTimeout, WriteTimeout: cfg.HTTPWriteTimeout,
			Checks: s.guard.readyChecks(), Limits: app.Limits{
				ResendsPerHour: cfg.ResendsPerHour, NotificationsPerMinute: cfg.NotificationsPerMinute,
				StartsPerHour: cfg.StartsPerHour, AuthFailuresPerMinute: cfg.AuthFailuresPerMinute,
			}, DKIMDomains: mopts.DKIMDomains(), IdempotencyTTL: cfg.IdempotencyTTL,
			BounceWindow: cfg.BounceWindow, RetryMaxAge: cfg.RetryMaxAge,
			WebhookAllowPrivate: cfg.WebhookAllowPrivate, WebhookRotateOverlap: cfg.WebhookRotateOverlap}, s.Store, s.Queue, ts, auth.NewKeys(keys), pool, log)
		s.API.SetEvents(s.Events)
		if err := mountExtras(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Listen binds the API's address (LISTEN_ADDR; port 0 picks a free one).
func (s *Service) Listen() error {
	ln, err := s.listen(s.Config.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Config.ListenAddr, err)
	}
	s.ln = ln
	return nil
}

// listen binds addr with at most HTTP_MAX_CONNECTIONS connections open at
// once: past it, new connections wait in the kernel's queue until one
// closes, instead of taking a descriptor (and a goroutine) each without
// bound.
func (s *Service) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if n := s.Config.HTTPMaxConns; n > 0 {
		ln = netutil.LimitListener(ln, n)
	}
	return ln, nil
}

// httpServer is an HTTP server for h with the HTTP_* timeouts: a client
// that sends nothing, sends slowly, or never reads cannot hold a
// connection for ever. Uploads and report downloads extend their own
// deadlines while bytes flow (see api.Config).
func (s *Service) httpServer(h http.Handler) *http.Server {
	c := s.Config
	hdr := 10 * time.Second
	if c.HTTPReadTimeout > 0 {
		hdr = min(hdr, c.HTTPReadTimeout)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: hdr,
		ReadTimeout:       c.HTTPReadTimeout,
		WriteTimeout:      c.HTTPWriteTimeout,
		IdleTimeout:       c.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
}

// Addr is the API's bound address, after Listen.
func (s *Service) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run serves until ctx ends, then stops gracefully: the API stops taking
// requests, workers hand back what they have not started and finish what is
// in flight within SHUTDOWN_TIMEOUT. It returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	if s.API != nil {
		if s.ln == nil {
			if err := s.Listen(); err != nil {
				return err
			}
		}
		s.http = s.httpServer(s.API)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Log.Info("API listening", "addr", s.Addr())
			if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	if s.metricsHandler != nil {
		ln, err := s.listen(s.Config.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on METRICS_ADDR %s: %w", s.Config.MetricsAddr, err)
		}
		s.metricsLn = ln
		s.metricsHTTP = s.httpServer(s.metricsHandler)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Log.Info("metrics listening", "addr", ln.Addr().String())
			if err := s.metricsHTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics http: %w", err)
			}
		}()
	}
	if s.Inbound != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Log.Info("bounce receiver listening", "addr", s.Inbound.Addr(), "url", s.Config.InboundURL)
			if err := s.Inbound.Serve(); err != nil {
				errc <- fmt.Errorf("inbound: %w", err)
			}
		}()
	}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	// The emitter outlives the servers' shutdown, so the events of their
	// last messages are flushed.
	emitCtx, stopEmit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEmit()
	if s.Events != nil {
		go s.Events.Run(emitCtx)
	}
	if s.hooks != nil {
		hmux := asynq.NewServeMux()
		hmux.HandleFunc(webhooks.TaskDeliver, webhooks.NewDeliverer(s.Store, s.Config.WebhookAllowPrivate, s.Log).Handle)
		if err := s.hooks.Start(hmux); err != nil {
			return fmt.Errorf("webhooks: %w", err)
		}
	}
	if s.server != nil {
		mux := asynq.NewServeMux()
		s.Worker.Register(mux)
		if err := s.server.Start(mux); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		if err := s.urgent.Start(mux); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		s.Log.Info("worker started", "concurrency", s.Config.WorkerConcurrency, "smtp", config.Redact(s.Config.SMTPURL))
		wg.Add(1)
		go func() { defer wg.Done(); s.Worker.Watch(watchCtx) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		s.stop()
		stopWatch()
		wg.Wait()
		s.stopEvents(stopEmit)
		return err
	}
	s.Log.Info("stopping")
	s.stop()
	stopWatch()
	wg.Wait()
	s.stopEvents(stopEmit)
	s.Log.Info("stopped")
	return nil
}

// stopEvents flushes the last status events, then stops delivering them.
func (s *Service) stopEvents(stopEmit context.CancelFunc) {
	stopEmit()
	if s.Events != nil {
		s.Events.Wait()
	}
	if s.hooks != nil {
		s.hooks.Shutdown()
	}
}

func (s *Service) stop() {
	if s.Inbound != nil {
		s.Inbound.Close()
	}
	if s.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.http.Shutdown(sctx)
		cancel()
	}
	if s.server != nil {
		s.Worker.Stop()     // handlers hand back unstarted work at once
		s.server.Shutdown() // waits up to ShutdownTimeout for in-flight sends
		s.urgent.Shutdown()
	}
	// Last, so the final counts of the stop can still be scraped.
	if s.metricsHTTP != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.metricsHTTP.Shutdown(sctx)
		cancel()
	}
}

// MetricsAddr is the bound address of a worker's METRICS_ADDR, once running.
func (s *Service) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Close releases connections.
func (s *Service) Close() {
	if s.Mailer != nil {
		s.Mailer.Close()
	}
	if s.Queue != nil {
		s.Queue.Close()
	}
	if s.Redis != nil {
		s.Redis.Close()
	}
}

// asynqLogger sends asynq's log lines to slog. explained (nil: none)
// says a task was archived for a reason the worker has logged already: its
// "Retry exhausted" line is dropped (a permanent SMTP answer is one warning,
// the one with the reply).
type asynqLogger struct {
	l         *slog.Logger
	explained func(taskID string) bool
}

// exhaustedPrefix starts asynq's line for a task it archives.
const exhaustedPrefix = "Retry exhausted for task id="

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any) {
	msg := fmt.Sprint(args...)
	if refusedLine(msg) {
		return
	}
	if id, ok := strings.CutPrefix(msg, exhaustedPrefix); ok && a.explained != nil && a.explained(id) {
		return
	}
	a.l.Warn(msg, "component", "asynq")
}

func (a asynqLogger) Error(args ...any) {
	if msg := fmt.Sprint(args...); !refusedLine(msg) {
		a.l.Error(msg, "component", "asynq")
	}
}

// refusedLine reports whether an asynq log line is about a write Redis
// refused for its replication state: store.RefusalHook has counted it and
// logs such refusals once per interval; asynq would log each one, from
// every processor, several times a second.
func refusedLine(msg string) bool {
	for _, r := range []string{"NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING"} {
		if strings.Contains(msg, r) {
			return true
		}
	}
	return false
}
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}

// redisLogger sends go-redis's own log lines to slog (redis.SetLogger).
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}
