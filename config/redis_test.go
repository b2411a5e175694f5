package config

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
)

func TestParseRedisURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		kind string // single, sentinel, cluster
		// what the options must hold
		addrs        []string
		master       string
		user, pass   string
		db           int
		sentinelUser string
		sentinelPass string
		tls          bool
		errSubstring string
	}{
		{url: "redis://127.0.0.1:6379/3", kind: "single", addrs: []string{"127.0.0.1:6379"}, db: 3},
		{url: "rediss://:s3cret@redis.example:6380/0", kind: "single", addrs: []string{"redis.example:6380"}, pass: "s3cret", tls: true},
		{url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster", kind: "sentinel",
			addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"}, master: "mymaster"},
		{url: "redis+sentinel://:p%40ss@s1:26379/mymaster/2", kind: "sentinel", addrs: []string{"s1:26379"}, master: "mymaster", pass: "p@ss", db: 2},
		{url: "redis+sentinel://app:pw@s1:26379, s2:26379/m", kind: "sentinel", addrs: []string{"s1:26379", "s2:26379"}, master: "m", user: "app", pass: "pw"},
		{url: "redis+sentinel://:pw@s1:26379/m?sentinel_password=s%26p&sentinel_username=sen", kind: "sentinel", addrs: []string{"s1:26379"}, master: "m", pass: "pw",
			sentinelUser: "sen", sentinelPass: "s&p"},
		{url: "redis+sentinel://s1:26379/m?sentinel_pasword=topsecret", errSubstring: `unknown parameter "sentinel_pasword" (want sentinel_username, sentinel_password, tls_ca_file, tls_cert_file, tls_key_file)`},
		{url: "redis+sentinel://s1:26379/m?sentinel_password=a&sentinel_password=topsecret", errSubstring: "given 2 times"},
		{url: "redis+cluster://n1:7000?sentinel_password=topsecret", errSubstring: `unknown parameter "sentinel_password" (want tls_ca_file, tls_cert_file, tls_key_file)`},
		{url: "redis+cluster://:topsecret@n1:7000?tls_ca_file=/etc/ssl/certs/ca-certificates.crt", errSubstring: "tls_ca_file needs rediss+sentinel:// or rediss+cluster://"},
		{url: "redis://:topsecret@h:6379/0?tls_ca_file=/etc/ssl/certs/ca-certificates.crt", errSubstring: "tls_ca_file needs rediss://"},
		{url: "rediss+cluster://:topsecret@n1:7000?tls_ca_file=/nonexistent.pem", errSubstring: "no such file"},
		{url: "rediss+sentinel://:topsecret@s1:26379/m?tls_ca_file=/etc/hostname", errSubstring: "no PEM certificate"},
		{url: "rediss+cluster://:topsecret@n1:7000?tls_cert_file=/etc/hostname", errSubstring: "tls_cert_file and tls_key_file go together"},
		{url: "rediss://:topsecret@h:6379?tls_key_file=/etc/hostname&tls_cert_file=/etc/hostname", errSubstring: "tls_cert_file, tls_key_file: tls: failed to find any PEM data"},
		{url: "redis://:topsecret@h:6379?tls_key_file=k&tls_cert_file=c", errSubstring: "tls_cert_file, tls_key_file needs rediss://"},
		{url: "rediss+cluster://n1:7000,n2:7001", kind: "cluster", addrs: []string{"n1:7000", "n2:7001"}, tls: true},
		{url: "rediss+sentinel://s1:26379/m", kind: "sentinel", addrs: []string{"s1:26379"}, master: "m", tls: true},
		{url: "rediss://h:6380/1", kind: "single", addrs: []string{"h:6380"}, db: 1, tls: true},
		{url: "redis+cluster://n1:7000,n2:7001,n3:7002", kind: "cluster", addrs: []string{"n1:7000", "n2:7001", "n3:7002"}},
		{url: "redis+cluster://:pw@n1:7000/", kind: "cluster", addrs: []string{"n1:7000"}, pass: "pw"},
		{url: "redis+sentinel://s1:26379", errSubstring: "master name"},
		{url: "redis+sentinel://s1:26379/m/x", errSubstring: "not a number"},
		{url: "redis+cluster://n1:7000/3", errSubstring: "only database 0"},
		{url: "redis+cluster:///", errSubstring: "no host"},
		{url: "memcached://x:1", errSubstring: "scheme"},
		{url: "127.0.0.1:6379", errSubstring: "scheme://"},
		{url: "redis+sentinel://:topsecret@/m", errSubstring: "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			r, err := parseRedisURL(tt.url)
			if tt.errSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSubstring) {
					t.Fatalf("err = %v, want %q", err, tt.errSubstring)
				}
				if strings.Contains(err.Error(), "topsecret") {
					t.Errorf("error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kind, master, user, pass, sUser, sPass string
			var addrs []string
			var db int
			var tc *tls.Config
			switch {
			case r.single != nil:
				kind, addrs, user, pass, db = "single", []string{r.single.Addr}, r.single.Username, r.single.Password, r.single.DB
				tc = r.single.TLSConfig
			case r.sentinel != nil:
				o := r.sentinel
				kind, addrs, master, user, pass, db = "sentinel", o.SentinelAddrs, o.MasterName, o.Username, o.Password, o.DB
				sUser, sPass, tc = o.SentinelUsername, o.SentinelPassword, o.TLSConfig
			case r.cluster != nil:
				kind, addrs, user, pass, tc = "cluster", r.cluster.Addrs, r.cluster.Username, r.cluster.Password, r.cluster.TLSConfig
			}
			if kind != tt.kind || !reflect.DeepEqual(addrs, tt.addrs) || master != tt.master || user != tt.user || pass != tt.pass || db != tt.db ||
				sUser != tt.sentinelUser || sPass != tt.sentinelPass || (tc != nil) != tt.tls {
				t.Errorf("got %s %v master=%q user=%q pass=%q db=%d sentinel user=%q pass=%q", kind, addrs, master, user, pass, db, sUser, sPass)
			}
		})
	}
	// OpenRedis gives the matching client type.
	c, err := OpenRedis("redis+cluster://n1:7000,n2:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := reflect.TypeOf(c).String(); got != "*redis.ClusterClient" {
		t.Errorf("cluster URL gives %s", got)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"redis+sentinel://:pw@s1:26379/m", "redis+sentinel://***@s1:26379/m"},
		{"redis+sentinel://s1:26379/m?sentinel_username=sen&sentinel_password=pw", "redis+sentinel://s1:26379/m?sentinel_username=sen&sentinel_password=***"},
		{"smtp://user:pw@mail.example:587?tls=required&helo=mx1.example", "smtp://***@mail.example:587?tls=required&helo=mx1.example"},
		{"redis+sentinel://s1:26379/m?sentinel_pasword=pw", "redis+sentinel://s1:26379/m?sentinel_pasword=***"},
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
