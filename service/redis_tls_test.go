package service_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestCampaignOverRedisTLS runs a campaign with every Redis connection over
// TLS, for each kind of REDIS_URL: one server (rediss://), a Cluster
// (rediss+cluster://, the cluster bus on TLS too) and a Sentinel-managed
// primary (rediss+sentinel://, Sentinel and primary both TLS-only). The
// servers' certificates come from a private CA that the URL names with
// tls_ca_file; the plain ports are off, so nothing can have gone around TLS.
func TestCampaignOverRedisTLS(t *testing.T) {
	needRedisTools(t)
	const n = 120
	tl := testenv.NewTLSFiles(t)
	ca := "tls_ca_file=" + url.QueryEscape(tl.CA)
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) string // starts the servers, returns REDIS_URL
	}{
		{"single", func(t *testing.T) string {
			port := freePorts(t, 1)[0]
			s := startRedisWith(t, port, "", tl)
			// The certificate is checked: without the CA, no connection.
			c, err := config.OpenRedis("rediss://" + s.Addr() + "/0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("rediss:// without tls_ca_file to a private CA's server: %v, want a certificate error", err)
			}
			return "rediss://" + s.Addr() + "/0?" + ca
		}},
		{"cluster", func(t *testing.T) string {
			var addrs []string
			for _, nd := range startRedisCluster(t, 3, tl) {
				addrs = append(addrs, nd.Addr())
			}
			return "rediss+cluster://" + strings.Join(addrs, ",") + "?" + ca
		}},
		{"sentinel", func(t *testing.T) string {
			port := freePorts(t, 1)[0]
			primary := startRedisWith(t, port, "primary-secret", tl)
			pw := passwords{primary: "primary-secret", sentinel: "sentinel-secret"}
			sen := startSentinel(t, primary.Port, pw, tl)
			return "rediss+sentinel://:primary-secret@" + sen.addr + "/mymaster?sentinel_password=sentinel-secret&" + ca
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redisURL := tc.start(t)
			sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sink.Close() })
			st := startTopoStack(t, map[string]string{
				"REDIS_URL": redisURL, "KEY_PREFIX": "tls", "SMTP_URL": sink.URL(),
				"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "25",
			})
			checkReady(t, st.base)
			cid := createCampaign(t, st.base, map[string]any{"name": "over TLS: " + tc.name})
			uploadCSV(t, st.base, cid, topoCSV("t", "shared@example.jp", n), n)
			campaignAction(t, st.base, cid, "start", 202)
			done := teststack.WaitCampaign(t, st.base, cid, 30*time.Second, isDone)
			checkCounts(t, done, n)
			checkDelivered(t, tally(t, sink), cid, n, 0)
		})
	}
}
