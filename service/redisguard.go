package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/store"
)

// redisGuard checks what the delivery guarantees rest on (README, "What the
// guarantees rest on"): a Redis that never evicts and keeps what it
// acknowledged across a restart. At start it refuses a Redis that does not,
// unless REDIS_ACCEPT_RISK accepts the risk; /readyz checks again, and sees
// a Redis that lost its data under the running process.
type redisGuard struct {
	rdb    redis.UniversalClient
	accept config.RedisRisks
	marker *store.Marker
	log    *slog.Logger
	// settings: check eviction and persistence (not for an embedded Redis)
	settings bool
	lost     atomic.Bool // latched: once lost, only a restart of the process clears it
}

// risk is one way a Redis node can lose accepted campaigns.
type risk struct {
	name string // as in REDIS_ACCEPT_RISK
	text string
}

func (g *redisGuard) accepted(r risk) bool {
	switch r.name {
	case "eviction":
		return g.accept.Eviction
	case "no-persistence":
		return g.accept.NoPersistence
	}
	return false
}

// risks lists what the masters' settings put at risk.
func risks(nodes []store.NodeDurability) []risk {
	var out []risk
	for _, n := range nodes {
		switch {
		case n.Err != nil:
			out = append(out,
				risk{"eviction", fmt.Sprintf("Redis %s: cannot read INFO memory (%v), so its maxmemory-policy cannot be checked: allow INFO for oshirase's Redis user, or set REDIS_ACCEPT_RISK=eviction", n.Node, n.Err)},
				risk{"no-persistence", fmt.Sprintf("Redis %s: cannot read INFO persistence (%v), so its append-only file cannot be checked: allow INFO for oshirase's Redis user, or set REDIS_ACCEPT_RISK=no-persistence", n.Node, n.Err)})
			continue
		case n.Policy == "":
			out = append(out, risk{"eviction", fmt.Sprintf("Redis %s: INFO memory shows no maxmemory_policy, so eviction cannot be ruled out: use Redis 4 or later with maxmemory-policy noeviction, or set REDIS_ACCEPT_RISK=eviction", n.Node)})
		case n.Evicts():
			out = append(out, risk{"eviction", fmt.Sprintf("Redis %s: maxmemory-policy is %s: under memory pressure it deletes keys, accepted campaigns and their recipients with them; run CONFIG SET maxmemory-policy noeviction (and put maxmemory-policy noeviction in redis.conf), or set REDIS_ACCEPT_RISK=eviction", n.Node, n.Policy)})
		}
		if n.Forgets() {
			out = append(out, risk{"no-persistence", fmt.Sprintf("Redis %s: appendonly is no: a restart erases every campaign in flight (RDB snapshots alone lose what came after the last one); run CONFIG SET appendonly yes (and put appendonly yes in redis.conf), or set REDIS_ACCEPT_RISK=no-persistence", n.Node)})
		}
	}
	return out
}

// check reads the masters' settings and splits the risks into those
// REDIS_ACCEPT_RISK accepts and the others.
func (g *redisGuard) check(ctx context.Context) (accepted, refused []risk, err error) {
	nodes, err := store.Durability(ctx, g.rdb)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range risks(nodes) {
		if g.accepted(r) {
			accepted = append(accepted, r)
		} else {
			refused = append(refused, r)
		}
	}
	return accepted, refused, nil
}

func texts(rs []risk) string {
	var b []string
	for _, r := range rs {
		b = append(b, r.text)
	}
	return strings.Join(b, "; ")
}

// startRedisGuard checks Redis at start-up: it fails on a risk not
// accepted, warns about the accepted ones, and writes the start-up marker.
// With settings false (an embedded Redis), only the marker is written.
func startRedisGuard(ctx context.Context, rdb redis.UniversalClient, st *store.Store, accept config.RedisRisks, settings bool, log *slog.Logger) (*redisGuard, error) {
	g := &redisGuard{rdb: rdb, accept: accept, log: log, settings: settings}
	if !settings {
		m, err := st.MarkStart(ctx, newMarkerToken())
		if err != nil {
			return nil, err
		}
		g.marker = m
		return g, nil
	}
	accepted, refused, err := g.check(ctx)
	if err != nil {
		return nil, fmt.Errorf("check Redis settings: %w", err)
	}
	if len(refused) > 0 {
		return nil, errors.New("Redis may lose accepted campaigns, so oshirase will not run on it: " + texts(refused))
	}
	if len(accepted) > 0 {
		log.Warn("REDIS_ACCEPT_RISK="+accept.String()+": running on a Redis that may lose accepted campaigns and recorded deliveries",
			"risks", texts(accepted))
	}
	m, err := st.MarkStart(ctx, newMarkerToken())
	if err != nil {
		return nil, err
	}
	g.marker = m
	return g, nil
}

// readyChecks are /readyz's Redis checks: redis_config (ok, risk_accepted,
// or unsafe: a setting changed under the running process) and redis_state
// (ok, or lost: a start-up marker disappeared, so Redis lost its data).
func (g *redisGuard) readyChecks() []api.Check {
	return []api.Check{
		{Name: "redis_config", Run: func(ctx context.Context) (string, bool) {
			if !g.settings {
				return "embedded", true
			}
			accepted, refused, err := g.check(ctx)
			switch {
			case err != nil:
				return "unknown", true // Redis down: the "redis" check says so
			case len(refused) > 0:
				g.log.Error("readiness: Redis may lose accepted campaigns", "risks", texts(refused))
				return "unsafe", false
			case len(accepted) > 0:
				return "risk_accepted", true
			}
			return "ok", true
		}},
		{Name: "redis_state", Run: func(ctx context.Context) (string, bool) {
			if g.lost.Load() {
				return "lost", false
			}
			lost, err := g.marker.Lost(ctx)
			if err != nil {
				return "unknown", true
			}
			if lost {
				if g.lost.CompareAndSwap(false, true) {
					g.log.Error("Redis lost its data while this process ran (its start-up marker is gone): campaigns in flight may be gone or incomplete; check them, then restart the oshirase processes")
				}
				return "lost", false
			}
			return "ok", true
		}},
	}
}

// newMarkerToken is the value of a start-up marker this process writes.
func newMarkerToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
