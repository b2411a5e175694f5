package app

import (
	"math"
	"time"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// Progress is how a sending campaign drains, for operators watching it:
// recipients done (sent, failed, suppressed or cancelled), the recent rate
// and when it will be done at that rate.
type Progress struct {
	Done int64 `json:"done"`
	// RatePerSecond is the rate of the last RateWindowSeconds (recipients
	// done per second, from the watchdog's samples): after an outage or a
	// pause it is the rate now, not the average since the start, which
	// would still carry the outage. Without samples (no worker has swept
	// the campaign yet) it is the average since the start.
	RatePerSecond     float64  `json:"rate_per_second"`
	RateWindowSeconds float64  `json:"rate_window_seconds"`
	AverageRate       float64  `json:"average_rate_per_second"` // since the start
	ETASeconds        *float64 `json:"eta_seconds,omitempty"`
}

// rateWindow is how far back the ETA's rate looks: long enough to smooth a
// chunk's stop-and-go, short enough that minutes after an outage the ETA
// says the truth.
const rateWindow = 2 * time.Minute

// minRateSpan is the least span of samples the recent rate is taken over;
// shorter, the average since the start is used.
const minRateSpan = 20 * time.Second

// ProgressOf is c's progress now, from the watchdog's samples (nil: not
// sending).
func ProgressOf(c *notice.Campaign, now time.Time, samples []store.Sample) *Progress {
	if c.Status != notice.CampaignSending || c.StartedAt == nil {
		return nil
	}
	n := c.Counts
	p := &Progress{Done: n.Done()}
	if d := now.Sub(*c.StartedAt).Seconds(); d > 0 {
		p.AverageRate = math.Round(float64(p.Done)/d*10) / 10
		p.RatePerSecond, p.RateWindowSeconds = p.AverageRate, math.Round(d)
	}
	if rate, span, ok := recentRate(samples, now, p.Done); ok {
		p.RatePerSecond, p.RateWindowSeconds = math.Round(rate*10)/10, math.Round(span.Seconds())
		if p.RatePerSecond == 0 && rate > 0 {
			p.RatePerSecond = rate // slower than 0.05/s: do not round it away
		}
	}
	if p.RatePerSecond > 0 {
		eta := math.Ceil(float64(n.Total-p.Done) / p.RatePerSecond)
		p.ETASeconds = &eta
	}
	return p
}

// recentRate is the rate of recipients done over the last rateWindow: from
// the oldest sample in the window to now, when done is the count now. ok is
// false when the samples span less than minRateSpan.
func recentRate(samples []store.Sample, now time.Time, done int64) (rate float64, span time.Duration, ok bool) {
	from := now.Add(-rateWindow)
	for _, s := range samples {
		if s.At.Before(from) || s.At.After(now) {
			continue
		}
		span = now.Sub(s.At)
		if span < minRateSpan || done < s.Done {
			return 0, 0, false
		}
		return float64(done-s.Done) / span.Seconds(), span, true
	}
	return 0, 0, false
}
