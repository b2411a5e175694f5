package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
)

// Payload is a delivery task's payload: the message id (webhook-id, the
// same on every retry) and the events, without personal data.
type Payload struct {
	Endpoint string  `json:"endpoint"`
	ID       string  `json:"id"`
	Events   []Event `json:"events"`
	// Redelivery: sent again on an admin's request (POST
	// /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver), under the
	// same webhook-id.
	Redelivery bool `json:"redelivery,omitempty"`
}

// MaxRetry with RetryDelay's backoff (capped at an hour) spans about three
// days of attempts.
const MaxRetry = 80

// Emitter batches events and enqueues their deliveries. Emit is safe on a
// nil *Emitter (webhooks off) and costs an append under a mutex: the queue
// grows with what waits (up to maxPending), instead of a channel of that
// size allocated up front — 65,536 events of ~180 bytes each would be 12 MB
// of live heap in every process, 48 MB of RSS under the worker's GOGC=300.
//
// Which endpoints want an event is decided when its batch is flushed, not
// when it is emitted: the flush reads the endpoints' change counter (one
// GET per batch) and the list again when it moved. So an endpoint
// registered through another process gets every event emitted after its
// registration answered, not only those after a periodic re-read.
type Emitter struct {
	store    *store.Store
	queue    tasks.Enqueuer
	log      *slog.Logger
	batch    int
	interval time.Duration

	qmu     sync.Mutex
	pending []Event       // emitted, not yet taken by Run
	wake    chan struct{} // a batch is waiting (capacity 1)
	mu      sync.Mutex
	hooks   []store.Webhook
	version int64 // the change counter hooks were read at (-1: never read)
	dropped atomic.Int64
	done    chan struct{}
}

// NewEmitter returns an emitter that sends up to batch events per request.
func NewEmitter(st *store.Store, q tasks.Enqueuer, batch int, log *slog.Logger) *Emitter {
	if batch <= 0 {
		batch = 500 // WEBHOOK_BATCH_SIZE's default
	}
	return &Emitter{store: st, queue: q, log: log, batch: batch, interval: time.Second, version: -1,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Emit hands ev to the emitter. It never blocks: past 65,536 events waiting
// (Redis away for long) events are dropped, counted and logged.
func (e *Emitter) Emit(ev Event) {
	if e == nil {
		return
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now().UTC()
	}
	e.qmu.Lock()
	if len(e.pending) >= maxPending {
		e.qmu.Unlock()
		metrics.WebhookEventsDropped.Inc()
		if e.dropped.Add(1)%1000 == 1 {
			e.log.Error("webhooks: event buffer full; events dropped", "dropped", e.dropped.Load())
		}
		return
	}
	e.pending = append(e.pending, ev)
	n := len(e.pending)
	e.qmu.Unlock()
	if n >= e.batch {
		select {
		case e.wake <- struct{}{}:
		default: // Run is already told
		}
	}
}

// Refresh reads the endpoints again now (after a change through this
// process's API).
func (e *Emitter) Refresh(ctx context.Context) error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.version = -1
	return e.current(ctx)
}

// current brings the cached endpoints up to date when their change counter
// moved. Callers hold e.mu.
func (e *Emitter) current(ctx context.Context) error {
	v, err := e.store.WebhooksVersion(ctx)
	if err != nil {
		return err
	}
	if v == e.version {
		return nil
	}
	hs, err := e.store.Webhooks(ctx)
	if err != nil {
		return err
	}
	e.hooks = slices.DeleteFunc(hs, func(w store.Webhook) bool { return w.DisabledAt != nil })
	e.version = v
	return nil
}

// Run batches and enqueues until ctx ends, then flushes what it holds.
func (e *Emitter) Run(ctx context.Context) {
	defer close(e.done)
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	var buf []Event
	for {
		select {
		case <-e.wake:
			if buf = e.take(buf); len(buf) >= e.batch {
				buf = e.flush(ctx, buf)
			}
		case <-tick.C:
			buf = e.flush(ctx, e.take(buf))
		case <-ctx.Done():
			e.flush(context.WithoutCancel(ctx), e.take(buf))
			return
		}
	}
}

// Wait waits for Run to have flushed after its context ended.
func (e *Emitter) Wait() {
	if e != nil {
		<-e.done
	}
}

// flush enqueues one delivery per endpoint and batch; it returns what is
// left to send (nothing, or everything when Redis refused).
func (e *Emitter) flush(ctx context.Context, evs []Event) []Event {
	if len(evs) == 0 {
		return evs
	}
	e.mu.Lock()
	err := e.current(ctx)
	hooks := e.hooks
	e.mu.Unlock()
	if err != nil {
		// Which endpoints want them is unknown: kept and tried again at
		// the next tick, like a refused enqueue.
		e.log.Warn("webhooks: reading endpoints; events kept for the next try", "err", err)
		return e.keep(evs)
	}
	for _, h := range hooks {
		var mine []Event
		for _, ev := range evs {
			if Wants(&h, ev) {
				mine = append(mine, ev)
			}
		}
		for len(mine) > 0 {
			n := min(len(mine), e.batch)
			p := Payload{Endpoint: h.ID, ID: "msg_" + newID(), Events: mine[:n]}
			if err := enqueue(ctx, e.queue, p); err != nil {
				// Kept in order and tried again at the next tick.
				e.log.Warn("webhooks: enqueue failed; kept for the next try", "endpoint", h.ID, "err", err)
				// (an endpoint before this one may get these again: at
				// least once, as documented)
				return e.keep(evs)
			}
			mine = mine[n:]
		}
	}
	return evs[:0]
}

// maxPending is how many events may wait: emitted and not taken, or kept
// while Redis refuses deliveries.
const maxPending = 64 * 1024

// take appends the events emitted since the last take to buf.
func (e *Emitter) take(buf []Event) []Event {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	buf = append(buf, e.pending...)
	clear(e.pending) // no pointers kept alive
	e.pending = e.pending[:0]
	return buf
}

// keep returns the events to try again at the next tick: all of them, or
// the newest 65,536 while Redis refuses for long.
func (e *Emitter) keep(evs []Event) []Event {
	if len(evs) > maxPending {
		metrics.WebhookEventsDropped.Add(float64(len(evs) - maxPending))
		e.log.Error("webhooks: Redis refuses deliveries; oldest events dropped", "dropped", len(evs)-maxPending)
		return evs[len(evs)-maxPending:]
	}
	return evs
}

// Redeliver sends a logged delivery of endpoint again, with its events and
// webhook-id (receivers deduplicate by it; this is a new task with its own
// retries). Its events are read from the delivery's asynq task, which asynq
// keeps a day after success and archives after the last failure;
// store.ErrNotFound once it is gone.
func Redeliver(ctx context.Context, insp *asynq.Inspector, q tasks.Enqueuer, endpoint, deliveryID string) error {
	info, err := insp.GetTaskInfo(Queue, deliveryID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return fmt.Errorf("delivery %s: %w", deliveryID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delivery %s: %w", deliveryID, err)
	}
	var p Payload
	if err := json.Unmarshal(info.Payload, &p); err != nil {
		return fmt.Errorf("delivery %s: %w", deliveryID, err)
	}
	if p.Endpoint != endpoint || p.ID != deliveryID {
		return fmt.Errorf("delivery %s of webhook %s: %w", deliveryID, endpoint, store.ErrNotFound)
	}
	p.Redelivery = true
	return enqueueAs(ctx, q, p, p.ID+"-r"+newID())
}

// Wants reports whether endpoint h subscribed to ev.
func Wants(h *store.Webhook, ev Event) bool {
	if h.CampaignID != "" && h.CampaignID != ev.Data.CampaignID {
		return false
	}
	return slices.Contains(h.Events, "*") || slices.Contains(h.Events, ev.Type)
}

func enqueue(ctx context.Context, q tasks.Enqueuer, p Payload) error {
	return enqueueAs(ctx, q, p, p.ID)
}

// enqueueAs enqueues a delivery as the asynq task taskID (a redelivery
// cannot reuse its message's: asynq keeps finished tasks a day).
func enqueueAs(ctx context.Context, q tasks.Enqueuer, p Payload, taskID string) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhook payload: %w", err)
	}
	return tasks.Enqueue(ctx, q, asynq.NewTask(TaskDeliver, b), asynq.Queue(Queue), asynq.TaskID(taskID),
		asynq.MaxRetry(MaxRetry), asynq.Timeout(30*time.Second), asynq.Retention(24*time.Hour))
}

func newID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
