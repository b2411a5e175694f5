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
// tls_ca_file, and the servers want a client certificate too (Redis'
// default), which tls_cert_file and tls_key_file give. The plain ports are
// off, so nothing can have gone around TLS.
func TestCampaignOverRedisTLS(t *testing.T) {
	testenv.Slow(t, "a private TLS Redis")
	needRedisTools(t)
	const n = 120
	tl := testenv.NewTLSFiles(t)
	q := tl.Query()
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) string // starts the servers, returns REDIS_URL
	}{
		{"single", func(t *testing.T) string {
			port := freePorts(t, 1)[0]
			s := startRedisWith(t, port, "", tl)
			// Certificates are checked both ways: without the CA the
			// client refuses the server, without its own the server
			// refuses the client.
			for _, bad := range []string{"", "tls_ca_file=" + url.QueryEscape(tl.CA)} {
				c, err := config.OpenRedis("rediss://" + s.Addr() + "/0?" + bad)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Errorf("rediss://…?%s: %v, want a certificate error", bad, err)
				}
				c.Close()
			}
			return "rediss://" + s.Addr() + "/0?" + q
		}},
		{"cluster", func(t *testing.T) string {
			var addrs []string
			for _, nd := range startRedisCluster(t, 3, tl) {
				addrs = append(addrs, nd.Addr())
			}
			return "rediss+cluster://" + strings.Join(addrs, ",") + "?" + q
		}},
		{"sentinel", func(t *testing.T) string {
			port := freePorts(t, 1)[0]
			primary := startRedisWith(t, port, "primary-secret", tl)
			pw := passwords{primary: "primary-secret", sentinel: "sentinel-secret"}
			sen := startSentinel(t, primary.Port, pw, tl)
			return "rediss+sentinel://:primary-secret@" + sen.addr + "/mymaster?sentinel_password=sentinel-secret&" + q
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
