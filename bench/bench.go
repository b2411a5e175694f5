// Package bench measures oshirase end to end on one machine: it starts a
// private redis-server, Postfix's smtp-sink, the API and worker processes
// (the oshirase binary itself), sends campaigns of given sizes into the
// sink, ingests a large CSV through the HTTP API, and reports msg/s, CPU per
// message, peak memory and Redis memory per recipient next to the machine's
// own ceiling (smtp-source into the same sink).
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/apiclient"
	"github.com/oshirase/oshirase/smtpsink"
)

// Options says what to measure.
type Options struct {
	// Exe is the oshirase binary, started as `oshirase api` and `oshirase worker`.
	Exe string
	// Sizes are the campaign sizes to deliver end to end.
	Sizes []int
	// Ingest is the number of CSV rows to upload through the API (0 = skip).
	Ingest int
	// Workers is the number of `oshirase worker` processes.
	Workers int
	// Env is extra environment for the oshirase processes
	// (WORKER_CONCURRENCY, SMTP_POOL, CHUNK_SIZE, ...).
	Env []string
	// RedisURL is used when redis-server cannot be started here.
	RedisURL string
	// Ceiling is the number of messages smtp-source sends to measure the
	// machine's ceiling (0 = skip).
	Ceiling int
	// Repeat runs each campaign size this many times (at least once), each
	// right after a ceiling measurement of its own; the report gives every
	// run and the median share.
	Repeat int
	// Webhooks runs each campaign twice in a row, without and then with a
	// status-webhook endpoint (a local receiver) subscribed to every
	// event, and reports both rates and the events per second received.
	Webhooks bool
	// Dir holds logs and the Redis working directory ("" = a temporary one).
	Dir string
	// Log receives progress lines.
	Log io.Writer
}

// Delivery is one end-to-end run.
type Delivery struct {
	Recipients int
	Sent       int64
	Elapsed    time.Duration
	CPU        time.Duration // oshirase processes (API + workers)
	RedisCPU   time.Duration
	PeakRSS    int64 // sum of the workers' peaks
	APIPeakRSS int64 // the API process's peak while the campaign was sent
	Received   int64 // messages the sink counted (-1 = unknown)
	// Webhooks: sent with an endpoint taking every event; Events
	// recipient.sent events it received, the last EventsElapsed after the
	// start.
	Webhooks      bool
	Events        int64
	EventsElapsed time.Duration
	// Ceiling is smtp-source's rate measured right before this run (0 =
	// not measured): the VM's speed drifts, so each run is compared with a
	// ceiling of its own moment.
	Ceiling float64
}

// Share is the run's rate as a share of its ceiling (0 when unknown).
func (d Delivery) Share() float64 {
	if d.Ceiling <= 0 {
		return 0
	}
	return d.Rate() / d.Ceiling
}

// Rate is messages per second.
func (d Delivery) Rate() float64 { return float64(d.Sent) / d.Elapsed.Seconds() }

// Ingest is one upload through the API.
type Ingest struct {
	Rows, Accepted int
	Elapsed        time.Duration
	PeakRSS        int64 // the API process
	CPU            time.Duration
	RedisBytes     int64         // used_memory growth
	Fanout         time.Duration // from start until the first chunk tasks are queued
}

// Report is everything measured in one run.
type Report struct {
	Redis, Sink string
	Notes       []string
	Ceiling     int
	CeilingTime time.Duration
	Deliveries  []Delivery
	Ingest      *Ingest
	// RedisPerRecipient is used_memory growth per recipient uploaded and
	// delivered (profile, status byte, delivery record, indexes).
	RedisPerRecipient float64
}

// CeilingRate is the machine's smtp-source → smtp-sink rate.
func (r *Report) CeilingRate() float64 {
	if r.CeilingTime <= 0 {
		return 0
	}
	return float64(r.Ceiling) / r.CeilingTime.Seconds()
}

// env is one benchmark environment: Redis, a sink, the processes.
type env struct {
	opts    Options
	dir     string
	log     io.Writer
	rdb     *redis.Client
	redis   *exec.Cmd
	sink    *exec.Cmd
	sinkOut *counter
	inproc  *smtpsink.Sink
	smtp    string // host:port of the sink
	api     *exec.Cmd
	base    string
	key     string
	workers []*exec.Cmd
	hooks   *receiver // --webhooks
	report  *Report
}

// Run starts everything, measures, stops everything and returns the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	opts.Workers = max(opts.Workers, 1)
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "oshirase-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	e := &env{opts: opts, dir: dir, log: opts.Log, report: &Report{}, key: randomHex(16)}
	defer e.stop()
	if err := e.startRedis(ctx); err != nil {
		return nil, err
	}
	if err := e.startSink(ctx); err != nil {
		return nil, err
	}
	if opts.Ceiling > 0 {
		if err := e.ceiling(ctx, opts.Ceiling); err != nil {
			e.note("ceiling not measured: %v", err)
		}
	}
	if err := e.startAPI(ctx); err != nil {
		return nil, err
	}
	for i := 0; i < opts.Workers; i++ {
		if err := e.startWorker(ctx, i); err != nil {
			return nil, err
		}
	}
	var memBytes, memRcpt int64
	for _, n := range opts.Sizes {
		for i := 0; i < max(opts.Repeat, 1); i++ {
			ceil := 0.0
			if opts.Ceiling > 0 && e.report.CeilingTime > 0 {
				if c, err := e.measureCeiling(ctx, opts.Ceiling); err == nil {
					ceil = c
				}
			}
			// With --webhooks, a run with an endpoint right before or after
			// (alternating, so a machine whose speed drifts favours
			// neither), same processes, same size: like with like.
			hooked := func() error {
				d, _, err := e.deliverHooked(ctx, n)
				if err != nil {
					return fmt.Errorf("deliver %d with webhooks: %w", n, err)
				}
				d.Ceiling = ceil
				e.report.Deliveries = append(e.report.Deliveries, *d)
				return nil
			}
			if opts.Webhooks && i%2 == 1 {
				if err := hooked(); err != nil {
					return e.report, err
				}
			}
			d, mem, err := e.deliver(ctx, n)
			if err != nil {
				return e.report, fmt.Errorf("deliver %d: %w", n, err)
			}
			d.Ceiling = ceil
			e.report.Deliveries = append(e.report.Deliveries, *d)
			memBytes += mem
			memRcpt += int64(n)
			if opts.Webhooks && i%2 == 0 {
				if err := hooked(); err != nil {
					return e.report, err
				}
			}
		}
	}
	if memRcpt > 0 {
		e.report.RedisPerRecipient = float64(memBytes) / float64(memRcpt)
	}
	if opts.Ingest > 0 {
		in, err := e.ingest(ctx, opts.Ingest)
		if err != nil {
			return e.report, fmt.Errorf("ingest %d rows: %w", opts.Ingest, err)
		}
		e.report.Ingest = in
	}
	return e.report, nil
}

func (e *env) note(format string, args ...any) {
	e.report.Notes = append(e.report.Notes, fmt.Sprintf(format, args...))
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, format+"\n", args...)
}

// startRedis starts a private redis-server without persistence (the
// benchmark measures oshirase, not the disk) or falls back to RedisURL.
func (e *env) startRedis(ctx context.Context) error {
	if _, err := exec.LookPath("redis-server"); err == nil {
		port, err := freePort()
		if err != nil {
			return err
		}
		rdir := filepath.Join(e.dir, "redis")
		os.MkdirAll(rdir, 0o755)
		cmd := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", rdir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(rdir, "redis.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start redis-server: %w", err)
		}
		e.redis = cmd
		e.rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
		e.report.Redis = fmt.Sprintf("redis-server %s on 127.0.0.1:%d (private, no persistence)", redisVersion(), port)
		return waitFor(ctx, 5*time.Second, func() error { return e.rdb.Ping(ctx).Err() })
	}
	if e.opts.RedisURL == "" {
		return errors.New("redis-server is not installed and REDIS_URL is not set")
	}
	opt, err := redis.ParseURL(e.opts.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	e.rdb = redis.NewClient(opt)
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	e.report.Redis = "existing Redis at " + opt.Addr + " (REDIS_URL; shared, numbers may be noisier)"
	e.note("redis-server not found: used REDIS_URL; Redis CPU is not measured")
	return nil
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return ""
}

func (e *env) redisURL() string {
	o := e.rdb.Options()
	return fmt.Sprintf("redis://%s/%d", o.Addr, o.DB)
}

// startSink starts Postfix's smtp-sink, or the in-process go-smtp sink when
// Postfix is not installed.
func (e *env) startSink(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		for _, p := range []string{"/usr/sbin/smtp-sink", "/usr/lib/postfix/smtp-sink"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		s, err := smtpsink.Start(smtpsink.Options{})
		if err != nil {
			return fmt.Errorf("in-process smtp sink: %w", err)
		}
		e.inproc, e.smtp = s, s.Addr()
		e.report.Sink = "in-process go-smtp sink " + s.Addr()
		e.note("Postfix smtp-sink not found (apt-get install postfix): used the in-process sink, which costs this process CPU")
		return nil
	}
	args := []string{"-c", addr, "1000"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // smtp-sink refuses to run as root
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	e.sinkOut = &counter{}
	cmd.Stdout, cmd.Stderr = e.sinkOut, e.sinkOut
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start smtp-sink: %w", err)
	}
	e.sink, e.smtp = cmd, addr
	e.report.Sink = "Postfix smtp-sink -c " + addr + " 1000"
	return waitFor(ctx, 5*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// received is how many messages the sink has taken so far, or -1.
func (e *env) received() int64 {
	switch {
	case e.inproc != nil:
		return int64(e.inproc.Count())
	case e.sinkOut != nil:
		return e.sinkOut.messages()
	}
	return -1
}

// ceiling times smtp-source sending n 2 KB messages over 4 sessions, once
// at the start of the run (the report's headline ceiling).
func (e *env) ceiling(ctx context.Context, n int) error {
	start := time.Now()
	if _, err := e.measureCeiling(ctx, n); err != nil {
		return err
	}
	e.report.Ceiling, e.report.CeilingTime = n, time.Since(start)
	return nil
}

// measureCeiling runs smtp-source into the sink and returns its rate.
func (e *env) measureCeiling(ctx context.Context, n int) (float64, error) {
	bin, err := exec.LookPath("smtp-source")
	if err != nil {
		bin = "/usr/sbin/smtp-source"
		if _, err := os.Stat(bin); err != nil {
			return 0, errors.New("Postfix smtp-source not installed")
		}
	}
	before := e.received()
	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, "-d", "-s", "4", "-m", strconv.Itoa(n), "-l", "2048", e.smtp).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("smtp-source: %v: %s", err, out)
	}
	took := time.Since(start)
	if got := e.received() - before; before >= 0 && got != int64(n) {
		// smtp-sink -c counts once a second: give it time before judging.
		waitFor(ctx, 3*time.Second, func() error {
			if e.received()-before < int64(n) {
				return fmt.Errorf("sink counted %d", e.received()-before)
			}
			return nil
		})
		if got := e.received() - before; got != int64(n) {
			e.note("ceiling: the sink counted %d of %d messages", got, n)
		}
	}
	e.logf("ceiling: smtp-source sent %d messages in %s", n, took.Round(time.Millisecond))
	return float64(n) / took.Seconds(), nil
}

// keyPrefix is the KEY_PREFIX the oshirase processes run with.
func (e *env) keyPrefix() string {
	prefix := "osh"
	for _, kv := range e.procEnv() {
		if v, ok := strings.CutPrefix(kv, "KEY_PREFIX="); ok {
			prefix = v
		}
	}
	return prefix
}

// procEnv is the environment of the oshirase processes.
func (e *env) procEnv(extra ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"REDIS_URL=" + e.redisURL(),
		"SMTP_URL=smtp://" + e.smtp + "?tls=none",
		"OSHIRASE_API_KEYS=bench:admin:" + e.key,
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
		"SMTP_RATE=0",
		// One key starting campaign after campaign is the benchmark.
		"STARTS_PER_HOUR=0",
		// Each upload's row limit is the API's: a million rows ≈ 100 MB.
		"MAX_UPLOAD_BYTES=" + strconv.Itoa(4<<30),
		// --webhooks: the receiver is on loopback.
		"WEBHOOK_ALLOW_PRIVATE=true",
	}
	if e.redis != nil {
		// The private Redis keeps nothing on disk: the benchmark measures
		// oshirase, not the disk, and its data is thrown away after.
		env = append(env, "REDIS_ACCEPT_RISK=no-persistence")
	} else if v := os.Getenv("REDIS_ACCEPT_RISK"); v != "" {
		env = append(env, "REDIS_ACCEPT_RISK="+v)
	}
	for _, kv := range os.Environ() {
		// GOGC, GOMAXPROCS, GOMEMLIMIT and the like pass through.
		if strings.HasPrefix(kv, "GO") {
			env = append(env, kv)
		}
	}
	env = append(env, e.opts.Env...)
	return append(env, extra...)
}

func (e *env) startProc(ctx context.Context, name string, args []string, extra ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, e.opts.Exe, args...)
	cmd.Env = e.procEnv(extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { cmd.Wait(); logf.Close() }()
	return cmd, nil
}

func (e *env) startAPI(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := e.startProc(ctx, "api", []string{"api"}, "LISTEN_ADDR="+addr)
	if err != nil {
		return err
	}
	e.api, e.base = cmd, "http://"+addr
	err = waitFor(ctx, 15*time.Second, func() error {
		if cmd.ProcessState != nil {
			return errors.New("exited")
		}
		return (&client{apiclient.Client{Base: e.base}}).healthz(ctx)
	})
	if err != nil {
		return fmt.Errorf("API did not come up (see %s): %w", filepath.Join(e.dir, "api.log"), err)
	}
	return nil
}

func (e *env) startWorker(ctx context.Context, i int) error {
	cmd, err := e.startProc(ctx, fmt.Sprintf("worker-%d", i), []string{"worker"})
	if err != nil {
		return err
	}
	e.workers = append(e.workers, cmd)
	return nil
}

func (e *env) oshirase() procSet {
	ps := procSet{e.api.Process.Pid}
	for _, w := range e.workers {
		ps = append(ps, w.Process.Pid)
	}
	return ps
}

func (e *env) workerSet() procSet {
	var ps procSet
	for _, w := range e.workers {
		ps = append(ps, w.Process.Pid)
	}
	return ps
}

func (e *env) stop() {
	if e.hooks != nil {
		e.hooks.srv.Close()
	}
	for _, c := range append(append([]*exec.Cmd{}, e.workers...), e.api) {
		if c != nil && c.Process != nil {
			c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range append(append([]*exec.Cmd{}, e.workers...), e.api) {
		if c != nil && c.Process != nil {
			waitExit(c, 10*time.Second)
		}
	}
	for _, c := range []*exec.Cmd{e.sink, e.redis} {
		if c != nil && c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	if e.inproc != nil {
		e.inproc.Close()
	}
	if e.rdb != nil {
		e.rdb.Close()
	}
}

// waitExit waits for a process started by startProc (whose Wait runs in its
// own goroutine) and kills it after d.
func waitExit(c *exec.Cmd, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.Process.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Process.Kill()
}

// counter reads smtp-sink -c output: it rewrites "... mesg=N" with \r.
type counter struct {
	buf  []byte
	last int64
}

func (c *counter) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	for {
		i := strings.IndexAny(string(c.buf), "\r\n")
		if i < 0 {
			break
		}
		line := string(c.buf[:i])
		c.buf = c.buf[i+1:]
		if j := strings.LastIndex(line, "mesg="); j >= 0 {
			if n, err := strconv.ParseInt(strings.Fields(line[j+5:] + " ")[0], 10, 64); err == nil {
				setInt(&c.last, n)
			}
		}
	}
	return len(p), nil
}

func (c *counter) messages() int64 { return getInt(&c.last) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitFor(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// usedMemory is Redis' INFO memory used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "used_memory:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("INFO memory: no used_memory")
}
