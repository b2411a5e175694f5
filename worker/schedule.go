package worker

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/tasks"
)

// Scheduling: how the chunks of campaigns sending at once share the bulk
// worker slots, and how a chunk waits for its rate without holding one.
// The package doc has the overview.

const (
	// inlineWait is the longest a bulk handler waits in place for its turn
	// under the rate limit: a moment, about what a send's own round trips
	// take. A longer wait gives the slot back (handBack) and comes back when
	// the limit allows. Only a rate of 20/s or more has turns that close,
	// and then the chunks of the campaign's window (see window) take turns
	// with each other: a chunk that lost one may wait for the next, up to
	// inlineTotal, rather than leave turns unused while it is away.
	inlineWait  = 50 * time.Millisecond
	inlineTotal = 10 * inlineWait
	// urgentWait is the same for the urgent queue (single notices, test
	// sends), which has a server of its own: they wait in place as they
	// always did, up to this, and only then go to asynq's retry set.
	urgentWait = 2 * time.Second
	// localWake is the longest rate wait a handed-back chunk spends on a
	// timer in this process. asynq schedules by the whole second, too coarse
	// for a rate of a few messages a second; a longer wait is an asynq
	// scheduled task, which survives a restart.
	localWake = 2 * time.Second
	// perChunkRate is the rate one chunk of a rate-limited campaign is
	// counted on: a chunk sends one message at a time, and a relay (or a
	// busy CPU) may take 100 ms over one. A rate-limited campaign's window
	// is rate/perChunkRate chunks, at least one: enough to reach its rate,
	// too few to keep dozens of chunks spinning on the limiter.
	perChunkRate = 10.0
	// slotsEvery is how often the count of bulk slots is read again.
	slotsEvery = 10 * time.Second
	// Limiter failures back off from limiterBackoff, doubling, up to
	// limiterBackoffMax, and are logged once per limiterLogEvery per key.
	limiterBackoff    = 100 * time.Millisecond
	limiterBackoffMax = 15 * time.Second
	limiterLogEvery   = time.Minute
)

// queuedTTL is how long the lease of a chunk waiting in the bulk queue
// lives: long enough for a deep queue, short enough that a chunk whose task
// was lost (a crash between handing it out and enqueueing it) is handed out
// again by the watchdog within minutes. A running chunk renews its lease
// with CLAIM_TTL at every message.
func (w *Worker) queuedTTL() time.Duration { return 5 * w.cfg.ClaimTTL }

// slots is how many bulk tasks all worker processes run at once, from the
// servers asynq has on record (read again every slotsEvery); at least this
// process's own concurrency.
func (w *Worker) slots() int {
	w.mu.Lock()
	n, at := w.nslots, w.slotsAt
	w.mu.Unlock()
	if n > 0 && time.Since(at) < slotsEvery {
		return n
	}
	n = 0
	if servers, err := w.inspector.Servers(); err == nil {
		for _, s := range servers {
			if _, bulk := s.Queues[tasks.QueueBulk]; bulk && s.Status == "active" {
				n += s.Concurrency
			}
		}
	}
	n = max(n, w.cfg.Concurrency, 1)
	w.mu.Lock()
	w.nslots, w.slotsAt = n, time.Now()
	w.mu.Unlock()
	return n
}

// window is how many chunks of campaign c may be handed out at once:
// queued, running or waiting for their turn. Twice the bulk slots of all
// workers: a campaign alone keeps every slot busy, with a chunk queued
// behind each, but a campaign started later queues behind at most that,
// not behind the whole of the first, and then the campaigns take turns (a
// chunk that ends queues its successor behind the other campaign's). A
// rate-limited campaign gets what its rate needs.
func (w *Worker) window(c *notice.Campaign) int64 {
	n := int64(2 * w.slots())
	if r := w.rateOf(c); r > 0 {
		n = min(n, max(1, int64(math.Ceil(r/perChunkRate))))
	}
	return n
}

// rateOf is the most messages a second c may send: its own rate or the
// global one, whichever is lower (0: unlimited).
func (w *Worker) rateOf(c *notice.Campaign) float64 {
	return notice.EffectiveRate(c.Rate, w.cfg.Rate)
}

// topUp hands out the campaign's next chunks while its window has room:
// the fan-out opens the window, each chunk that ends makes room for the
// next, and the watchdog tops it up should that be lost. It returns how
// many it handed out.
func (w *Worker) topUp(ctx context.Context, c *notice.Campaign) (int, error) {
	size := int64(w.cfg.ChunkSize)
	h, err := w.store.HandOut(ctx, c.ID, size, w.window(c), w.queuedTTL())
	if err != nil {
		return 0, err
	}
	for _, from := range h.Froms {
		cp := tasks.ChunkPayload{CampaignID: c.ID, Gen: h.Gen, From: from, To: min(from+size, h.Seq+1)}
		if err := tasks.Chunk(ctx, w.queue, cp, ""); err != nil {
			// Its lease runs out and the watchdog hands it out again.
			return 0, err
		}
	}
	return len(h.Froms), nil
}

// turn waits for one message's turn under the campaign's and the global
// rate limits, in place for at most each at a time and total in all. When
// they make it wait longer, or the worker is stopping, it returns how long
// until they may allow it; 0 means send now.
func (w *Worker) turn(ctx context.Context, c *notice.Campaign, each, total time.Duration) (wait time.Duration) {
	var waited time.Duration
	defer func() { metrics.RateWaitSeconds.Observe((waited + wait).Seconds()) }()
	take := func(key string, lim redis_rate.Limit) time.Duration {
		for {
			d := w.ask(ctx, key, lim)
			if d == 0 || d > each || waited+d > total {
				return d
			}
			select {
			case <-ctx.Done():
				return d
			case <-w.stopping:
				return d
			case <-time.After(d):
				waited += d
			}
		}
	}
	// The campaign's own limit first: it is the stricter one, and a global
	// turn taken and then left unused would be lost to other campaigns.
	if c.Rate > 0 && (w.cfg.Rate == 0 || c.Rate < w.cfg.Rate) {
		if d := take(w.store.RateKey(c.ID), limitFor(c.Rate, 0)); d > 0 {
			return d
		}
	}
	if w.cfg.Rate > 0 {
		return take(w.store.RateKey(""), limitFor(w.cfg.Rate, w.cfg.Burst))
	}
	return 0
}

// ask takes one turn from the limiter at key: 0 if granted, else how long
// until one may be. A limiter that fails must not let messages go
// unlimited: it answers "later", later each time it fails in a row.
func (w *Worker) ask(ctx context.Context, key string, lim redis_rate.Limit) time.Duration {
	res, err := w.limiter.Allow(ctx, key, lim)
	if err != nil {
		if ctx.Err() != nil {
			return limiterBackoff
		}
		return w.limiterFailed(key, err)
	}
	w.limiterOK(key)
	if res.Allowed > 0 {
		return 0
	}
	return max(res.RetryAfter, time.Millisecond)
}

// limiterTrouble is the failures of one limiter key in a row, in this process.
type limiterTrouble struct {
	fails    int
	unlogged int
	logged   time.Time
}

// limiterFailed counts a failure of the limiter at key and returns how long
// to wait before asking it again. It warns at the first failure and then
// once per limiterLogEvery, with how many failed meanwhile.
func (w *Worker) limiterFailed(key string, err error) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.trouble[key]
	if t == nil {
		if len(w.trouble) > 1000 { // a bounded map; keys are campaigns
			clear(w.trouble)
		}
		t = &limiterTrouble{}
		w.trouble[key] = t
	}
	t.fails++
	t.unlogged++
	d := min(limiterBackoff<<min(t.fails-1, 16), limiterBackoffMax)
	w.log.Debug("rate limiter failed", "key", key, "retry_in", d, "err", err)
	if time.Since(t.logged) >= limiterLogEvery {
		w.log.Warn("rate limiter failing: messages wait for it, none go unlimited", "key", key,
			"failures", t.unlogged, "retry_in", d, "err", err)
		t.logged, t.unlogged = time.Now(), 0
	}
	return d
}

func (w *Worker) limiterOK(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.trouble[key]; t != nil {
		delete(w.trouble, key)
		w.log.Info("rate limiter answering again", "key", key, "failures", t.fails)
	}
}

// alarm is the rest of a chunk waiting on a timer in this process.
type alarm struct {
	t      *time.Timer
	p      tasks.ChunkPayload
	suffix string
}

// wakesLocally says whether a rest handed back to run at wake waits on a
// timer in this process (see later).
func (w *Worker) wakesLocally(wake time.Time) bool {
	d := time.Until(wake)
	return d > 0 && d <= localWake && !w.stopped()
}

// later enqueues p, the rest of a chunk, to run at wake; a zero wake (a
// stop) is at once, on the bulk queue. A rate wait goes to the paced queue,
// which the bulk servers take first: a wait that wakesLocally is a timer
// here (if the process dies first, the rest's lease runs out and the
// watchdog hands it out again); a longer one is an asynq scheduled task, set
// a second early because asynq may otherwise run it up to a second late;
// the early run waits out the rest on a timer.
func (w *Worker) later(ctx context.Context, p tasks.ChunkPayload, wake time.Time) error {
	suffix := "h" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if wake.IsZero() {
		return tasks.Chunk(ctx, w.queue, p, suffix)
	}
	if w.wakesLocally(wake) && w.alarm(p, suffix, wake) {
		return nil
	}
	var at time.Time
	if time.Until(wake) > time.Second {
		at = wake.Add(-time.Second)
	}
	return tasks.ChunkPaced(ctx, w.queue, p, suffix, at)
}

// alarm enqueues p at wake from a timer; false once the worker is stopping.
func (w *Worker) alarm(p tasks.ChunkPayload, suffix string, wake time.Time) bool {
	w.alarmMu.Lock()
	defer w.alarmMu.Unlock()
	if w.alarms == nil {
		return false
	}
	a := &alarm{p: p, suffix: suffix}
	a.t = time.AfterFunc(time.Until(wake), func() {
		w.alarmMu.Lock()
		_, mine := w.alarms[a]
		delete(w.alarms, a)
		w.alarmMu.Unlock()
		if mine {
			w.ring(a)
		}
	})
	w.alarms[a] = struct{}{}
	return true
}

// ring enqueues an alarm's rest of a chunk now.
func (w *Worker) ring(a *alarm) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tasks.ChunkPaced(ctx, w.queue, a.p, a.suffix, time.Time{}); err != nil {
		w.log.Warn("enqueue a chunk after its rate wait; its lease brings it back", "campaign", a.p.CampaignID, "from", a.p.From, "err", err)
	}
}

// stopAlarms enqueues every rest of a chunk still waiting on a timer at
// once, so that a stopping process leaves nothing only in its memory; the
// task waits out the rest of its turn where it runs.
func (w *Worker) stopAlarms() {
	w.alarmMu.Lock()
	pending := w.alarms
	w.alarms = nil
	w.alarmMu.Unlock()
	for a := range pending {
		a.t.Stop()
		w.ring(a)
	}
}
