package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets from issues 2 and 4.
const (
	TargetRate         = 2000  // msg/s end to end
	TargetCeilingShare = 0.45  // of smtp-source → smtp-sink
	TargetIngestRate   = 50000 // rows/s
	TargetIngestRSS    = 150 << 20
	TargetFanout       = 10 * time.Second // "a campaign of a million starts sending in seconds"
)

// Print writes the report as a table.
func (r *Report) Print(w io.Writer, o Options) {
	fmt.Fprintf(w, "oshirase bench — %s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), time.Now().Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "Redis: %s\nSink:  %s\n", r.Redis, r.Sink)
	fmt.Fprintf(w, "Processes: 1 API + %d worker(s)", o.Workers)
	if len(o.Env) > 0 {
		fmt.Fprintf(w, " with %s", strings.Join(o.Env, " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	ceil := r.CeilingRate()
	if ceil > 0 {
		fmt.Fprintf(tw, "ceiling: smtp-source -d -s 4 -m %d -l 2048\t%d msgs\t%s\t%.0f msg/s\t\n", r.Ceiling, r.Ceiling, r.CeilingTime.Round(time.Millisecond), ceil)
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "delivery\tsent\tsink got\ttime\tmsg/s\tceiling just before\tof ceiling\tCPU s/1000 msgs\tRedis CPU s/1000\tpeak RSS (workers)\tpeak RSS (API)\t\n")
	for _, d := range r.Deliveries {
		label := "recipients"
		if d.Webhooks {
			label = "+ webhooks"
		}
		share, dceil := "-", "-"
		if s := r.share(d); s > 0 {
			share = fmt.Sprintf("%.2f", s)
		}
		if d.Ceiling > 0 {
			dceil = fmt.Sprintf("%.0f", d.Ceiling)
		}
		got := "-"
		if d.Received >= 0 {
			got = fmt.Sprint(d.Received)
		}
		per := func(x time.Duration) string {
			return fmt.Sprintf("%.3f", x.Seconds()/float64(max(d.Sent, 1))*1000)
		}
		fmt.Fprintf(tw, "%d %s\t%d\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.Recipients, label, d.Sent, got,
			d.Elapsed.Round(time.Millisecond), d.Rate(), dceil, share, per(d.CPU), per(d.RedisCPU), mib(d.PeakRSS), mib(d.APIPeakRSS))
	}
	if o.Webhooks {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "status webhooks (median)\tmsg/s without\tmsg/s with\twith/without\tevents/s received\t\n")
		for _, n := range sizes(r.Deliveries) {
			off, on, ev := r.webhookPairs(n)
			fmt.Fprintf(tw, "%d recipients\t%.0f\t%.0f\t%.2f\t%.0f\t\n", n, off, on, on/off, ev)
		}
	}
	if o.Repeat > 1 {
		for _, n := range sizes(r.Deliveries) {
			rate, share := r.median(n)
			fmt.Fprintf(tw, "median of %d runs, %d\t\t\t\t%.0f\t\t%.2f\t\t\t\t\t\n", o.Repeat, n, rate, share)
		}
	}
	if in := r.Ingest; in != nil {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "CSV ingest (HTTP API)\trows\taccepted\ttime\trows/s\tAPI CPU s\tpeak RSS (API)\tRedis growth\t\n")
		fmt.Fprintf(tw, "%d rows\t%d\t%d\t%s\t%.0f\t%.1f\t%s\t%s\t\n", in.Rows, in.Rows, in.Accepted, in.Elapsed.Round(time.Millisecond),
			float64(in.Rows)/in.Elapsed.Seconds(), in.CPU.Seconds(), mib(in.PeakRSS), mib(in.RedisBytes))
	}
	tw.Flush()
	fmt.Fprintln(w)
	if r.RedisPerRecipient > 0 {
		fmt.Fprintf(w, "Redis memory per recipient (uploaded and delivered): %.0f bytes\n", r.RedisPerRecipient)
	}
	if in := r.Ingest; in != nil && in.Accepted > 0 {
		fmt.Fprintf(w, "Redis memory per recipient (uploaded, not sent):    %.0f bytes\n", float64(in.RedisBytes)/float64(in.Accepted))
		fmt.Fprintf(w, "Fan-out of the %d uploaded recipients: first chunk tasks queued %s after start\n", in.Accepted, in.Fanout.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Targets (the median run of each size):")
	for _, n := range sizes(r.Deliveries) {
		rate, share := r.median(n)
		check(w, fmt.Sprintf("%d recipients ≥ %d msg/s", n, TargetRate), rate >= TargetRate)
		if share > 0 {
			check(w, fmt.Sprintf("%d recipients ≥ %.2f × the ceiling measured just before (%.2f)", n, TargetCeilingShare, share), share >= TargetCeilingShare)
		}
	}
	if o.Webhooks {
		for _, n := range sizes(r.Deliveries) {
			off, on, _ := r.webhookPairs(n)
			check(w, fmt.Sprintf("%d recipients with webhooks ≥ %.2f × without (%.2f)", n, TargetWebhookShare, on/off), on >= TargetWebhookShare*off)
		}
	}
	if in := r.Ingest; in != nil {
		check(w, fmt.Sprintf("ingest ≥ %d rows/s", TargetIngestRate), float64(in.Rows)/in.Elapsed.Seconds() >= TargetIngestRate)
		check(w, fmt.Sprintf("ingest peak RSS < %s", mib(TargetIngestRSS)), in.PeakRSS < TargetIngestRSS)
		check(w, fmt.Sprintf("fan-out of %d recipients < %s", in.Accepted, TargetFanout), in.Fanout < TargetFanout)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "Note:", n)
	}
}

func check(w io.Writer, what string, ok bool) {
	mark := "ok  "
	if !ok {
		mark = "MISS"
	}
	fmt.Fprintf(w, "  [%s] %s\n", mark, what)
}

// share is a run's rate over the ceiling measured just before it, or over
// the run's first ceiling when it has none of its own.
func (r *Report) share(d Delivery) float64 {
	if s := d.Share(); s > 0 {
		return s
	}
	if c := r.CeilingRate(); c > 0 {
		return d.Rate() / c
	}
	return 0
}

// median returns the median rate and the median share of the runs of size n.
func (r *Report) median(n int) (rate, share float64) {
	var rates, shares []float64
	for _, d := range r.Deliveries {
		if d.Recipients == n && !d.Webhooks {
			rates = append(rates, d.Rate())
			shares = append(shares, r.share(d))
		}
	}
	return mid(rates), mid(shares)
}

func mid(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// sizes lists the campaign sizes of ds in the order they were run.
func sizes(ds []Delivery) []int {
	var out []int
	for _, d := range ds {
		if !slices.Contains(out, d.Recipients) {
			out = append(out, d.Recipients)
		}
	}
	return out
}
