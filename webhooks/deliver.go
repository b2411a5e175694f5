package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/store"
)

// Timeout is how long a receiver has to answer.
const Timeout = 10 * time.Second

// Deliverer sends delivery tasks to their endpoints.
type Deliverer struct {
	store  *store.Store
	client *http.Client
	log    *slog.Logger
}

// NewDeliverer returns a deliverer; with allowPrivate, endpoints on
// loopback, private and link-local addresses are reached too
// (WEBHOOK_ALLOW_PRIVATE).
func NewDeliverer(st *store.Store, allowPrivate bool, log *slog.Logger) *Deliverer {
	return &Deliverer{store: st, client: Client(allowPrivate), log: log}
}

// Client is an HTTP client that refuses, at connection time (after DNS, so
// a name pointing inwards is caught too), addresses an outsider must not
// make the service call: loopback, private, link-local, CGNAT, unspecified,
// multicast — unless allowPrivate. It ignores proxy settings (the guard
// must see the real target) and follows no redirects.
func Client(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: Timeout, Control: func(network, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("webhook target %s: %w", address, err)
		}
		if !Public(ap.Addr()) {
			return fmt.Errorf("webhook target %s: %w", ap.Addr(), ErrPrivate)
		}
		return nil
	}}
	return &http.Client{
		Timeout: Timeout,
		Transport: &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: Timeout,
			ResponseHeaderTimeout: Timeout, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ErrPrivate: the endpoint's address is not public and
// WEBHOOK_ALLOW_PRIVATE is off.
var ErrPrivate = errors.New("address is loopback, private or link-local (WEBHOOK_ALLOW_PRIVATE is off)")

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Public reports whether a is an address on the public internet.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() &&
		!a.IsUnspecified() && !a.IsMulticast() && !a.IsInterfaceLocalMulticast() && !cgnat.Contains(a)
}

// CheckURL says what is wrong with an endpoint URL ("" if nothing): http
// or https, a host, and, for an address literal, a public one unless
// allowPrivate.
func CheckURL(raw string, allowPrivate bool) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "must be an absolute http or https URL"
	}
	if u.User != nil {
		return "must not carry a user name or password"
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && !allowPrivate && !Public(a) {
		return "is a loopback, private or link-local address (allowed only with WEBHOOK_ALLOW_PRIVATE=true)"
	}
	if u.Hostname() == "localhost" && !allowPrivate {
		return "is localhost (allowed only with WEBHOOK_ALLOW_PRIVATE=true)"
	}
	return ""
}

// retryAfter is a failure the receiver asked to be retried after a delay.
type retryAfter struct {
	status int
	after  time.Duration
}

func (e *retryAfter) Error() string {
	return fmt.Sprintf("receiver answered %d (retry after %s)", e.status, e.after)
}

// RetryDelay is the webhooks server's backoff: the receiver's Retry-After
// when it gave one (at most a day), else exponential from 5 s, capped at
// an hour, with ±50% jitter so failed receivers are not hit in step.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var ra *retryAfter
	if errors.As(err, &ra) && ra.after > 0 {
		return min(ra.after, 24*time.Hour)
	}
	d := time.Hour
	if n < 10 {
		d = min(time.Hour, 5*time.Second<<n)
	}
	return d/2 + rand.N(d)
}

// Handle delivers one batch (the asynq handler of TaskDeliver).
func (d *Deliverer) Handle(ctx context.Context, t *asynq.Task) error {
	var p Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("webhook payload: %v: %w", err, asynq.SkipRetry)
	}
	wh, err := d.store.GetWebhook(ctx, p.Endpoint)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted since: nobody to tell
	}
	if err != nil {
		return err
	}
	if wh.DisabledAt != nil {
		return nil
	}
	if err := d.fill(ctx, wh, p.Events); err != nil {
		return fmt.Errorf("endpoint %s: %w", wh.ID, err)
	}
	body, err := json.Marshal(p.Events)
	if err != nil {
		return fmt.Errorf("webhook body: %v: %w", err, asynq.SkipRetry)
	}
	now := time.Now()
	sig, err := Sign(wh.Signing(now), p.ID, now, body)
	if err != nil {
		return fmt.Errorf("endpoint %s: %v: %w", wh.ID, err, asynq.SkipRetry)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wh.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("endpoint %s: %v: %w", wh.ID, err, asynq.SkipRetry)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "oshirase-webhooks")
	req.Header.Set("webhook-id", p.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	start := time.Now()
	resp, err := d.client.Do(req)
	att := store.DeliveryAttempt{DeliveryID: p.ID, Attempt: attempt(ctx), Redelivery: p.Redelivery, At: start.UTC(),
		Events: len(p.Events)}
	if err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		att.StatusCode = resp.StatusCode
	}
	att.LatencyMS = time.Since(start).Milliseconds()
	res := d.outcome(ctx, wh, resp, err, now)
	if res == nil && len(p.Events) > 0 {
		metrics.WebhookLagSeconds.Observe(time.Since(p.Events[0].Timestamp).Seconds())
	}
	if res != nil {
		att.Error = logText(res)
	}
	if lerr := d.store.LogDelivery(context.WithoutCancel(ctx), wh.ID, att); lerr != nil {
		d.log.Warn("webhooks: delivery log", "endpoint", wh.ID, "err", lerr)
	}
	return res
}

// attempt is the 1-based attempt number of the task running in ctx.
func attempt(ctx context.Context) int {
	n, _ := asynq.GetRetryCount(ctx)
	return n + 1
}

// logText is an attempt's error as the delivery log shows it: without the
// asynq marker, which says nothing to a reader.
func logText(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+asynq.SkipRetry.Error())
}

// outcome turns a receiver's answer (or the failure to get one) into the
// task's result: nil, a retry (with the receiver's Retry-After), or a stop.
func (d *Deliverer) outcome(ctx context.Context, wh *store.Webhook, resp *http.Response, err error, now time.Time) error {
	if err != nil {
		if errors.Is(err, ErrPrivate) {
			metrics.WebhookDeliveries.WithLabelValues("refused").Inc()
			d.log.Warn("webhook refused: private target", "endpoint", wh.ID)
			return fmt.Errorf("endpoint %s: %w: %w", wh.ID, err, asynq.SkipRetry)
		}
		metrics.WebhookDeliveries.WithLabelValues("retry").Inc()
		return fmt.Errorf("endpoint %s: %w", wh.ID, err)
	}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		metrics.WebhookDeliveries.WithLabelValues("ok").Inc()
		return nil
	case s == http.StatusGone:
		metrics.WebhookDeliveries.WithLabelValues("gone").Inc()
		// The receiver says the endpoint is gone for good: stop.
		_, err := d.store.UpdateWebhook(context.WithoutCancel(ctx), wh.ID, func(w *store.Webhook) error {
			at := time.Now().UTC()
			w.DisabledAt, w.DisabledReason = &at, "the receiver answered 410 Gone"
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		d.log.Warn("webhook endpoint disabled: 410 Gone", "endpoint", wh.ID)
		return fmt.Errorf("endpoint %s answered 410: disabled: %w", wh.ID, asynq.SkipRetry)
	case s == http.StatusTooManyRequests || s == http.StatusRequestTimeout || s >= 500:
		metrics.WebhookDeliveries.WithLabelValues("retry").Inc()
		return &retryAfter{status: s, after: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	default:
		metrics.WebhookDeliveries.WithLabelValues("refused").Inc()
		return fmt.Errorf("endpoint %s answered %d: %w", wh.ID, s, asynq.SkipRetry)
	}
}

// fill adds what the payload leaves out: the customer id and, for an
// endpoint that asks, the address (read now: after a purge they are gone).
// One HMGET per campaign in the batch.
func (d *Deliverer) fill(ctx context.Context, wh *store.Webhook, evs []Event) error {
	want := map[string][]int64{}
	for _, ev := range evs {
		if ev.Data.RecipientID != 0 {
			want[ev.Data.CampaignID] = append(want[ev.Data.CampaignID], ev.Data.RecipientID)
		}
	}
	got := map[string]map[int64]store.Contact{}
	for cid, ids := range want {
		cs, err := d.store.Contacts(ctx, cid, ids)
		if err != nil {
			return err // retried: an event without its customer id is of little use
		}
		got[cid] = cs
	}
	for i := range evs {
		ev := &evs[i].Data
		if ev.RecipientID == 0 {
			continue
		}
		c := got[ev.CampaignID][ev.RecipientID]
		ev.CustomerID = c.CustomerID
		if wh.IncludeAddress {
			ev.Email = c.Email
		}
	}
	return nil
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
