// Package config reads oshirase's settings, 12-factor style: each one from an
// environment variable, overridable by a command-line flag of the same name
// in lower case with dashes (REDIS_URL → --redis-url).
package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// Config is every setting.
type Config struct {
	RedisURL          string
	KeyPrefix         string
	SMTPURL           string
	SMTPPool          int
	SMTPTimeout       time.Duration
	SMTPRate          float64
	SMTPBurst         int
	ListenAddr        string
	MetricsAddr       string
	WorkerConcurrency int
	APIKeys           string
	TemplatesDir      string
	ChunkSize         int
	ClaimTTL          time.Duration
	RetryBase         time.Duration
	RetryMaxDelay     time.Duration
	RetryMaxAge       time.Duration
	ShutdownTimeout   time.Duration
	MaxUploadBytes    int64
	MessageIDDomain   string
	DKIMDomain        string
	DKIMSelector      string
	DKIMKeyFile       string
	ListUnsubscribe   string
	LogFormat         string
	LogLevel          string
}

// setting describes one variable for flags and for `oshirase help`.
type setting struct {
	env, def, help string
	set            func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func integer(p func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("not a non-negative whole number: %q", v)
		}
		*p(c) = n
		return nil
	}
}

func dur(p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("not a duration like 30s or 2m: %q", v)
		}
		*p(c) = d
		return nil
	}
}

var settings = []setting{
	{"REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for queue and state: redis://[:pw@]host:port/db, rediss://…, redis+sentinel://[:pw@]h1:p1,h2:p2/master[/db][?sentinel_password=…], redis+cluster://h1:p1,h2:p2; rediss+sentinel://, rediss+cluster:// for TLS, with ?tls_ca_file=ca.pem for a private CA and &tls_cert_file=…&tls_key_file=… for a client certificate", str(func(c *Config) *string { return &c.RedisURL })},
	{"KEY_PREFIX", "osh", "prefix of oshirase's own Redis keys", str(func(c *Config) *string { return &c.KeyPrefix })},
	{"SMTP_URL", "smtp://127.0.0.1:1025", "SMTP relay: smtp://[user:pass@]host:port (STARTTLS when offered), ?tls=none, ?tls=required, smtps://host:port (implicit TLS)", str(func(c *Config) *string { return &c.SMTPURL })},
	{"SMTP_POOL", "0", "persistent SMTP connections per process (0 = WORKER_CONCURRENCY, at most 32)", integer(func(c *Config) *int { return &c.SMTPPool })},
	{"SMTP_TIMEOUT", "30s", "dial and per-command SMTP timeout", dur(func(c *Config) *time.Duration { return &c.SMTPTimeout })},
	{"SMTP_RATE", "0", "messages per second across all workers (shared through Redis); 0 = unlimited, else 0.001 (one every 1,000 s) to 1000000", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		if err := notice.CheckRate(f); err != nil {
			return err
		}
		c.SMTPRate = f
		return nil
	}},
	{"SMTP_BURST", "0", "messages allowed at once above SMTP_RATE (0 = rate/10, at least 1)", integer(func(c *Config) *int { return &c.SMTPBurst })},
	{"LISTEN_ADDR", "127.0.0.1:8080", "HTTP API address", str(func(c *Config) *string { return &c.ListenAddr })},
	{"METRICS_ADDR", "", "oshirase worker only: address for its own /metrics (operator or admin key), /healthz and /readyz; empty = none (serve and api have them on LISTEN_ADDR)", str(func(c *Config) *string { return &c.MetricsAddr })},
	{"WORKER_CONCURRENCY", "64", "tasks a worker process runs at once", integer(func(c *Config) *int { return &c.WorkerConcurrency })},
	{"OSHIRASE_API_KEYS", "", "API keys, comma-separated name:role:key (roles admin, support, operator; a key of 64 hex digits, or sha256:<64 hex>, is the SHA-256 of the real key)", str(func(c *Config) *string { return &c.APIKeys })},
	{"TEMPLATES_DIR", "", "folder whose templates replace or add to the embedded ones", str(func(c *Config) *string { return &c.TemplatesDir })},
	{"CHUNK_SIZE", "100", "recipients per chunk task", integer(func(c *Config) *int { return &c.ChunkSize })},
	{"CLAIM_TTL", "2m", "how long a worker's claim on a recipient or chunk lives without progress before another worker takes over", dur(func(c *Config) *time.Duration { return &c.ClaimTTL })},
	{"RETRY_BASE", "30s", "first retry delay after a transient SMTP failure (doubles each time)", dur(func(c *Config) *time.Duration { return &c.RetryBase })},
	{"RETRY_MAX_DELAY", "1h", "longest delay between retries", dur(func(c *Config) *time.Duration { return &c.RetryMaxDelay })},
	{"RETRY_MAX_AGE", "72h", "give up on a recipient this long after its first attempt", dur(func(c *Config) *time.Duration { return &c.RetryMaxAge })},
	{"SHUTDOWN_TIMEOUT", "20s", "on SIGTERM/SIGINT, how long in-flight messages may take to finish", dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"MAX_UPLOAD_BYTES", "2147483648", "largest recipients upload in bytes, also unpacked for gzip (413 past it)", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("not a positive number of bytes: %q", v)
		}
		c.MaxUploadBytes = n
		return nil
	}},
	{"MESSAGE_ID_DOMAIN", "", "right-hand side of Message-IDs (default: the campaign's From domain)", str(func(c *Config) *string { return &c.MessageIDDomain })},
	{"DKIM_DOMAIN", "", "DKIM signing domain (d=); signing is on when DKIM_KEY_FILE is set", str(func(c *Config) *string { return &c.DKIMDomain })},
	{"DKIM_SELECTOR", "", "DKIM selector (s=)", str(func(c *Config) *string { return &c.DKIMSelector })},
	{"DKIM_KEY_FILE", "", "PEM file with the DKIM private key (RSA or Ed25519)", str(func(c *Config) *string { return &c.DKIMKeyFile })},
	{"LIST_UNSUBSCRIBE", "", "List-Unsubscribe header value; empty = none (breach notices are not marketing)", str(func(c *Config) *string { return &c.ListUnsubscribe })},
	{"LOG_FORMAT", "", "json or text (default: json for serve/api/worker, text for demo and bench)", str(func(c *Config) *string { return &c.LogFormat })},
	{"LOG_LEVEL", "info", "debug, info, warn or error", str(func(c *Config) *string { return &c.LogLevel })},
}

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

// Load fills a Config from defaults, then the environment, then flags
// parsed from args. It returns the arguments left after the flags.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, []string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := &Config{}
	for _, s := range settings {
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		if err := s.set(c, v); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", s.env, err)
		}
	}
	for _, s := range settings {
		s := s
		fs.Func(flagName(s.env), s.help+" (env "+s.env+")", func(v string) error {
			if err := s.set(c, v); err != nil {
				return fmt.Errorf("--%s: %w", flagName(s.env), err)
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if c.SMTPPool == 0 {
		// Relays limit connections per client (Postfix: 50 by default);
		// more handlers than connections still helps, since a handler
		// spends much of its time rendering and in Redis.
		c.SMTPPool = min(max(c.WorkerConcurrency, 1), 32)
	}
	if c.WorkerConcurrency == 0 {
		c.WorkerConcurrency = 1
	}
	return c, fs.Args(), nil
}

// Usage writes every setting with its default, for `oshirase help`.
func Usage(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENVIRONMENT\tFLAG\tDEFAULT\tMEANING")
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(tw, "%s\t--%s\t%s\t%s\n", s.env, flagName(s.env), def, s.help)
	}
	tw.Flush()
}
