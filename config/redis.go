package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
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
// rediss+sentinel:// and rediss+cluster:// speak TLS to every node (and
// Sentinel), like rediss:// to one server. With any of them,
// ?tls_ca_file=ca.pem trusts a private CA instead of the system's, and
// ?tls_cert_file=client.pem&tls_key_file=client.key presents a client
// certificate (Redis asks for one unless tls-auth-clients is off). The
// user and password are the data nodes'. Sentinels that require a
// password of their own (requirepass in sentinel.conf) take it as
// ?sentinel_password=…, with ?sentinel_username=… for an ACL user.
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
		// go-redis reads the other parameters of a single server's URL.
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		q := u.Query()
		files := map[string]string{}
		for _, k := range tlsParams {
			if v := q.Get(k); v != "" {
				files[k] = v
			}
			q.Del(k)
		}
		u.RawQuery = q.Encode()
		opt, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		if len(files) > 0 {
			if opt.TLSConfig == nil {
				return nil, fmt.Errorf("REDIS_URL %q: %s needs rediss://", redact(raw), strings.Join(slices.Sorted(maps.Keys(files)), ", "))
			}
			if err := loadTLS(opt.TLSConfig, files); err != nil {
				return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
			}
		}
		return &redisURL{single: opt}, nil
	case "redis+sentinel", "redis-sentinel", "rediss+sentinel":
		rest, query, _ := strings.Cut(rest, "?")
		params, err := queryParams(query, append([]string{"sentinel_username", "sentinel_password"}, tlsParams...)...)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		tc, err := nodeTLS(scheme, params)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
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
			SentinelUsername: params["sentinel_username"], SentinelPassword: params["sentinel_password"],
			TLSConfig: tc,
		}}, nil
	case "redis+cluster", "redis-cluster", "rediss+cluster":
		rest, query, _ := strings.Cut(rest, "?")
		params, err := queryParams(query, tlsParams...)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		tc, err := nodeTLS(scheme, params)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		user, pass, hosts, path, err := split(rest)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(raw), err)
		}
		if p := strings.Trim(path, "/"); p != "" && p != "0" {
			// A cluster has only database 0; saying otherwise is a mistake.
			return nil, fmt.Errorf("REDIS_URL %q: Redis Cluster has only database 0", redact(raw))
		}
		return &redisURL{cluster: &redis.ClusterOptions{Addrs: hosts, Username: user, Password: pass, TLSConfig: tc}}, nil
	}
	return nil, fmt.Errorf("REDIS_URL %q: scheme %q is not redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster", redact(raw), scheme)
}

// nodeTLS is the TLS configuration of a Sentinel or Cluster URL: nil for
// redis+…, else one config for every node. Its ServerName stays empty, so
// each connection checks the certificate against the address it dials
// (crypto/tls takes the name from the address).
func nodeTLS(scheme string, params map[string]string) (*tls.Config, error) {
	files := map[string]string{}
	for _, k := range tlsParams {
		if v := params[k]; v != "" {
			files[k] = v
		}
	}
	if !strings.HasPrefix(scheme, "rediss+") {
		if len(files) > 0 {
			return nil, fmt.Errorf("%s needs rediss+sentinel:// or rediss+cluster://", strings.Join(slices.Sorted(maps.Keys(files)), ", "))
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if err := loadTLS(tc, files); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsParams are the URL parameters that name TLS files.
var tlsParams = []string{"tls_ca_file", "tls_cert_file", "tls_key_file"}

// loadTLS reads the files named by tlsParams into tc: CA certificates to
// trust, and a client certificate with its key.
func loadTLS(tc *tls.Config, files map[string]string) error {
	if ca := files["tls_ca_file"]; ca != "" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("tls_ca_file %s: no PEM certificate in it", ca)
		}
		tc.RootCAs = pool
	}
	cert, key := files["tls_cert_file"], files["tls_key_file"]
	if (cert == "") != (key == "") {
		return errors.New("tls_cert_file and tls_key_file go together")
	}
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("tls_cert_file, tls_key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return nil
}

// queryParams parses a URL query that may hold only the names given, each
// once.
func queryParams(query string, names ...string) (map[string]string, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	out := map[string]string{}
	for k, vs := range q {
		if !slices.Contains(names, k) {
			return nil, fmt.Errorf("unknown parameter %q (want %s)", k, strings.Join(names, ", "))
		}
		if len(vs) != 1 {
			return nil, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
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

// harmlessParams are the URL parameters (REDIS_URL, SMTP_URL) whose values
// logs may show.
var harmlessParams = []string{"tls", "insecure_skip_verify", "helo", "sentinel_username", "tls_ca_file", "tls_cert_file", "tls_key_file"}

// redact hides the passwords in a URL for error messages and logs: its
// user info, and the value of every query parameter but the few known to be
// harmless (a misspelt sentinel_password must not show either).
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	if hasQuery {
		params := strings.Split(query, "&")
		for i, p := range params {
			if k, _, ok := strings.Cut(p, "="); ok && !slices.Contains(harmlessParams, k) {
				params[i] = k + "=***"
			}
		}
		rest += "?" + strings.Join(params, "&")
	}
	return scheme + "://" + rest
}

// Redact hides credentials in a URL (Redis or SMTP) for logs.
func Redact(raw string) string { return redact(raw) }

// ConnOpt adapts an open client to asynq.RedisConnOpt, for asynqmon, which
// wants to make its own client.
type ConnOpt struct{ Client redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (o ConnOpt) MakeRedisClient() interface{} { return o.Client }
