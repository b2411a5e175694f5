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
	RedisWaitReplicas int
	RedisWaitTimeout  time.Duration
	KeyPrefix         string
	SMTPURL           string
	SMTPPool          int
	SMTPTimeout       time.Duration
	SMTPDataTimeout   time.Duration
	SMTPRate          float64
	SMTPBurst         int
	ListenAddr        string
	MetricsAddr       string
	WorkerConcurrency int
	APIKeys           string
	// Per-key quotas and the limit on wrong keys per source (0 = none).
	ResendsPerHour         int
	NotificationsPerMinute int
	StartsPerHour          int
	AuthFailuresPerMinute  int
	TemplatesDir           string
	ChunkSize              int
	ClaimTTL               time.Duration
	RetryBase              time.Duration
	RetryMaxDelay          time.Duration
	RetryMaxAge            time.Duration
	ShutdownTimeout        time.Duration
	MaxUploadBytes         int64
	HTTPReadTimeout        time.Duration
	HTTPWriteTimeout       time.Duration
	HTTPIdleTimeout        time.Duration
	HTTPMaxConns           int
	IdempotencyTTL         time.Duration
	WebhookAllowPrivate    bool
	WebhookBatchSize       int
	WebhookConcurrency     int
	WebhookRotateOverlap   time.Duration
	MessageIDDomain        string
	DKIMDomain             string
	DKIMSelector           string
	DKIMKeyFile            string
	DKIMKeys               string
	ListUnsubscribe        string
	BounceDomain           string
	BounceSecret           string
	InboundURL             string
	InboundMaxBytes        int
	BounceWindow           time.Duration
	// SESTopicARNs are the SNS topics whose SES events /v1/inbound/ses
	// takes (SES_TOPIC_ARNS); empty: the endpoint is off.
	SESTopicARNs []string
	// SendGridPublicKey verifies SendGrid's signed event webhook
	// (SENDGRID_WEBHOOK_PUBLIC_KEY); empty: /v1/inbound/sendgrid is off.
	SendGridPublicKey string
	// SendGridSMTPAPI puts each notice's bounce token in an X-SMTPAPI
	// header's unique_args, so SendGrid's events name it (SENDGRID_SMTPAPI).
	SendGridSMTPAPI bool
	// Sign-in to the console through an OpenID provider (all OIDC_*;
	// off while OIDCIssuer is empty).
	OIDCIssuer, OIDCClientID, OIDCClientSecret, OIDCRedirectURL string
	OIDCGroupsClaim, OIDCRoleMap                                string
	LogFormat                                                   string
	LogLevel                                                    string
	// RedisAcceptRisk says which unsafe Redis settings the operator runs
	// knowingly (REDIS_ACCEPT_RISK); the others stop the service at start.
	RedisAcceptRisk RedisRisks
}

// RedisRisks are the ways a Redis can lose acknowledged state that
// REDIS_ACCEPT_RISK may accept.
type RedisRisks struct {
	Eviction      bool // maxmemory-policy is not noeviction (or cannot be read)
	NoPersistence bool // no append-only file (or it cannot be read)
}

// String is the REDIS_ACCEPT_RISK value of r.
func (r RedisRisks) String() string {
	var out []string
	if r.Eviction {
		out = append(out, "eviction")
	}
	if r.NoPersistence {
		out = append(out, "no-persistence")
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

func parseRisks(v string) (RedisRisks, error) {
	var r RedisRisks
	for _, f := range strings.Split(v, ",") {
		switch strings.TrimSpace(f) {
		case "", "none":
		case "eviction":
			r.Eviction = true
		case "no-persistence":
			r.NoPersistence = true
		default:
			return RedisRisks{}, fmt.Errorf("unknown risk %q: want eviction, no-persistence (comma-separated) or none", f)
		}
	}
	return r, nil
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
	{"REDIS_ACCEPT_RISK", "none", "run on a Redis that may lose accepted campaigns, knowingly: eviction (maxmemory-policy is not noeviction), no-persistence (appendonly is not yes), comma-separated; without it such a Redis stops the service at start", func(c *Config, v string) error {
		r, err := parseRisks(v)
		if err != nil {
			return err
		}
		c.RedisAcceptRisk = r
		return nil
	}},
	{"REDIS_WAIT_REPLICAS", "0", "replicas a write that decides a send (the claim before MAIL, the outcome after DATA) must reach before the worker goes on (Redis WAIT); 0 = none. Not reached in REDIS_WAIT_TIMEOUT: the step is written again; a claim still not replicated after a minute is handed back unused, an outcome is kept, logged and counted", integer(func(c *Config) *int { return &c.RedisWaitReplicas })},
	{"REDIS_WAIT_TIMEOUT", "500ms", "longest a deciding write waits for REDIS_WAIT_REPLICAS replicas (1ms to 2s: below the connection's 3 s read timeout)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Millisecond || d > 2*time.Second {
			return fmt.Errorf("not a duration from 1ms to 2s: %q", v)
		}
		c.RedisWaitTimeout = d
		return nil
	}},
	{"KEY_PREFIX", "osh", "prefix of oshirase's own Redis keys", str(func(c *Config) *string { return &c.KeyPrefix })},
	{"SMTP_URL", "smtp://127.0.0.1:1025", "SMTP relay: smtp://[user:pass@]host:port (STARTTLS when offered), ?tls=none, ?tls=required, smtps://host:port (implicit TLS)", str(func(c *Config) *string { return &c.SMTPURL })},
	{"SMTP_POOL", "0", "persistent SMTP connections per process (0 = WORKER_CONCURRENCY, at most 32)", integer(func(c *Config) *int { return &c.SMTPPool })},
	{"SMTP_TIMEOUT", "30s", "dial and per-command SMTP timeout", dur(func(c *Config) *time.Duration { return &c.SMTPTimeout })},
	{"SMTP_DATA_TIMEOUT", "10m", "how long to wait for the server's reply to the end of a message (RFC 5321 §4.5.3.2.6: 10 minutes); past SMTP_TIMEOUT the rest of the chunk goes on in another slot meanwhile", dur(func(c *Config) *time.Duration { return &c.SMTPDataTimeout })},
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
	{"RESENDS_PER_HOUR", "30", "resends one API key (a support agent) may make per hour, across all API processes; past it 429 with Retry-After (0 = no limit)", integer(func(c *Config) *int { return &c.ResendsPerHour })},
	{"NOTIFICATIONS_PER_MINUTE", "10", "single notices (POST /v1/notifications) and test sends one API key may make per minute; past it 429 (0 = no limit)", integer(func(c *Config) *int { return &c.NotificationsPerMinute })},
	{"STARTS_PER_HOUR", "10", "campaigns one API key may start or schedule per hour; past it 429 (0 = no limit)", integer(func(c *Config) *int { return &c.StartsPerHour })},
	{"AUTH_FAILURES_PER_MINUTE", "10", "wrong API keys one source address may present per minute (as many at once) before its attempts get 429 for 60/N seconds each; API, support console sign-in and /monitoring (0 = no limit)", integer(func(c *Config) *int { return &c.AuthFailuresPerMinute })},
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
	{"HTTP_READ_TIMEOUT", "30s", "longest an HTTP request (headers and body) may take to arrive; an upload may take longer while bytes keep coming, and is cut when none arrive for this long", dur(func(c *Config) *time.Duration { return &c.HTTPReadTimeout })},
	{"HTTP_WRITE_TIMEOUT", "2m", "longest an HTTP answer may take to go out; a report download may take longer while the client keeps reading, and is cut when a write waits this long", dur(func(c *Config) *time.Duration { return &c.HTTPWriteTimeout })},
	{"HTTP_IDLE_TIMEOUT", "60s", "an idle keep-alive HTTP connection is closed after this long (0 = HTTP_READ_TIMEOUT)", dur(func(c *Config) *time.Duration { return &c.HTTPIdleTimeout })},
	{"HTTP_MAX_CONNECTIONS", "1000", "open HTTP connections at most, per listener (LISTEN_ADDR, METRICS_ADDR); more wait to be accepted until one closes; 0 = no limit", integer(func(c *Config) *int { return &c.HTTPMaxConns })},
	{"IDEMPOTENCY_TTL", "24h", "how long the first answer to a POST with an Idempotency-Key is kept and replayed to retries with the same key (at least 1h)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour {
			return fmt.Errorf("a duration of at least 1h, like 24h: %q", v)
		}
		c.IdempotencyTTL = d
		return nil
	}},
	{"WEBHOOK_ALLOW_PRIVATE", "false", "let status webhooks reach loopback, private and link-local addresses (off: such endpoints are refused, a guard against SSRF)", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("true or false: %q", v)
		}
		c.WebhookAllowPrivate = b
		return nil
	}},
	{"WEBHOOK_BATCH_SIZE", "500", "status webhook events per request at most (1 to 1000; 500, about 150 KB of JSON, keeps the cost of webhooks under 10 % of sending, see BENCHMARKS.md)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return fmt.Errorf("a number from 1 to 1000: %q", v)
		}
		c.WebhookBatchSize = n
		return nil
	}},
	{"WEBHOOK_CONCURRENCY", "4", "status webhook requests a worker process makes at once (its own asynq server on the webhooks queue)", integer(func(c *Config) *int { return &c.WebhookConcurrency })},
	{"WEBHOOK_ROTATE_OVERLAP", "24h", "after a webhook secret is rotated, how long the old secret still signs beside the new one", dur(func(c *Config) *time.Duration { return &c.WebhookRotateOverlap })},
	{"MESSAGE_ID_DOMAIN", "", "right-hand side of Message-IDs (default: the campaign's From domain)", str(func(c *Config) *string { return &c.MessageIDDomain })},
	{"DKIM_DOMAIN", "", "DKIM signing domain (d=); signing is on when DKIM_KEY_FILE is set", str(func(c *Config) *string { return &c.DKIMDomain })},
	{"DKIM_SELECTOR", "", "DKIM selector (s=)", str(func(c *Config) *string { return &c.DKIMSelector })},
	{"DKIM_KEY_FILE", "", "PEM file with the DKIM private key (RSA or Ed25519)", str(func(c *Config) *string { return &c.DKIMKeyFile })},
	{"DKIM_KEYS", "", "more DKIM keys, one per From domain: domain:selector:file,… A notice is signed with the key of its From domain (or a parent of it); with any key set, a campaign whose From domain has none is refused (DMARC would fail)", str(func(c *Config) *string { return &c.DKIMKeys })},
	{"LIST_UNSUBSCRIBE", "", "List-Unsubscribe header value; empty = none (breach notices are not marketing)", str(func(c *Config) *string { return &c.ListUnsubscribe })},
	{"BOUNCE_DOMAIN", "", "domain of per-recipient return paths: each notice's envelope sender becomes b-<token>@BOUNCE_DOMAIN (the token names campaign, recipient and delivery, signed with BOUNCE_SECRET) and its bounces come back to `oshirase inbound`; route the domain's mail there (MX, or a Postfix transport_maps line); empty = the From address, as before", str(func(c *Config) *string { return &c.BounceDomain })},
	{"BOUNCE_SECRET", "", "HMAC key of bounce tokens (at least 16 characters; required with BOUNCE_DOMAIN): a bounce whose token does not match marks nobody", str(func(c *Config) *string { return &c.BounceSecret })},
	{"INBOUND_URL", "", "where the bounce receiver listens: lmtp://host:port or smtp://host:port; `oshirase inbound` needs it, `oshirase serve` runs the receiver too when it is set. Takes mail only for BOUNCE_DOMAIN (anything else 550: it never relays)", str(func(c *Config) *string { return &c.InboundURL })},
	{"INBOUND_MAX_BYTES", "1048576", "largest message the bounce receiver takes (552 past it); a DSN with RET=HDRS is a few KB", integer(func(c *Config) *int { return &c.InboundMaxBytes })},
	{"BOUNCE_WINDOW", "72h", "how long after a campaign's last send a bounce may still come: until it has passed, its sent recipients count as unknown in the campaign's reach summary, after it as reached (no bounce)", dur(func(c *Config) *time.Duration { return &c.BounceWindow })},
	{"SES_TOPIC_ARNS", "", "Amazon SNS topics (ARNs, comma-separated) whose SES events POST /v1/inbound/ses takes: bounces, complaints, deliveries and delays, tied to notices by the bounce token (needs BOUNCE_DOMAIN and BOUNCE_SECRET); messages are verified by their SNS signature; empty = the endpoint is off (404)", func(c *Config, v string) error {
		c.SESTopicARNs = nil
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			if f := strings.Split(a, ":"); len(f) != 6 || f[0] != "arn" || !strings.HasPrefix(f[1], "aws") || f[2] != "sns" || f[5] == "" {
				return fmt.Errorf("%q is not an SNS topic ARN like arn:aws:sns:ap-northeast-1:123456789012:ses-events", a)
			}
			c.SESTopicARNs = append(c.SESTopicARNs, a)
		}
		return nil
	}},
	{"SENDGRID_WEBHOOK_PUBLIC_KEY", "", "verification key of SendGrid's signed event webhook, as SendGrid shows it (base64; ECDSA P-256): POST /v1/inbound/sendgrid takes bounce, dropped, spamreport, deferred and delivered events signed with it (needs BOUNCE_DOMAIN, BOUNCE_SECRET and SENDGRID_SMTPAPI on the workers); empty = the endpoint is off (404)", str(func(c *Config) *string { return &c.SendGridPublicKey })},
	{"SENDGRID_SMTPAPI", "false", "the relay is SendGrid: each notice carries X-SMTPAPI: {\"unique_args\":{\"oshirase_token\":\"<bounce token>\"}} so SendGrid's events name their notice (needs BOUNCE_DOMAIN and BOUNCE_SECRET; SendGrid removes the header before delivery)", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("true or false: %q", v)
		}
		c.SendGridSMTPAPI = b
		return nil
	}},
	{"OIDC_ISSUER", "", "OpenID provider of the company (issuer URL, e.g. https://login.example.jp/realms/staff): the support console offers sign-in through it; empty = keys and accounts only", str(func(c *Config) *string { return &c.OIDCIssuer })},
	{"OIDC_CLIENT_ID", "", "oshirase's client id at the OpenID provider", str(func(c *Config) *string { return &c.OIDCClientID })},
	{"OIDC_CLIENT_SECRET", "", "oshirase's client secret at the OpenID provider (empty for a public client: PKCE is always used)", str(func(c *Config) *string { return &c.OIDCClientSecret })},
	{"OIDC_REDIRECT_URL", "", "the console's callback as the provider knows it: https://<host>/support/oidc/callback", str(func(c *Config) *string { return &c.OIDCRedirectURL })},
	{"OIDC_GROUPS_CLAIM", "groups", "claim of the ID token (or userinfo) that lists the person's groups", str(func(c *Config) *string { return &c.OIDCGroupsClaim })},
	{"OIDC_ROLE_MAP", "", "groups to roles, group=role,… (e.g. breach-admins=admin,callcentre=support); a person with several gets the most powerful, one with none is refused", str(func(c *Config) *string { return &c.OIDCRoleMap })},
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

// Markdown writes every setting as a Markdown table, for
// `oshirase help --markdown` and docs/configuration.md (kept equal to it by
// TestConfigurationDoc; `go generate ./config` rewrites it).
func Markdown(w io.Writer) {
	fmt.Fprintln(w, "| variable | flag | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, s := range settings {
		def := "(none)"
		if s.def != "" {
			def = "`" + s.def + "`"
		}
		help := strings.ReplaceAll(s.help, "|", `\|`)
		fmt.Fprintf(w, "| `%s` | `--%s` | %s | %s |\n", s.env, flagName(s.env), def, help)
	}
}
