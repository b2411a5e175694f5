package api

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/auth"

	"github.com/oshirase/oshirase/metrics"
)

// The access log and the HTTP metrics: one line and one count per request,
// named by the route pattern that took it ("/v1/campaigns/{id}"), never by
// its path or query, which may hold an address (/v1/suppressions/{email},
// ?email=), and by the name of the key that made it, never the key.

// reqInfo is filled in while a request is served, for its log line.
type reqInfo struct{ key string }

// statusRecorder remembers the status an answer was given.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines of
// uploads and report downloads, flushes).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Route is how a request shows in logs and metrics: its route pattern
// without the method ("/v1/campaigns/{id}"), or "unmatched".
func Route(r *http.Request) string {
	p := r.Pattern
	if _, rest, ok := strings.Cut(p, " "); ok {
		p = rest
	}
	if p == "" {
		return "unmatched"
	}
	return p
}

// quietRoutes are polled by machines (probes, scrapers, asynqmon's page):
// their successful GETs are logged at debug level.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/monitoring/": true}

// observe wraps a handler with the access log and the HTTP metrics.
func observe(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		// auth.Keys.Authenticate names the key that authenticated r.
		r = r.WithContext(auth.WithNote(r.Context(), func(name string) { info.key = name }))
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			// After the handler, even one that panicked (net/http
			// recovers it; the status is then 500 to the log).
			status := rec.status
			if status == 0 {
				status = http.StatusOK
				if p := recover(); p != nil {
					status = http.StatusInternalServerError
					defer panic(p)
				}
			}
			d := time.Since(start)
			route := Route(r)
			method := r.Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
			default:
				method = "other" // bounded labels, whatever a client sends
			}
			metrics.HTTPRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			metrics.HTTPSeconds.WithLabelValues(method, route).Observe(d.Seconds())
			level := slog.LevelInfo
			if quietRoutes[route] && (method == http.MethodGet || method == http.MethodHead) && status < 400 {
				level = slog.LevelDebug
			}
			log.LogAttrs(r.Context(), level, "request", slog.String("method", method), slog.String("route", route),
				slog.Int("status", status), slog.Float64("duration_ms", float64(d.Microseconds())/1000),
				slog.Int64("bytes", rec.bytes), slog.String("key", info.key))
		}()
		h.ServeHTTP(rec, r)
	})
}
