package monitoring

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// Metrics returns the /metrics handler of a process with the API: oshirase's
// own metrics, asynq's queue metrics and the active campaigns' state and
// recipients, both read from Redis at scrape time, and the Go runtime's.
// rate is SMTP_RATE, the rate of campaigns without one of their own.
func Metrics(insp *asynq.Inspector, campaigns Campaigns, rate float64, log *slog.Logger) (http.Handler, error) {
	return handler(log, NewQueueCollector(insp, log), &CampaignCollector{campaigns: campaigns, rate: rate, log: log})
}

// WorkerMetrics returns the /metrics handler of a worker-only process
// (METRICS_ADDR): its own delivery metrics and the Go runtime's. The queue
// and campaign gauges are the same from every process, so only the API
// exports them: a scrape of N workers does not count them N times.
func WorkerMetrics(log *slog.Logger) (http.Handler, error) {
	return handler(log)
}

func handler(log *slog.Logger, extra ...prometheus.Collector) (http.Handler, error) {
	reg, err := registry(extra...)
	if err != nil {
		return nil, err
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}, Registry: reg}), nil
}

func registry(extra ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg); err != nil {
		return nil, err
	}
	for _, c := range append(extra,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// Described lists the name of every metric the API's /metrics may carry,
// including labelled ones no event has created a series of yet (a relay
// that never refused): for checking dashboards and alert rules.
func Described() ([]string, error) {
	reg, err := registry(NewQueueCollector(nil, nil), &CampaignCollector{campaigns: describeOnly{}})
	if err != nil {
		return nil, err
	}
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	var out []string
	for d := range ch {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out, nil
}

// describeOnly is a Campaigns with the relayPaused and watcher extras, for
// Described: Describe never reads it.
type describeOnly struct{}

func (describeOnly) Active(context.Context) ([]string, error)                   { return nil, nil }
func (describeOnly) Campaign(context.Context, string) (*notice.Campaign, error) { return nil, nil }
func (describeOnly) RelayPaused(context.Context) ([]string, error)              { return nil, nil }

// Campaigns is where CampaignCollector reads campaigns (a *store.Store).
type Campaigns interface {
	Active(ctx context.Context) ([]string, error)
	Campaign(ctx context.Context, id string) (*notice.Campaign, error)
}

// CampaignCollector exports every active (sending or paused) campaign's
// state, last progress, rate and recipients by status, so a dashboard shows
// each campaign drain (asynq's queue size counts chunk tasks of 100, not
// people). It reads Redis at every scrape and keeps nothing: a campaign
// that ends, is cancelled or purged leaves the active set and its series
// end with it.
type CampaignCollector struct {
	campaigns Campaigns
	rate      float64 // SMTP_RATE
	log       *slog.Logger
}

// watcher is what a Campaigns (a *store.Store) may also tell: the
// watchdog's view of a campaign (last progress, stall).
type watcher interface {
	Watch(ctx context.Context, id string) (store.Watch, error)
}

// CampaignStates are the values of oshirase_campaign_state's state label:
// sending; stalled (sending, but the watchdog found nothing working on its
// pending recipients and no progress since, see worker.Worker.Sweep);
// paused (by an operator); relay_paused (by the system: the relay refuses
// every message).
var CampaignStates = []string{"sending", "stalled", "paused", "relay_paused"}

// stateOf is the state label of a campaign, given the watchdog's view.
func stateOf(c *notice.Campaign, w store.Watch) string {
	switch {
	case c.Status == notice.CampaignPaused && c.PausedReason != "":
		return "relay_paused"
	case c.Status == notice.CampaignPaused:
		return "paused"
	case w.StalledAt != nil:
		return "stalled"
	}
	return "sending"
}

// maxCampaignSeries bounds the campaigns one scrape reports.
const maxCampaignSeries = 100

var (
	descRecipients = prometheus.NewDesc("oshirase_campaign_recipients",
		"Recipients of an active (sending or paused) campaign by status.", []string{"campaign", "status"}, nil)
	descRelayPaused = prometheus.NewDesc("oshirase_campaigns_relay_paused",
		"Campaigns paused because the relay refuses every message (see paused_reason); resume them once it is fixed.", nil, nil)
)

// relayPaused is what a Campaigns (a *store.Store) may also tell.
type relayPaused interface {
	RelayPaused(ctx context.Context) ([]string, error)
}

var (
	descState = prometheus.NewDesc("oshirase_campaign_state",
		"1 for the state an active campaign is in, 0 for the others: sending; stalled (sending, but the watchdog found nothing working on its pending recipients and no progress since); paused (by an operator); relay_paused (by the system: the relay refuses every message).",
		[]string{"campaign", "state"}, nil)
	descProgressAt = prometheus.NewDesc("oshirase_campaign_last_progress_timestamp_seconds",
		"Unix time an active campaign's count of recipients done (sent, failed, suppressed, cancelled) last changed, as the watchdog saw it (every 2 s).",
		[]string{"campaign"}, nil)
	descRate = prometheus.NewDesc("oshirase_campaign_rate_limit_per_second",
		"Messages per second an active campaign is sent at most: its own rate, or SMTP_RATE if lower or it has none; 0 = no limit.",
		[]string{"campaign"}, nil)
)

var descDuplicates = prometheus.NewDesc("oshirase_campaign_possible_duplicates",
	"Recipients of an active campaign that may have received their notice twice (an attempt whose outcome was lost was followed by another).", []string{"campaign"}, nil)

// Describe implements prometheus.Collector.
func (c *CampaignCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRecipients
	if _, ok := c.campaigns.(relayPaused); ok {
		ch <- descRelayPaused
	}
	ch <- descDuplicates
	ch <- descState
	ch <- descProgressAt
	ch <- descRate
}

// Collect implements prometheus.Collector.
func (c *CampaignCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rp, ok := c.campaigns.(relayPaused); ok {
		if ids, err := rp.RelayPaused(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descRelayPaused, prometheus.GaugeValue, float64(len(ids)))
		} else if c.log != nil {
			c.log.Warn("campaign metrics", "err", err)
		}
	}
	ids, err := c.campaigns.Active(ctx)
	if err != nil {
		if c.log != nil {
			c.log.Warn("campaign metrics", "err", err)
		}
		return
	}
	slices.Sort(ids)
	for _, id := range ids[:min(len(ids), maxCampaignSeries)] {
		cp, err := c.campaigns.Campaign(ctx, id)
		if err != nil {
			continue // deleted or unreadable: the next scrape tries again
		}
		n := cp.Counts
		for status, v := range map[notice.Status]int64{
			notice.StatusPending: n.Pending, notice.StatusSending: n.Sending, notice.StatusRetrying: n.Retrying,
			notice.StatusSent: n.Sent, notice.StatusFailed: n.Failed, notice.StatusSuppressed: n.Suppressed,
			notice.StatusCancelled: n.Cancelled, notice.StatusBounced: n.Bounced, notice.StatusComplained: n.Complained,
		} {
			ch <- prometheus.MustNewConstMetric(descRecipients, prometheus.GaugeValue, float64(v), id, string(status))
		}
		ch <- prometheus.MustNewConstMetric(descDuplicates, prometheus.GaugeValue, float64(n.PossibleDuplicate), id)
		if cp.Status != notice.CampaignSending && cp.Status != notice.CampaignPaused {
			continue // done or cancelled, not yet out of the active set: no state to show
		}
		var wv store.Watch
		if wt, ok := c.campaigns.(watcher); ok {
			if wv, err = wt.Watch(ctx, id); err != nil && c.log != nil {
				c.log.Warn("campaign metrics", "campaign", id, "err", err)
			}
		}
		state := stateOf(cp, wv)
		for _, s := range CampaignStates {
			v := 0.0
			if s == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, id, s)
		}
		if at := wv.ProgressAt; at != nil {
			ch <- prometheus.MustNewConstMetric(descProgressAt, prometheus.GaugeValue, float64(at.UnixMilli())/1000, id)
		} else if cp.StartedAt != nil {
			ch <- prometheus.MustNewConstMetric(descProgressAt, prometheus.GaugeValue, float64(cp.StartedAt.UnixMilli())/1000, id)
		}
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, notice.EffectiveRate(cp.Rate, c.rate), id)
	}
}

type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) {
	if s.l != nil {
		s.l.Warn("metrics", "err", v)
	}
}

// QueueCollector exports asynq's queue state. It is our own, over
// asynq.Inspector, because asynq/x/metrics is built on go-redis v8 and would
// pull a second Redis client into the module. The names follow it, except
// its two gauges named like counters (asynq_tasks_enqueued_total,
// asynq_queue_paused_total), here asynq_queue_tasks and asynq_queue_paused:
// Prometheus keeps _total for counters, and rate() over a gauge misleads.
type QueueCollector struct {
	insp *asynq.Inspector
	log  *slog.Logger
}

// NewQueueCollector returns a collector that reads every queue at scrape time.
func NewQueueCollector(insp *asynq.Inspector, log *slog.Logger) *QueueCollector {
	return &QueueCollector{insp: insp, log: log}
}

var (
	descTasks = prometheus.NewDesc("asynq_queue_tasks",
		"Tasks in a queue now, by state (pending, active, scheduled, retry, archived, completed, aggregating). Tasks, not recipients: a bulk chunk task carries up to CHUNK_SIZE recipients.",
		[]string{"queue", "state"}, nil)
	descSize = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue, all states but completed.", []string{"queue"}, nil)
	descLatency = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Age of the oldest pending task of a queue.", []string{"queue"}, nil)
	descMemory = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Approximate Redis memory a queue uses (sampled).", []string{"queue"}, nil)
	descProcessed = prometheus.NewDesc("asynq_tasks_processed_total",
		"Task runs (succeeded or failed) since the queue was created. Runs of tasks, not recipients.", []string{"queue"}, nil)
	descFailed = prometheus.NewDesc("asynq_tasks_failed_total",
		"Task runs that returned an error since the queue was created (on the bulk queue: chunk tasks; on the recipients queue: one recipient's retry or failure report each).", []string{"queue"}, nil)
	descPaused = prometheus.NewDesc("asynq_queue_paused",
		"1 when the queue is paused (asynqmon's pause), else 0.", []string{"queue"}, nil)
	descUp = prometheus.NewDesc("asynq_up",
		"1 when the queue state could be read from Redis.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTasks, descSize, descLatency, descMemory, descProcessed, descFailed, descPaused, descUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	qs, err := c.insp.Queues()
	if err != nil {
		c.fail(ch, err)
		return
	}
	for _, q := range qs {
		info, err := c.insp.GetQueueInfo(q)
		if err != nil {
			c.fail(ch, err)
			return
		}
		g := func(d *prometheus.Desc, t prometheus.ValueType, v float64, lv ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{q}, lv...)...)
		}
		for state, n := range map[string]int{
			"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled, "retry": info.Retry,
			"archived": info.Archived, "completed": info.Completed, "aggregating": info.Aggregating,
		} {
			g(descTasks, prometheus.GaugeValue, float64(n), state)
		}
		g(descSize, prometheus.GaugeValue, float64(info.Size))
		g(descLatency, prometheus.GaugeValue, info.Latency.Seconds())
		g(descMemory, prometheus.GaugeValue, float64(info.MemoryUsage))
		g(descProcessed, prometheus.CounterValue, float64(info.ProcessedTotal))
		g(descFailed, prometheus.CounterValue, float64(info.FailedTotal))
		paused := 0.0
		if info.Paused {
			paused = 1
		}
		g(descPaused, prometheus.GaugeValue, paused)
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
}

func (c *QueueCollector) fail(ch chan<- prometheus.Metric, err error) {
	if c.log != nil {
		c.log.Warn("asynq queue metrics", "err", err)
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
}
