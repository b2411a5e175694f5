package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/oshirase/oshirase/internal/apiclient"
)

// receiver is the local status-webhook endpoint of a --webhooks run: it
// takes every request at once (200) and counts the recipient.sent events,
// and when the last one came.
type receiver struct {
	srv  *http.Server
	url  string
	mu   sync.Mutex
	sent int64
	last time.Time
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	rc := &receiver{url: "http://" + ln.Addr().String() + "/hooks"}
	rc.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var evs []struct {
			Type string `json:"type"`
		}
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &evs) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := 0
		for _, e := range evs {
			if e.Type == "recipient.sent" {
				n++
			}
		}
		rc.mu.Lock()
		rc.sent += int64(n)
		rc.last = time.Now()
		rc.mu.Unlock()
	})}
	go rc.srv.Serve(ln)
	return rc, nil
}

func (rc *receiver) counts() (int64, time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.sent, rc.last
}

// deliverHooked is deliver with an endpoint subscribed to every event: it
// also measures how fast recipient.sent events reached the receiver
// (counted from the campaign's start until the last of them arrived).
func (e *env) deliverHooked(ctx context.Context, n int) (*Delivery, int64, error) {
	if e.hooks == nil {
		rc, err := startReceiver()
		if err != nil {
			return nil, 0, err
		}
		e.hooks = rc
	}
	c := &client{apiclient.Client{Base: e.base, Key: e.key}}
	var wh struct {
		ID string `json:"id"`
	}
	body := []byte(`{"url":"` + e.hooks.url + `","events":["*"]}`)
	if err := c.Do(ctx, "POST", "/v1/webhooks", "application/json", bytes.NewReader(body), &wh); err != nil {
		return nil, 0, fmt.Errorf("register the webhook: %w", err)
	}
	defer c.Do(context.WithoutCancel(ctx), "DELETE", "/v1/webhooks/"+wh.ID, "", nil, nil)
	ev0, _ := e.hooks.counts()
	start := time.Now()
	d, mem, err := e.deliver(ctx, n)
	if err != nil {
		return nil, 0, err
	}
	d.Webhooks = true
	err = waitFor(ctx, 5*time.Minute, func() error {
		if got, _ := e.hooks.counts(); got-ev0 < d.Sent {
			return fmt.Errorf("%d of %d recipient.sent events received", got-ev0, d.Sent)
		}
		return nil
	})
	got, last := e.hooks.counts()
	d.Events = got - ev0
	d.EventsElapsed = last.Sub(start)
	if err != nil {
		e.note("webhooks %d: %v", n, err)
	}
	e.logf("deliver %d with webhooks: %d events in %s, %.0f events/s", n, d.Events, d.EventsElapsed.Round(time.Millisecond), d.EventRate())
	return d, mem, nil
}

// EventRate is recipient.sent events per second received (0 without webhooks).
func (d Delivery) EventRate() float64 {
	if d.EventsElapsed <= 0 {
		return 0
	}
	return float64(d.Events) / d.EventsElapsed.Seconds()
}

// TargetWebhookShare: notices per second with an endpoint taking every
// event, as a share of the run without (issue 12: at most 10% slower).
const TargetWebhookShare = 0.90

// webhookPairs returns, per size, the median rate without and with
// webhooks and the median event rate.
func (r *Report) webhookPairs(n int) (off, on, events float64) {
	var offs, ons, evs []float64
	for _, d := range r.Deliveries {
		if d.Recipients != n {
			continue
		}
		if d.Webhooks {
			ons = append(ons, d.Rate())
			evs = append(evs, d.EventRate())
		} else {
			offs = append(offs, d.Rate())
		}
	}
	return mid(offs), mid(ons), mid(evs)
}
