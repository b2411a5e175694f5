package metrics

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ObserveReply counts one reply that ended an SMTP transaction: code 0 is
// no reply at all (a network error, a timeout). The labels are normalised
// so that a server answering nonsense cannot make series without bound:
// a code must be a reply code of RFC 5321's shape (2xx–5xx, second digit
// 0–5), an enhanced code class.subject.detail with subject 0–7 and detail
// 0–99 (RFC 3463 and its registry); anything else counts as "other".
func ObserveReply(code int, enhanced string) {
	class, c, e := ReplyLabels(code, enhanced)
	SMTPReplies.WithLabelValues(class, c, e).Inc()
}

// ReplyLabels returns the class, code and enhanced labels ObserveReply uses.
func ReplyLabels(code int, enhanced string) (class, c, e string) {
	if code == 0 {
		return "none", "none", "none"
	}
	if code < 200 || code > 599 || code/10%10 > 5 {
		return "other", "other", "other"
	}
	class = strconv.Itoa(code/100) + "xx"
	c = strconv.Itoa(code)
	e = normEnhanced(enhanced, code/100)
	return class, c, e
}

// normEnhanced returns enhanced if it is a well-formed status code of the
// reply's class, "none" when empty, else "other".
func normEnhanced(s string, class int) string {
	if s == "" {
		return "none"
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return "other"
	}
	var n [3]int
	for i, p := range parts {
		if p == "" || len(p) > 3 {
			return "other"
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return "other"
		}
		n[i] = v
	}
	if n[0] != class || n[1] > 7 || n[2] > 99 {
		return "other"
	}
	return strconv.Itoa(n[0]) + "." + strconv.Itoa(n[1]) + "." + strconv.Itoa(n[2])
}

// PoolStats is what an SMTP connection pool reports: connections sending
// now (or being set up for a send) and connections open and idle.
type PoolStats struct{ InUse, Idle int }

var poolStats atomic.Pointer[func() PoolStats]

// ObservePool makes the SMTP pool gauges read f (the process's pool).
func ObservePool(f func() PoolStats) { poolStats.Store(&f) }

func readPool() PoolStats {
	if f := poolStats.Load(); f != nil {
		return (*f)()
	}
	return PoolStats{}
}

var (
	// SMTPPoolInUse and SMTPPoolIdle are the process's SMTP connections.
	SMTPPoolInUse = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "oshirase", Name: "smtp_pool_connections_in_use",
		Help: "SMTP connections of this process's pool carrying (or being opened for) a message now; at most SMTP_POOL.",
	}, func() float64 { return float64(readPool().InUse) })
	SMTPPoolIdle = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "oshirase", Name: "smtp_pool_connections_idle",
		Help: "SMTP connections of this process's pool open and waiting for the next message.",
	}, func() float64 { return float64(readPool().Idle) })
	// SMTPDialErrors counts failures to open a connection to the relay:
	// the connection, the greeting, EHLO, STARTTLS or AUTH.
	SMTPDialErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "oshirase", Name: "smtp_dial_errors_total",
		Help: "Failures to open an SMTP connection to the relay (connect, greeting, EHLO, STARTTLS or AUTH).",
	})
)
