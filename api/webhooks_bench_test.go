package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestWebhookThroughput (OSHIRASE_WEBHOOK_BENCH=<recipients>) measures a
// campaign's notices per second with and without a webhook endpoint that
// takes every event, runs alternating, and the events per second the
// receiver got. It is a measurement, not a check: it only logs.
func TestWebhookThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("OSHIRASE_WEBHOOK_BENCH"))
	if n <= 0 {
		t.Skip("set OSHIRASE_WEBHOOK_BENCH=<recipients> to measure")
	}
	var events atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf [64 << 10]byte
		for {
			k, err := r.Body.Read(buf[:])
			for _, b := range buf[:k] {
				if b == '{' {
					// one '{' per event and one per "data" object
					events.Add(1)
				}
			}
			if err != nil {
				break
			}
		}
	}))
	defer recv.Close()
	run := func(hooks bool) (float64, float64) {
		st, _ := startSupportStack(t, map[string]string{"WEBHOOK_ALLOW_PRIVATE": "true", "CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "16"})
		if hooks {
			if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/webhooks", "application/json",
				[]byte(`{"url":"`+recv.URL+`","events":["*"]}`), nil); code != 201 {
				t.Fatalf("register: %d %s", code, b)
			}
		}
		var c notice.Campaign
		teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
		rs := make([]notice.Recipient, n)
		for i := range rs {
			rs[i] = notice.Recipient{Email: fmt.Sprintf("r%d@example.jp", i), Locale: "ja", CardLast4: "1234"}
		}
		if _, err := st.Svc.Store.AddRecipients(context.Background(), c.ID, rs); err != nil {
			t.Fatal(err)
		}
		events.Store(0)
		start := time.Now()
		teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)
		teststack.WaitCampaign(t, st.Base, c.ID, 10*time.Minute, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
		el := time.Since(start)
		if hooks {
			teststack.Eventually(t, "every event", 5*time.Minute, func() bool { return events.Load()/2 >= int64(n) })
		}
		evRate := float64(events.Load()/2) / time.Since(start).Seconds()
		st.Stop()
		return float64(n) / el.Seconds(), evRate
	}
	for i := range 2 {
		off, _ := run(false)
		on, ev := run(true)
		t.Logf("run %d: %d recipients: %.0f msg/s without webhooks, %.0f msg/s with (%.1f%%); %.0f events/s delivered", i+1, n, off, on, 100*(on-off)/off, ev)
	}
}
