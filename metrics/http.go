package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	// HTTPRequests counts requests by method, route (the pattern that took
	// the request, e.g. "GET /v1/campaigns/{id}", never the raw path: a
	// path may hold an address) and status code.
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "http_requests_total",
		Help: "HTTP requests answered, by method, route (the route pattern, e.g. /v1/campaigns/{id}; unmatched for none) and status code.",
	}, []string{"method", "route", "code"})

	// HTTPSeconds is how long requests took, by method and route.
	HTTPSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "oshirase", Name: "http_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of its answer, by method and route pattern.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
	}, []string{"method", "route"})
)
