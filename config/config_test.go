package config

import (
	"flag"
	"strings"
	"testing"
)

// TestSMTPRateBounds: an SMTP_RATE the shared limiter cannot honour stops
// the start with a clear error (0.00001 was accepted, and then every
// message failed at the limiter); 0 and 0.001 to 1,000,000 are accepted.
func TestSMTPRateBounds(t *testing.T) {
	for _, tt := range []struct {
		v, err string
	}{
		{"0", ""},
		{"0.001", ""},
		{"2.5", ""},
		{"1000000", ""},
		{"0.00001", "SMTP_RATE: must be 0 (no limit of its own) or between 0.001 and 1000000 messages per second; the smallest allowed is 0.001 (one message every 1000 s), got 0.00001"},
		{"-1", "smallest allowed is 0.001"},
		{"2e6", "smallest allowed is 0.001"},
		{"fast", `SMTP_RATE: not a number: "fast"`},
	} {
		c, _, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) string {
			if k == "SMTP_RATE" {
				return tt.v
			}
			return ""
		})
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("SMTP_RATE=%s: %v", tt.v, err)
		case tt.err == "" && c.SMTPRate == 0 && tt.v != "0":
			t.Errorf("SMTP_RATE=%s: rate 0", tt.v)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("SMTP_RATE=%s: error %v, want one saying %q", tt.v, err, tt.err)
		}
	}
}
