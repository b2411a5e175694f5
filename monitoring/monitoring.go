// Package monitoring gives operators the asynq web UI (asynqmon) and the
// Prometheus /metrics endpoint, both behind oshirase's API keys.
package monitoring

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/config"
)

// UI serves asynqmon under root (e.g. "/monitoring"): read-only for operator
// keys, with every action for admin keys. asynqmon has no authentication of
// its own, so UI does it: a browser is asked for HTTP basic auth (any user
// name, the key as password); scripts may send a Bearer key.
//
// The handlers share rdb and are never closed: asynqmon's Close would close
// the service's own Redis client.
func UI(keys *auth.Keys, rdb redis.UniversalClient, root string) http.Handler {
	root = "/" + strings.Trim(root, "/")
	opt := config.ConnOpt{Client: rdb}
	full := asynqmon.New(asynqmon.Options{RootPath: root, RedisConnOpt: opt})
	readOnly := asynqmon.New(asynqmon.Options{RootPath: root, RedisConnOpt: opt, ReadOnly: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := keys.Authenticate(r, "monitoring", auth.Secret(r))
		var te *auth.ThrottledError
		if errors.As(err, &te) {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(te.RetryAfter.Seconds())))))
			http.Error(w, te.Error(), http.StatusTooManyRequests)
			return
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="oshirase", charset="UTF-8"`)
			http.Error(w, "sign in with any user name and an admin or operator API key as password", http.StatusUnauthorized)
			return
		}
		// The browser keeps the basic-auth key for /monitoring/, so a form
		// on another site could make an admin's browser pause queues or
		// delete tasks: changes must come from asynqmon's own page.
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !auth.SameOrigin(r) {
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		// Pages that change what they show must not be cached by a proxy
		// or shown to the next person at the same browser.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Frame-Options", "DENY")
		switch key.Role {
		case auth.RoleAdmin:
			full.ServeHTTP(w, r)
		case auth.RoleOperator:
			readOnly.ServeHTTP(w, r)
		default:
			http.Error(w, "role "+string(key.Role)+" may not use the monitoring UI", http.StatusForbidden)
		}
	})
}

// Inspector returns an asynq inspector over rdb (for the metrics collector).
// Do not Close it: it would close rdb.
func Inspector(rdb redis.UniversalClient) *asynq.Inspector {
	return asynq.NewInspectorFromRedisClient(rdb)
}
