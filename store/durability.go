package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// NodeDurability is what one Redis master says about how it keeps data:
// whether it may evict keys under memory pressure and whether what it
// acknowledged survives a restart.
type NodeDurability struct {
	Node string // host:port, or "the Sentinel master"
	// Policy is INFO memory's maxmemory_policy ("" if it could not be read).
	Policy string
	// AOF is INFO persistence's aof_enabled: the append-only file is on.
	AOF bool
	// Err is set when INFO could not be read (a managed Redis or an ACL
	// that refuses it): then nothing about this node is known.
	Err error
}

// Evicts reports whether the node may drop keys: any policy but
// noeviction, or one that could not be read.
func (n NodeDurability) Evicts() bool { return n.Err != nil || n.Policy != "noeviction" }

// Forgets reports whether the node may lose what it acknowledged on a
// restart: no append-only file, or unknown. RDB snapshots alone do not count:
// a crash loses everything written since the last one (minutes of accepted
// recipients and recorded outcomes).
func (n NodeDurability) Forgets() bool { return n.Err != nil || !n.AOF }

// Durability reads INFO memory and INFO persistence of every master: the
// one server, Sentinel's current master, or each master of a Cluster. INFO
// rather than CONFIG GET: managed services (ElastiCache, Memorystore, Azure)
// refuse CONFIG but answer INFO. A node that refuses INFO too is reported
// with Err, not as an error of the call.
func Durability(ctx context.Context, rdb redis.UniversalClient) ([]NodeDurability, error) {
	var mu sync.Mutex
	var out []NodeDurability
	one := func(ctx context.Context, c *redis.Client, name string) error {
		n := NodeDurability{Node: name}
		mem, err := c.Info(ctx, "memory").Result()
		var per string
		if err == nil {
			per, err = c.Info(ctx, "persistence").Result()
		}
		if err != nil {
			var re redis.Error
			if !errors.As(err, &re) {
				return fmt.Errorf("INFO of Redis %s: %w", name, err)
			}
			// An answer, but no: an ACL, a renamed or disabled command.
			n.Err = err
		} else {
			n.Policy = infoField(mem, "maxmemory_policy")
			n.AOF = infoField(per, "aof_enabled") == "1"
		}
		mu.Lock()
		out = append(out, n)
		mu.Unlock()
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return one(ctx, m, m.Options().Addr)
		})
		if err != nil {
			return nil, err
		}
	case *redis.Client:
		name := c.Options().Addr
		if name == "FailoverClient" { // go-redis' name for a Sentinel-managed client
			name = "the Sentinel master"
		}
		if err := one(ctx, c, name); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("durability check: unsupported Redis client %T", rdb)
	}
	return out, nil
}

// infoField returns one field of an INFO answer ("name:value" lines).
func infoField(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok && k == name {
			return v
		}
	}
	return ""
}

// Marker is the evidence that Redis still holds what it held when this
// process started: a key on every master, written at start-up and never
// deleted by oshirase (<p>:epoch, or <p>:epoch:{N} per Cluster master). If one disappears, that master lost its data (a
// restart without persistence, a FLUSHALL, eviction) under the running
// process. Several processes share the markers: the first writes them, the
// others read them.
type Marker struct {
	rdb    redis.UniversalClient
	keys   []string
	values []string
}

// MarkStart writes (or finds) the markers, one per master; token is the
// value a new marker gets.
func (s *Store) MarkStart(ctx context.Context, token string) (*Marker, error) {
	m := &Marker{rdb: s.rdb}
	base := s.k.p + ":epoch"
	claim := func(ctx context.Context, c redis.Cmdable, key string) error {
		if err := c.SetNX(ctx, key, token, 0).Err(); err != nil {
			return err
		}
		v, err := c.Get(ctx, key).Result()
		if err != nil {
			return err
		}
		m.keys, m.values = append(m.keys, key), append(m.values, v)
		return nil
	}
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		if err := claim(ctx, s.rdb, base); err != nil {
			return nil, fmt.Errorf("write the start-up marker: %w", err)
		}
		return m, nil
	}
	// In a Cluster, one key on each master: a hash tag {i} whose slot that
	// master serves. The master's own connection answers MOVED for the
	// others, so trying tags in turn finds one (each master serves about
	// 1/N of the slots).
	var mu sync.Mutex
	err := c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		for i := 0; i < 10000; i++ {
			key := base + ":{" + strconv.Itoa(i) + "}"
			err := node.SetNX(ctx, key, token, 0).Err()
			if err != nil && strings.HasPrefix(err.Error(), "MOVED") {
				continue
			}
			if err != nil {
				return err
			}
			v, err := node.Get(ctx, key).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			m.keys, m.values = append(m.keys, key), append(m.values, v)
			mu.Unlock()
			return nil
		}
		return fmt.Errorf("no hash tag found for master %s", node.Options().Addr)
	})
	if err != nil {
		return nil, fmt.Errorf("write the start-up markers: %w", err)
	}
	return m, nil
}

// Lost reports whether a marker is gone or changed: Redis lost state since
// Mark. An error means Redis could not be asked.
func (m *Marker) Lost(ctx context.Context) (bool, error) {
	for i, k := range m.keys {
		v, err := m.rdb.Get(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if v != m.values[i] {
			return true, nil
		}
	}
	return false, nil
}
