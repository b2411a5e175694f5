package bench

import (
	"fmt"
	"io"
	"runtime"
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
	TargetFanout       = 10 * time.Second // "a campaign of a million is fully enqueued in seconds"
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
	fmt.Fprintf(tw, "delivery\tsent\tsink got\ttime\tmsg/s\tof ceiling\tCPU s/1000 msgs\tRedis CPU s/1000\tpeak RSS (workers)\tpeak RSS (API)\t\n")
	for _, d := range r.Deliveries {
		share := "-"
		if ceil > 0 {
			share = fmt.Sprintf("%.2f", d.Rate()/ceil)
		}
		got := "-"
		if d.Received >= 0 {
			got = fmt.Sprint(d.Received)
		}
		per := func(x time.Duration) string {
			return fmt.Sprintf("%.3f", x.Seconds()/float64(max(d.Sent, 1))*1000)
		}
		fmt.Fprintf(tw, "%d recipients\t%d\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", d.Recipients, d.Sent, got,
			d.Elapsed.Round(time.Millisecond), d.Rate(), share, per(d.CPU), per(d.RedisCPU), mib(d.PeakRSS), mib(d.APIPeakRSS))
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
		fmt.Fprintf(w, "Fan-out of the %d uploaded recipients into chunk tasks: %s after start\n", in.Accepted, in.Fanout.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Targets:")
	for _, d := range r.Deliveries {
		check(w, fmt.Sprintf("%d recipients ≥ %d msg/s", d.Recipients, TargetRate), d.Rate() >= TargetRate)
		if ceil > 0 {
			check(w, fmt.Sprintf("%d recipients ≥ %.2f × ceiling (%.0f msg/s)", d.Recipients, TargetCeilingShare, TargetCeilingShare*ceil), d.Rate() >= TargetCeilingShare*ceil)
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
