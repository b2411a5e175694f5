package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
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

// TestRedisWaitSettings: REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT come
// from the environment or flags; a timeout past the connection's read
// timeout is refused with the setting's name.
func TestRedisWaitSettings(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		args    []string
		n       int
		timeout time.Duration
		err     string
	}{
		{env: nil, n: 0, timeout: 500 * time.Millisecond},
		{env: map[string]string{"REDIS_WAIT_REPLICAS": "2", "REDIS_WAIT_TIMEOUT": "1s"}, n: 2, timeout: time.Second},
		{args: []string{"--redis-wait-replicas", "1"}, n: 1, timeout: 500 * time.Millisecond},
		{env: map[string]string{"REDIS_WAIT_TIMEOUT": "5s"}, err: "REDIS_WAIT_TIMEOUT"},
		{env: map[string]string{"REDIS_WAIT_REPLICAS": "-1"}, err: "REDIS_WAIT_REPLICAS"},
	} {
		c, _, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), tc.args, func(k string) string { return tc.env[k] })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v %v: %v", tc.env, tc.args, err)
			continue
		}
		if c.RedisWaitReplicas != tc.n || c.RedisWaitTimeout != tc.timeout {
			t.Errorf("%v %v: %d %s", tc.env, tc.args, c.RedisWaitReplicas, c.RedisWaitTimeout)
		}
	}
}

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

// TestIdempotencyAndWebhookSettings: defaults, and bad values named.
func TestIdempotencyAndWebhookSettings(t *testing.T) {
	load := func(env map[string]string) (*Config, error) {
		c, _, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) string { return env[k] })
		return c, err
	}
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.IdempotencyTTL != 24*time.Hour || c.WebhookAllowPrivate || c.WebhookBatchSize != 500 || c.WebhookConcurrency != 4 || c.WebhookRotateOverlap != 24*time.Hour {
		t.Errorf("defaults: %v %v %v %v %v", c.IdempotencyTTL, c.WebhookAllowPrivate, c.WebhookBatchSize, c.WebhookConcurrency, c.WebhookRotateOverlap)
	}
	for _, tt := range []struct{ k, v, err string }{
		{"IDEMPOTENCY_TTL", "30m", "IDEMPOTENCY_TTL: a duration of at least 1h"},
		{"IDEMPOTENCY_TTL", "soon", "IDEMPOTENCY_TTL"},
		{"WEBHOOK_BATCH_SIZE", "0", "WEBHOOK_BATCH_SIZE: a number from 1 to 1000"},
		{"WEBHOOK_BATCH_SIZE", "1001", "WEBHOOK_BATCH_SIZE"},
		{"WEBHOOK_ALLOW_PRIVATE", "maybe", "WEBHOOK_ALLOW_PRIVATE: true or false"},
	} {
		if _, err := load(map[string]string{tt.k: tt.v}); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s=%s: %v, want an error saying %q", tt.k, tt.v, err, tt.err)
		}
	}
}

// TestProviderWebhookSettings: SES_TOPIC_ARNS takes SNS topic ARNs,
// comma-separated (China and GovCloud partitions too), and refuses anything
// else naming the setting and the entry; SENDGRID_SMTPAPI is a boolean.
func TestProviderWebhookSettings(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want []string
		err  string
	}{
		{map[string]string{}, nil, ""},
		{map[string]string{"SES_TOPIC_ARNS": "arn:aws:sns:ap-northeast-1:123456789012:ses-events"}, []string{"arn:aws:sns:ap-northeast-1:123456789012:ses-events"}, ""},
		{map[string]string{"SES_TOPIC_ARNS": " arn:aws:sns:us-east-1:1:a , arn:aws-cn:sns:cn-north-1:2:b ,"}, []string{"arn:aws:sns:us-east-1:1:a", "arn:aws-cn:sns:cn-north-1:2:b"}, ""},
		{map[string]string{"SES_TOPIC_ARNS": "ses-events"}, nil, `SES_TOPIC_ARNS: "ses-events" is not an SNS topic ARN`},
		{map[string]string{"SES_TOPIC_ARNS": "arn:aws:sqs:us-east-1:1:q"}, nil, `SES_TOPIC_ARNS: "arn:aws:sqs:us-east-1:1:q" is not an SNS topic ARN`},
		{map[string]string{"SENDGRID_SMTPAPI": "yes"}, nil, `SENDGRID_SMTPAPI: true or false`},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c, _, err := Load(fs, nil, func(k string) string { return tt.env[k] })
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: error %v, want %q", tt.env, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.env, err)
		}
		if strings.Join(c.SESTopicARNs, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%v: %q, want %q", tt.env, c.SESTopicARNs, tt.want)
		}
	}
}
