package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

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
