// Package metrics defines oshirase's own Prometheus metrics. asynq's queue
// metrics come from asynq/x/metrics and are registered next to these.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// Messages counts delivery outcomes by campaign and result
	// (sent, failed, retried, held, suppressed, resent; bounced and
	// complained from the bounce receiver).
	Messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "messages_total",
		Help: "Delivery outcomes by campaign and result (sent, failed, retried, held for the relay, suppressed, resent; bounced, complained after the relay took the notice).",
	}, []string{"campaign", "result"})

	// SMTPReplies counts the replies that ended SMTP transactions, by class
	// (2xx, 4xx, 5xx, none), reply code and enhanced status code (RFC 3463):
	// 550 5.1.1 (no such mailbox) and 550 5.7.1 (refused by policy) are
	// different problems. Use ObserveReply: it bounds the label values.
	SMTPReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "smtp_replies_total",
		Help: "Replies that ended an SMTP transaction, by class (2xx accepted, 4xx temporary, 5xx permanent, none = no reply: network error or timeout), code (e.g. 550) and enhanced status code (e.g. 5.1.1; none when the server gave none).",
	}, []string{"class", "code", "enhanced"})

	// Returned counts messages that came back to a return path, by what
	// became of them.
	Returned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "returned_messages_total",
		Help: "Messages received by the bounce receiver and events by the provider webhooks (SES, SendGrid), by kind (bounced, delayed, delivered, complained, auto-reply, unrecognised; unknown for a refused webhook request) and outcome (recorded, duplicate, early: before the notice's 250 was recorded, answered 451 to the MTA (a provider webhook gets 503 to retry); no_token, bad_token, gone, error, unverified; too_large, with no kind: refused over INBOUND_MAX_BYTES).",
	}, []string{"kind", "outcome"})

	// SendSeconds is the latency of one SMTP transaction.
	SendSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "oshirase", Name: "smtp_send_seconds",
		Help:    "Latency of one SMTP send (MAIL FROM to end of DATA), including waiting for a pooled connection.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})

	// RateWaitSeconds is time spent waiting for the shared rate limiter.
	RateWaitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "oshirase", Name: "rate_limit_wait_seconds",
		Help:    "Time a worker waited for the shared SMTP rate limit before a send.",
		Buckets: []float64{0, .001, .01, .05, .1, .25, .5, 1, 2, 5, 10},
	})

	// RelayFailures counts SMTP answers that showed the relay, not the
	// recipient, is the problem, by kind (connect, auth, sender, policy):
	// each paused its campaign or held a recipient back instead of failing it.
	RelayFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "relay_failures_total",
		Help: "Refusals that showed the relay, not the recipient, is the problem, by kind (connect, auth, sender, policy); the recipient was held, not failed, and its campaign paused.",
	}, []string{"kind"})

	// RedisWriteRefused counts writes Redis refused because of its
	// replication state: NOREPLICAS (min-replicas-to-write not met),
	// READONLY (a replica, e.g. an old primary after a failover), MASTERDOWN,
	// LOADING. Every campaign stalls while it grows.
	RedisWriteRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "redis_write_refused_total",
		Help: "Writes Redis refused for its replication state, by reason (noreplicas, readonly, masterdown, loading).",
	}, []string{"reason"})

	// RedisUnreplicated counts deciding writes (a claim before sending, an
	// outcome after) that WAIT did not see reach REDIS_WAIT_REPLICAS
	// replicas within REDIS_WAIT_TIMEOUT: the claim is handed back unused,
	// the outcome is written again.
	RedisUnreplicated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "redis_unreplicated_writes_total",
		Help: "Claims and outcomes not acknowledged by REDIS_WAIT_REPLICAS replicas in time, by step (claim, outcome); retried.",
	}, []string{"step"})

	// PossibleDuplicates counts recipients found sent again after an
	// attempt whose outcome was lost (a crash, a failover, a frozen worker):
	// each is marked in its delivery history and the campaign's counts.
	PossibleDuplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "possible_duplicates_total",
		Help: "Recipients sent again after an attempt whose outcome was lost (crash, failover, frozen worker); see possible_duplicate in the campaign's counts.",
	})

	// Ingested counts uploaded recipients by result (accepted, rejected).
	Ingested = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "recipients_ingested_total",
		Help: "Uploaded recipients by result (accepted, rejected).",
	}, []string{"result"})
)

var (
	// KeyLimited counts requests refused (429) because an API key reached
	// one of its quotas: limit is resends, notifications or starts.
	KeyLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "key_limited_total",
		Help: "Requests refused (429) because an API key reached its quota, by key name and limit (resends, notifications, starts).",
	}, []string{"key", "limit"})

	// AuthFailures counts wrong API keys presented, by where: api (Bearer
	// or basic auth on /v1 and /metrics), console (sign-in), monitoring.
	AuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "auth_failures_total",
		Help: "Wrong API keys presented, by surface (api, console, monitoring).",
	}, []string{"surface"})

	// AuthThrottled counts requests refused (429) because their source
	// presented too many wrong keys lately.
	AuthThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "auth_throttled_total",
		Help: "Requests refused (429) because their source address presented too many wrong keys lately, by surface.",
	}, []string{"surface"})

	// CardRefused counts fields refused because they looked like a full
	// card number: where is upload (rows) or request (every other field).
	CardRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "card_numbers_refused_total",
		Help: "Fields refused because they looked like a full card number, by where (upload rows, other requests).",
	}, []string{"where"})
)

// Status webhooks.
var (
	// WebhookDeliveries counts requests to webhook endpoints by result:
	// ok, retry (network error, 408, 429, 5xx), gone (410: disabled),
	// refused (another 4xx, or a private target).
	WebhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "webhook_deliveries_total",
		Help: "Requests to status webhook endpoints by result (ok, retry, gone, refused).",
	}, []string{"result"})

	// WebhookLagSeconds is how old a request's oldest event is when the
	// receiver accepts it (batching, queueing and retries included).
	WebhookLagSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "oshirase", Name: "webhook_lag_seconds",
		Help:    "Age of a delivered webhook request's oldest event when the receiver accepted it.",
		Buckets: []float64{.1, .5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 72 * 3600},
	})

	// WebhookEventsDropped counts events lost because the emitter's buffer
	// was full (Redis refusing deliveries for long).
	WebhookEventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "webhook_events_dropped_total",
		Help: "Status webhook events dropped because the in-process buffer was full.",
	})
)

var buildInfo = BuildInfoGauge()

// Register adds oshirase's metrics to r.
func Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{Messages, SMTPReplies, SendSeconds, RateWaitSeconds, Ingested, RelayFailures,
		KeyLimited, AuthFailures, AuthThrottled, CardRefused, RedisWriteRefused, RedisUnreplicated, PossibleDuplicates, Returned,
		WebhookDeliveries, WebhookLagSeconds, WebhookEventsDropped,
		SMTPPoolInUse, SMTPPoolIdle, SMTPDialErrors, HTTPRequests, HTTPSeconds, buildInfo} {
		if err := r.Register(c); err != nil {
			if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
				return err
			}
		}
	}
	return nil
}

// campaignsCounted holds the campaign labels Messages has series for.
var campaignsCounted sync.Map

// CountMessages adds n outcomes of result for campaign (its MetricLabel)
// to Messages, remembering the campaign so ForgetCampaign can drop it.
func CountMessages(campaign, result string, n float64) {
	campaignsCounted.Store(campaign, struct{}{})
	Messages.WithLabelValues(campaign, result).Add(n)
}

// CountedCampaigns lists the campaign labels Messages has series for.
func CountedCampaigns() []string {
	var out []string
	campaignsCounted.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	return out
}

// ForgetCampaign drops a campaign's series (a purged or deleted campaign):
// a long-running worker would otherwise keep a series per campaign it ever
// sent, for ever.
func ForgetCampaign(campaign string) {
	campaignsCounted.Delete(campaign)
	Messages.DeletePartialMatch(prometheus.Labels{"campaign": campaign})
}
