package service_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestRedisMustNotEvictOrForget: a Redis that may evict keys
// (maxmemory-policy other than noeviction) or that keeps nothing across a
// restart (no append-only file) loses accepted campaigns. service.New
// refuses it, naming the setting and the fix, unless REDIS_ACCEPT_RISK
// names the risk; then it starts and warns. Every master of a Cluster is
// checked.
func TestRedisMustNotEvictOrForget(t *testing.T) {
	testenv.Slow(t, "private Redis restarts")
	for _, tt := range []struct {
		name   string
		args   []string
		accept string
		want   []string // in the error; nil: starts
		warn   []string // in the log when it starts
		noInfo bool     // connect as a user who may not run INFO or CONFIG (a managed Redis)
	}{
		{"allkeys-lru", []string{"--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"}, "none",
			[]string{"maxmemory-policy is allkeys-lru", "noeviction", "REDIS_ACCEPT_RISK=eviction"}, nil, false},
		{"volatile-lru", []string{"--appendonly", "yes", "--maxmemory-policy", "volatile-lru"}, "",
			[]string{"maxmemory-policy is volatile-lru", "CONFIG SET maxmemory-policy noeviction"}, nil, false},
		{"no persistence", []string{"--appendonly", "no"}, "none",
			[]string{"appendonly is no", "appendonly yes", "REDIS_ACCEPT_RISK=no-persistence"}, nil, false},
		{"eviction accepted, persistence not", []string{"--appendonly", "no", "--maxmemory-policy", "allkeys-lru"}, "eviction",
			[]string{"appendonly is no"}, nil, false},
		{"both accepted", []string{"--appendonly", "no", "--maxmemory-policy", "allkeys-lru"}, "eviction,no-persistence",
			nil, []string{"REDIS_ACCEPT_RISK", "maxmemory-policy is allkeys-lru", "appendonly is no"}, false},
		{"as documented", []string{"--appendonly", "yes"}, "none", nil, nil, false},
		{"INFO refused", []string{"--appendonly", "yes"}, "none",
			[]string{"cannot read", "INFO", "REDIS_ACCEPT_RISK"}, nil, true},
		{"INFO refused, risks accepted", []string{"--appendonly", "yes"}, "eviction,no-persistence",
			nil, []string{"cannot read", "INFO"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := testenv.StartRedis(t, tt.args...)
			url := "redis://" + r.Addr() + "/0"
			if tt.noInfo {
				if err := plainClient(t, r.Addr()).Do(context.Background(), "ACL", "SETUSER", "app", "on", ">app-pw",
					"~*", "&*", "+@all", "-info", "-config").Err(); err != nil {
					t.Fatal(err)
				}
				url = "redis://app:app-pw@" + r.Addr() + "/0"
			}
			cfg := testenv.Config(t, map[string]string{"REDIS_URL": url,
				"SMTP_URL": "smtp://127.0.0.1:1?tls=none", "REDIS_ACCEPT_RISK": tt.accept})
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			svc, err := service.New(context.Background(), cfg, log, service.Options{API: true, Worker: true})
			if svc != nil {
				defer svc.Close()
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, w := range tt.warn {
					if !strings.Contains(logs.String(), w) {
						t.Errorf("start-up warning lacks %q:\n%s", w, logs.String())
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("started on a Redis with %v", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// TestRedisClusterEveryMasterChecked: one master of three evicts; the
// service refuses to start and names that node.
func TestRedisClusterEveryMasterChecked(t *testing.T) {
	testenv.Slow(t, "a private Redis Cluster")
	needRedisTools(t)
	nodes := startRedisCluster(t, 3, nil)
	ctx := context.Background()
	for _, nd := range nodes {
		if err := plainClient(t, nd.Addr()).ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
			t.Fatal(err)
		}
	}
	bad := nodes[1].Addr()
	if err := plainClient(t, bad).ConfigSet(ctx, "maxmemory-policy", "allkeys-lfu").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": "redis+cluster://" + nodes[0].Addr(),
		"SMTP_URL": "smtp://127.0.0.1:1?tls=none", "REDIS_ACCEPT_RISK": "none"})
	svc, err := service.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), service.Options{Worker: true})
	if err == nil {
		svc.Close()
		t.Fatal("started on a cluster with one evicting master")
	}
	if !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "allkeys-lfu") {
		t.Errorf("error does not name the node %s and its policy: %v", bad, err)
	}
	if strings.Contains(err.Error(), nodes[0].Addr()) || strings.Contains(err.Error(), nodes[2].Addr()) {
		t.Errorf("error names a node that is fine: %v", err)
	}
}

// TestReadyzSeesRedisForget: /readyz answers 503 when Redis lost what it
// held since the process started (a restart without persistence) and when
// the eviction policy changed under a running service; with a risk accepted
// at start it says so.
func TestReadyzSeesRedisForget(t *testing.T) {
	testenv.Slow(t, "a private Redis restart")
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	r := testenv.StartRedis(t, "--appendonly", "no")
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": "redis://" + r.Addr() + "/0", "SMTP_URL": sink.URL(),
		"REDIS_ACCEPT_RISK": "no-persistence"})
	st := teststack.StartStack(t, cfg, service.Options{API: true, Worker: true})
	ready := func() (int, map[string]string) {
		t.Helper()
		resp, err := http.Get(st.Base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.Checks
	}
	if code, checks := ready(); code != 200 || checks["redis_config"] != "risk_accepted" || checks["redis_state"] != "ok" {
		t.Fatalf("at start: %d %v", code, checks)
	}
	// Eviction switched on under the running service.
	ctl := plainClient(t, r.Addr())
	if err := ctl.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	if code, checks := ready(); code != 503 || checks["redis_config"] != "unsafe" {
		t.Errorf("after CONFIG SET maxmemory-policy allkeys-lru: %d %v", code, checks)
	}
	// A crash and restart of a Redis without persistence: everything is gone.
	r.Stop()
	r.Start(t)
	teststack.Eventually(t, "/readyz sees the lost state", 10*time.Second, func() bool {
		code, checks := ready()
		return code == 503 && checks["redis"] == "ok" && checks["redis_state"] == "lost"
	})
}
