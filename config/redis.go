package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// OpenRedis connects to the Redis named by a URL:
//
//	redis://[user:pass@]host:port[/db]        one server (rediss:// for TLS)
//	redis+sentinel://[:pass@]h1:p1,h2:p2/master[/db]   Sentinel-managed primary
//	redis+cluster://[:pass@]h1:p1,h2:p2       Redis Cluster
//
// Every key of one campaign carries the same hash tag, so oshirase's Lua
// scripts work in a cluster too.
func OpenRedis(raw string) (redis.UniversalClient, error) {
	r, err := parseRedisURL(raw)
	if err != nil {
		return nil, err
	}
	switch {
	case r.single != nil:
		return redis.NewClient(r.single), nil
	case r.sentinel != nil:
		return redis.NewFailoverClient(r.sentinel), nil
	}
	return redis.NewClusterClient(r.cluster), nil
}

// redisURL is a parsed REDIS_URL: exactly one of the options is set.
type redisURL struct {
	single   *redis.Options
	sentinel *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

func parseRedisURL(raw string) (*redisURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("REDIS_URL %q: want scheme://…", redact(raw))
	}
	switch scheme {
	case "redis", "rediss", "unix":
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		return &redisURL{single: opt}, nil
	case "redis+sentinel", "redis-sentinel":
		user, pass, hosts, path, err := split(rest)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		parts := strings.Split(strings.Trim(path, "/"), "/")
		if parts[0] == "" {
			return nil, fmt.Errorf("REDIS_URL %q: sentinel URL needs the master name: redis+sentinel://host:port/mymaster", redact(raw))
		}
		db := 0
		if len(parts) > 1 {
			if db, err = strconv.Atoi(parts[1]); err != nil {
				return nil, fmt.Errorf("REDIS_URL %q: database %q is not a number", redact(raw), parts[1])
			}
		}
		if len(parts) > 2 {
			return nil, fmt.Errorf("REDIS_URL %q: want redis+sentinel://hosts/master[/db]", redact(raw))
		}
		return &redisURL{sentinel: &redis.FailoverOptions{
			MasterName: parts[0], SentinelAddrs: hosts, Username: user, Password: pass, DB: db,
		}}, nil
	case "redis+cluster", "redis-cluster":
		user, pass, hosts, path, err := split(rest)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		if p := strings.Trim(path, "/"); p != "" && p != "0" {
			// A cluster has only database 0; saying otherwise is a mistake.
			return nil, fmt.Errorf("REDIS_URL %q: Redis Cluster has only database 0", redact(raw))
		}
		return &redisURL{cluster: &redis.ClusterOptions{Addrs: hosts, Username: user, Password: pass}}, nil
	}
	return nil, fmt.Errorf("REDIS_URL %q: scheme %q is not redis, rediss, redis+sentinel or redis+cluster", redact(raw), scheme)
}

func split(rest string) (user, pass string, hosts []string, path string, err error) {
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		cred := rest[:at]
		rest = rest[at+1:]
		u, p, _ := strings.Cut(cred, ":")
		user, _ = url.PathUnescape(u)
		pass, _ = url.PathUnescape(p)
	}
	hostPart, path, _ := strings.Cut(rest, "/")
	path = "/" + path
	for _, h := range strings.Split(hostPart, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return "", "", nil, "", fmt.Errorf("no host given")
	}
	return user, pass, hosts, path, nil
}

// redact hides a password in a URL for error messages and logs.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		return scheme + "://***@" + rest[at+1:]
	}
	return raw
}

// Redact hides credentials in a URL (Redis or SMTP) for logs.
func Redact(raw string) string { return redact(raw) }

// ConnOpt adapts an open client to asynq.RedisConnOpt, for asynqmon, which
// wants to make its own client.
type ConnOpt struct{ Client redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (o ConnOpt) MakeRedisClient() interface{} { return o.Client }
