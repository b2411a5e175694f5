// Package worker runs oshirase's asynq handlers: it splits campaigns into
// chunks, renders each notice, waits for the shared rate limit, sends it over
// pooled SMTP connections and records the outcome. Per-recipient status in
// Redis (package store) is the truth: a recipient already sent is never sent
// again, whatever asynq redelivers.
//
// # Sharing the workers between campaigns
//
// The bulk queue is first in, first out, so a campaign does not enqueue all
// its chunks at once: it has a window of chunks handed out at a time
// (queued, running, or waiting for their rate), twice the bulk slots of all
// worker processes together (from asynq's server records). The fan-out
// opens the window; a chunk that ends hands out the campaign's next one from
// a cursor in Redis, which queues behind whatever other campaigns queued
// meanwhile. A campaign alone keeps every slot busy; a campaign started
// later waits behind one window of chunks, not behind the whole of the
// first, and campaigns sending at once then take turns chunk by chunk. Each
// chunk handed out holds a lease (store.HandOut moves the cursor and takes
// it in one step), so a chunk whose task is lost is handed out again by the
// watchdog, which also tops up a window that lost chunks.
//
// # Waiting for a rate without holding a slot
//
// A handler waits in place for the rate limit only for a moment
// (inlineWait, 50 ms). Longer, the chunk records the outcome it holds and
// hands the rest of its range back, to run when the limiter allows: on a
// timer here for a wait of up to 2 s (asynq schedules by the whole second,
// too coarse for a rate of a few messages a second), else as an asynq task
// scheduled a second early; either way on the paced queue, which the bulk
// server takes before the bulk backlog, so the campaign keeps near its rate
// behind a big one. Meanwhile the rest keeps a chunk lease that
// outlives its wake-up, so the watchdog neither takes the campaign for
// stalled nor steals the rest, and the window still counts it. A
// rate-limited campaign's window is what its rate needs (rate/10 chunks, at
// least one), so it never has dozens of chunks asking the limiter. A retry
// on the bulk queue that must wait goes back to asynq's retry set the same
// way; a single notice or test send (urgent queue, a server of its own)
// waits in place for up to 2 s first. A failing limiter answers "later",
// later each time (100 ms doubling to 15 s), with one warning a minute; the
// chunk that comes back reads the campaign's state first, so a pause or
// cancel ends it.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
)

// Sender sends one message. *mailer.Pool is the real one.
type Sender interface {
	// Deliver sends m and returns what the server said when it took it.
	Deliver(ctx context.Context, m *mailer.Message) (mailer.Accepted, error)
}

// Config tunes delivery. The zero value of each field means its default.
type Config struct {
	ChunkSize     int           // recipients per chunk task (default 100)
	ClaimTTL      time.Duration // how long a claim or chunk lease lives without progress (default 2m)
	RetryBase     time.Duration // first retry delay (default 30s)
	RetryMaxDelay time.Duration // cap on retry delay (default 1h)
	RetryMaxAge   time.Duration // give up this long after the first attempt (default 72h)
	Concurrency   int           // WORKER_CONCURRENCY: bulk tasks this process runs at once (default 1)
	Rate          float64       // SMTP_RATE: messages per second across all workers; 0 = unlimited
	Burst         int           // SMTP_BURST (default: rate/10, at least 1)
	MessageIDHost string        // right-hand side of Message-IDs (default: the From address's domain)
	// Bounce, when set (BOUNCE_DOMAIN), gives every notice its own return
	// path b-<token>@BOUNCE_DOMAIN naming campaign, recipient and delivery.
	Bounce *bounce.Codec
	// RecordTimeout is how long a handler keeps trying to record an
	// outcome while Redis is unreachable (default 1m).
	RecordTimeout time.Duration
	// ClockNow is the time instants written to Redis are computed from
	// (claims, first attempts, retry ages, lease deadlines). Default: the
	// store's clock (store.Store.SetClock), so worker and store agree.
	ClockNow func() time.Time
}

func (c *Config) defaults() {
	if c.ChunkSize <= 0 {
		c.ChunkSize = 100
	}
	if c.ClaimTTL <= 0 {
		c.ClaimTTL = 2 * time.Minute
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 30 * time.Second
	}
	if c.RetryMaxDelay <= 0 {
		c.RetryMaxDelay = time.Hour
	}
	if c.RetryMaxAge <= 0 {
		c.RetryMaxAge = 72 * time.Hour
	}
	if c.RecordTimeout <= 0 {
		c.RecordTimeout = time.Minute
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
}

// Worker holds what the handlers share.
type Worker struct {
	cfg       Config
	store     *store.Store
	queue     tasks.Enqueuer
	templates *templates.Set
	sender    Sender
	limiter   *redis_rate.Limiter
	log       *slog.Logger

	inspector *asynq.Inspector // the watchdog looks at the bulk queue

	// campaigns and notices are bounded caches (LRU): campaigns'
	// definitions (they never change after creation) and their notices
	// prepared for deliver. The watchdog forgets a campaign once it leaves
	// the active set (done, cancelled, purged, deleted: see forgetInactive),
	// so a long-lived worker does not hold every campaign it ever ran.
	campaigns *lru.Cache[string, *notice.Campaign]
	notices   *lru.Cache[preparedKey, *templates.Prepared]

	mu     sync.Mutex
	stalls map[string]stall // campaign → when first seen stalled, and its open count then

	nslots  int                        // under mu: bulk slots of all workers (see slots)
	slotsAt time.Time                  // under mu: when nslots was read
	trouble map[string]*limiterTrouble // under mu: rate limiter keys failing in a row

	alarmMu sync.Mutex
	alarms  map[*alarm]struct{} // rests of chunks waiting for their rate here; nil once stopping

	stopping chan struct{} // closed when the process is asked to stop

	events   *webhooks.Emitter // status webhooks (nil: off)
	stopOnce sync.Once

	// proc prefixes every claim token this process hands out, and live
	// holds the tokens of its tasks still running (under mu): a claim
	// under proc whose token is not live belongs to a task that ended, so
	// its outcome was written and lost (a failover), and the watchdog
	// hands it over at once instead of after CLAIM_TTL.
	proc    string
	live    map[string]int
	orphans sync.RWMutex // held by the watchdog from its look at live to its steal

	progress map[string]progress // under mu: when each campaign last moved (noProgress)

	warned map[string]time.Time // under mu: log lines said at most once per interval

	explained map[string]struct{} // under mu: tasks archived for a reason already logged (explain)
}

// New returns a Worker.
func New(cfg Config, st *store.Store, q tasks.Enqueuer, ts *templates.Set, s Sender, log *slog.Logger) *Worker {
	cfg.defaults()
	if cfg.ClockNow == nil {
		cfg.ClockNow = st.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Worker{
		cfg: cfg, store: st, queue: q, templates: ts, sender: s, log: log,
		limiter:   redis_rate.NewLimiter(st.Redis()),
		campaigns: mustLRU[string, *notice.Campaign](campaignCacheSize),
		notices:   mustLRU[preparedKey, *templates.Prepared](noticeCacheSize),
		stalls:    map[string]stall{},
		proc:      "p" + newToken()[:8] + ".",
		live:      map[string]int{},
		warned:    map[string]time.Time{},
		trouble:   map[string]*limiterTrouble{},
		alarms:    map[*alarm]struct{}{},
		inspector: asynq.NewInspectorFromRedisClient(st.Redis()),
		stopping:  make(chan struct{}),
	}
}

// Stop asks running handlers to hand their remaining work back at the next
// message boundary, so a shutdown is quick and loses nothing, and enqueues
// the chunks waiting here for their rate.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		close(w.stopping)
		w.stopAlarms()
	})
}

func (w *Worker) stopped() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// Register adds the handlers to mux.
func (w *Worker) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypeStart, w.handleStart)
	mux.HandleFunc(tasks.TypeFanout, w.handleFanout)
	mux.HandleFunc(tasks.TypeChunk, w.handleChunk)
	mux.HandleFunc(tasks.TypeDeliver, w.tracked(w.handleDeliver))
}

// Cache sizes: campaigns are few; a prepared notice holds a pre-rendered
// notice per shape of recipient, tens of KB each, so fewer are kept.
const (
	campaignCacheSize = 1000
	noticeCacheSize   = 100
)

func mustLRU[K comparable, V any](n int) *lru.Cache[K, V] {
	c, err := lru.New[K, V](n)
	if err != nil {
		panic(err) // only for n <= 0
	}
	return c
}

// campaign returns a campaign's (immutable) definition, cached.
func (w *Worker) campaign(ctx context.Context, id string) (*notice.Campaign, error) {
	if c, ok := w.campaigns.Get(id); ok {
		return c, nil
	}
	c, err := w.store.Campaign(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			w.forget(id)
		}
		return nil, err
	}
	w.campaigns.Add(id, c)
	return c, nil
}

// forget drops what this worker holds about campaign id: its definition,
// its prepared notices and the watchdog's notes.
func (w *Worker) forget(id string) {
	w.campaigns.Remove(id)
	for _, k := range w.notices.Keys() {
		if k.campaign == id {
			w.notices.Remove(k)
		}
	}
	w.mu.Lock()
	delete(w.stalls, id)
	delete(w.progress, id)
	w.mu.Unlock()
}

// forgetInactive forgets every campaign not among active: a campaign that
// is not sending (done, cancelled, purged or deleted) is read again from
// Redis when a retry or a resend needs it.
func (w *Worker) forgetInactive(active []string) {
	keep := make(map[string]bool, len(active))
	for _, id := range active {
		keep[id] = true
	}
	gone := map[string]bool{}
	for _, id := range w.campaigns.Keys() {
		if !keep[id] {
			gone[id] = true
		}
	}
	for _, k := range w.notices.Keys() {
		if !keep[k.campaign] {
			gone[k.campaign] = true
		}
	}
	w.mu.Lock()
	for id := range w.stalls {
		if !keep[id] {
			gone[id] = true
		}
	}
	for id := range w.progress {
		if !keep[id] {
			gone[id] = true
		}
	}
	w.mu.Unlock()
	for id := range gone {
		w.forget(id)
	}
}

// preparedKey names a campaign's notice in one locale, dated date (Unix ns).
type preparedKey struct {
	campaign, locale string
	date             int64
}

// prepared returns c's notice in locale, dated date, prepared for rendering
// per recipient, cached. A Prepared holds a pre-rendered notice per shape
// of recipient, tens of KB each: fewer of them are kept than campaigns.
func (w *Worker) prepared(c *notice.Campaign, locale string, date time.Time) (*templates.Prepared, error) {
	k := preparedKey{c.ID, locale, date.UnixNano()}
	if p, ok := w.notices.Get(k); ok {
		return p, nil
	}
	p, err := w.templates.Prepare(c.Template, templates.Input{Locale: locale, Data: c.Data, Paragraphs: c.Paragraphs, Date: date.In(c.Zone())})
	if err != nil {
		return nil, err
	}
	if q, had, _ := w.notices.PeekOrAdd(k, p); had {
		return q, nil // prepared meanwhile by another handler: share its pre-renderings
	}
	return p, nil
}

func newToken() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// begin returns a claim token for a task of this process, live until end.
func (w *Worker) begin() string {
	// Not while the watchdog steals this process's orphans: a token born
	// between its look at the live tokens and its script would have its
	// first claim taken for an orphan's (see orphans).
	w.orphans.RLock()
	defer w.orphans.RUnlock()
	t := w.proc + newToken()
	w.mu.Lock()
	w.live[t]++
	w.mu.Unlock()
	return t
}

// end marks a task's token as no longer working.
func (w *Worker) end(token string) {
	w.mu.Lock()
	if w.live[token]--; w.live[token] <= 0 {
		delete(w.live, token)
	}
	w.mu.Unlock()
}

// liveTokens lists the tokens of this process's running tasks.
func (w *Worker) liveTokens() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.live))
	for t := range w.live {
		out = append(out, t)
	}
	return out
}

// warnEvery logs msg at most once per interval per key: a Redis outage
// makes every handler retry every write, and one line says it as well as
// thousands.
func (w *Worker) warnEvery(key string, interval time.Duration, msg string, args ...any) {
	now := time.Now()
	w.mu.Lock()
	if now.Sub(w.warned[key]) < interval {
		w.mu.Unlock()
		return
	}
	w.warned[key] = now
	w.mu.Unlock()
	w.log.Warn(msg, args...)
}

// retryError asks asynq to run a task again after Delay. Failure false means
// the attempt did not fail (a pause, a busy claim): it burns no retry.
type retryError struct {
	Delay   time.Duration
	Failure bool
	Err     error
}

func (e *retryError) Error() string { return e.Err.Error() }
func (e *retryError) Unwrap() error { return e.Err }

// RetryDelay is the asynq Config.RetryDelayFunc for oshirase's tasks.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	var re *retryError
	if errors.As(err, &re) {
		return re.Delay
	}
	// Infrastructure errors (Redis away, a restart): come back soon, then back off.
	d := time.Second << min(n, 5)
	return d
}

// IsFailure is the asynq Config.IsFailure: waiting is not failing.
func IsFailure(err error) bool {
	var re *retryError
	if errors.As(err, &re) {
		return re.Failure
	}
	return err != nil
}

// backoff is the delay before retry number attempts (1 = the first retry),
// growing like an MTA's queue: base, 2×, 4× … up to max.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.cfg.RetryBase
	for i := 1; i < attempts && d < w.cfg.RetryMaxDelay; i++ {
		d *= 2
	}
	return min(d, w.cfg.RetryMaxDelay)
}

// SetEvents connects the worker to the status webhooks' emitter.
func (w *Worker) SetEvents(e *webhooks.Emitter) { w.events = e }

// MessageID is derived from (campaign, recipient, resend) so that a duplicate
// is recognisable as one.
func (w *Worker) MessageID(c *notice.Campaign, rid int64, resend int) string {
	host := w.cfg.MessageIDHost
	if host == "" {
		host = "oshirase.invalid"
		if a, err := mail.ParseAddress(c.From); err == nil {
			if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
				host = a.Address[at+1:]
			}
		}
	}
	id := fmt.Sprintf("c.%s.r.%d", c.ID, rid)
	if resend > 0 {
		id += fmt.Sprintf(".s%d", resend)
	}
	return id + "@" + host
}
