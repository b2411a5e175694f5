package bench

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/apiclient"
	"github.com/oshirase/oshirase/internal/sample"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
)

// BenchmarkDeliver sends a campaign end to end in one process (API +
// worker, real Redis DB 7, in-process sink): CI-friendly numbers and a
// profile with -cpuprofile. `oshirase bench` is the real measurement.
// BENCH_N overrides the campaign size (default 15,370).
func BenchmarkDeliver(b *testing.B) {
	n := envInt("BENCH_N", 15370)
	_, url := testenv.Redis(b, testenv.DBBench)
	// Postfix's smtp-sink when installed (so the profile shows oshirase,
	// not the sink), else the in-process one.
	e := &env{dir: b.TempDir(), log: io.Discard, report: &Report{}}
	b.Cleanup(e.stop)
	if err := e.startSink(b.Context()); err != nil {
		b.Fatal(err)
	}
	cfg := testenv.Config(b, map[string]string{"REDIS_URL": url, "SMTP_URL": "smtp://" + e.smtp + "?tls=none", "KEY_PREFIX": "bench"})
	st := teststack.StartStack(b, cfg, service.Options{API: true, Worker: true})
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		var camp notice.Campaign
		code, body := teststack.Do(b, st.Base, testenv.AdminKey, "POST", "/v1/campaigns", "application/json", sample.Campaign("bench"), &camp)
		if code != 201 {
			b.Fatalf("create: %d %s", code, body)
		}
		var csv bytes.Buffer
		csv.ReadFrom(CSV(n, 1+i*n))
		if code, body := teststack.Do(b, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+camp.ID+"/recipients", "text/csv", csv.Bytes(), nil); code != 200 {
			b.Fatalf("upload: %d %s", code, body)
		}
		start := time.Now()
		teststack.Do(b, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+camp.ID+"/start", "", nil, nil)
		c := teststack.WaitCampaign(b, st.Base, camp.ID, 5*time.Minute, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
		total += time.Since(start)
		if c.Counts.Sent != int64(n) {
			b.Fatalf("sent %d of %d", c.Counts.Sent, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "msg/s")
}

// BenchmarkIngest uploads BENCH_ROWS rows (default 200,000) through the API.
func BenchmarkIngest(b *testing.B) {
	n := envInt("BENCH_ROWS", 200000)
	_, url := testenv.Redis(b, testenv.DBBench)
	cfg := testenv.Config(b, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "bench"})
	st := teststack.StartStack(b, cfg, service.Options{API: true})
	c := &client{apiclient.Client{Base: st.Base, Key: testenv.AdminKey}}
	for i := 0; b.Loop(); i++ {
		var camp notice.Campaign
		if err := c.Do(b.Context(), "POST", "/v1/campaigns", "application/json", bytes.NewReader(sample.Campaign("ingest")), &camp); err != nil {
			b.Fatal(err)
		}
		var up uploadAnswer
		if err := c.Do(b.Context(), "POST", "/v1/campaigns/"+camp.ID+"/recipients", "text/csv", CSV(n, 1), &up); err != nil {
			b.Fatal(err)
		}
		if up.Accepted != n {
			b.Fatalf("accepted %d of %d", up.Accepted, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func envInt(k string, def int) int {
	var n int
	if _, err := fmt.Sscan(getenv(k), &n); err == nil && n > 0 {
		return n
	}
	return def
}
