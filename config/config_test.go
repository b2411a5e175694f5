package config

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// TestRedisAcceptRisk: REDIS_ACCEPT_RISK takes the risks by name, and a
// misspelt one is an error naming the setting and the choices, never a
// silent "nothing accepted" or "everything accepted".
func TestRedisAcceptRisk(t *testing.T) {
	for _, tt := range []struct {
		env, flag string
		want      RedisRisks
		err       string
	}{
		{"", "", RedisRisks{}, ""},
		{"none", "", RedisRisks{}, ""},
		{"eviction", "", RedisRisks{Eviction: true}, ""},
		{"no-persistence, eviction", "", RedisRisks{Eviction: true, NoPersistence: true}, ""},
		{"eviction", "none", RedisRisks{}, ""},
		{"evictions", "", RedisRisks{}, `REDIS_ACCEPT_RISK: unknown risk "evictions": want eviction, no-persistence`},
		{"", "persistence", RedisRisks{}, `--redis-accept-risk: unknown risk "persistence"`},
	} {
		var args []string
		if tt.flag != "" {
			args = []string{"--redis-accept-risk", tt.flag}
		}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c, _, err := Load(fs, args, func(k string) string {
			if k == "REDIS_ACCEPT_RISK" {
				return tt.env
			}
			return ""
		})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q/%q: error %v, want %q", tt.env, tt.flag, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q/%q: %v", tt.env, tt.flag, err)
			continue
		}
		if c.RedisAcceptRisk != tt.want {
			t.Errorf("%q/%q: %+v, want %+v", tt.env, tt.flag, c.RedisAcceptRisk, tt.want)
		}
		if c.SMTPDataTimeout.Minutes() != 10 {
			t.Errorf("SMTP_DATA_TIMEOUT default %s, want 10m", c.SMTPDataTimeout)
		}
	}
}
