package faults_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/store"
)

const keyPrefix = "faults"

var (
	buildOnce sync.Once
	binDir    string
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here times real processes, outages and retries: none
		// is short. `go test -short ./...` is the quick loop; the fault
		// tests run in scripts/test.sh.
		fmt.Println("faults: end-to-end fault tests skipped under -short")
		os.Exit(0)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// oshiraseBinary builds cmd/oshirase once per test run, for the tests that
// need worker processes of their own.
func oshiraseBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "oshirase-faults-")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(binDir, "oshirase")
		cmd := exec.Command("go", "build", "-o", binary, "../cmd/oshirase")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/oshirase: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// env is a process's configuration, as environment variables.
type env map[string]string

func (e env) with(more env) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// harness is one test's world: a Redis, an SMTP sink, an in-process API,
// and the settings the worker processes it starts (startWorker) get.
type harness struct {
	t     *testing.T
	rdb   redis.UniversalClient
	store *store.Store
	sink  *smtpsink.Sink
	env   env
	api   *teststack.Stack
	redis *testenv.RedisServer // a private Redis, when the test asked for one
}

type setup struct {
	Sink         smtpsink.Options
	Env          env  // on top of the defaults below
	PrivateRedis bool // a redis-server of the test's own, with an append-only file
	NoAPI        bool
}

func newHarness(t *testing.T, s setup) *harness {
	t.Helper()
	h := &harness{t: t}
	var url string
	// The shared test Redis keeps nothing on disk: its risk is accepted
	// (testenv.AcceptRisk). A private one is configured as the README
	// says, so the start-up check runs for real and passes.
	accept := testenv.AcceptRisk
	if s.PrivateRedis {
		h.redis = testenv.StartRedis(t, "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")
		url = "redis://" + h.redis.Addr() + "/0"
		accept = "none"
		rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr(), MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		h.rdb = rdb
	} else {
		h.rdb, url = testenv.Redis(t, testenv.DBFaults)
	}
	h.store = store.New(h.rdb, keyPrefix)
	sink, err := smtpsink.Start(s.Sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	h.sink = sink
	h.env = env{
		"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": keyPrefix,
		"WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "50", "SMTP_TIMEOUT": "5s",
		"CLAIM_TTL": "2s", "RETRY_BASE": "200ms", "RETRY_MAX_DELAY": "1s",
		"SHUTDOWN_TIMEOUT": "5s", "LOG_LEVEL": "warn", "OSHIRASE_API_KEYS": testenv.APIKeys,
		"REDIS_ACCEPT_RISK": accept,
	}.with(s.Env)
	if !s.NoAPI {
		cfg := testenv.Config(t, h.env)
		h.api = teststack.StartStack(t, cfg, service.Options{API: true})
	}
	return h
}

// createCampaign creates a campaign with n recipients u00001@example.jp …
// through the API and returns its id and the addresses in id order.
func (h *harness) createCampaign(n int, extra map[string]any) (string, []string) {
	h.t.Helper()
	var c notice.Campaign
	code, body := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(extra), &c)
	if code != 201 {
		h.t.Fatalf("create campaign: %d %s", code, body)
	}
	return c.ID, h.upload(c.ID, n)
}

func (h *harness) upload(id string, n int) []string {
	h.t.Helper()
	var b bytes.Buffer
	b.WriteString("email,name,locale,card_last4\n")
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = fmt.Sprintf("u%05d@example.jp", i+1)
		loc := "ja"
		if i%2 == 1 {
			loc = "en"
		}
		fmt.Fprintf(&b, "%s,Name %d,%s,%04d\n", addrs[i], i+1, loc, i%10000)
	}
	var up struct {
		Accepted int `json:"accepted"`
	}
	code, body := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+id+"/recipients", "text/csv", b.Bytes(), &up)
	if code != 200 || up.Accepted != n {
		h.t.Fatalf("upload: %d %s", code, body)
	}
	return addrs
}

// action calls POST /v1/campaigns/{id}/{action} and checks the answer.
func (h *harness) action(id, action string) *notice.Campaign {
	h.t.Helper()
	want := 200
	if action == "start" {
		want = 202
	}
	var c notice.Campaign
	code, body := teststack.Do(h.t, h.api.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+id+"/"+action, "", nil, &c)
	if code != want {
		h.t.Fatalf("%s: %d %s", action, code, body)
	}
	return &c
}

// campaign reads the campaign from the store; a failed read (Redis being
// restarted) returns nil.
func (h *harness) campaign(id string) *notice.Campaign {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := h.store.Campaign(ctx, id)
	if err != nil {
		return nil
	}
	return c
}

// wait polls the campaign until cond holds.
func (h *harness) wait(id string, timeout time.Duration, cond func(*notice.Campaign) bool) *notice.Campaign {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *notice.Campaign
	for {
		if c := h.campaign(id); c != nil {
			last = c
			if cond(c) {
				return c
			}
		}
		if time.Now().After(deadline) {
			if last != nil {
				h.t.Fatalf("campaign %s: condition not met after %s: status %s counts %+v", id, timeout, last.Status, last.Counts)
			}
			h.t.Fatalf("campaign %s: condition not met after %s", id, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func done(c *notice.Campaign) bool { return c.Status == notice.CampaignDone }

// waitCount waits until the sink has accepted at least n messages.
func (h *harness) waitCount(n int64, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for h.sink.Count() < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("sink received %d messages after %s, want %d", h.sink.Count(), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recipients reads every recipient of a campaign from the store.
func (h *harness) recipients(id string) []notice.Recipient {
	h.t.Helper()
	var out []notice.Recipient
	cursor := int64(1)
	for {
		p, err := h.store.Recipients(context.Background(), id, "", cursor, 1000)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, p.Recipients...)
		if p.Next == 0 {
			return out
		}
		cursor = p.Next
	}
}

// duplicates checks that every address got at least one message and
// returns how many got more than one, and how many extra copies there were.
func (h *harness) duplicates(addrs []string) (twice, extra int) {
	h.t.Helper()
	per := h.sink.PerRecipient()
	for _, a := range addrs {
		switch n := per[strings.ToLower(a)]; {
		case n == 0:
			h.t.Errorf("%s received nothing", a)
		case n > 1:
			twice++
			extra += n - 1
		}
	}
	return twice, extra
}

// proc is an `oshirase worker` process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startWorker runs `oshirase worker` with the harness's settings and more.
func (h *harness) startWorker(more env) *proc {
	h.t.Helper()
	bin := oshiraseBinary(h.t)
	e := h.env.with(more)
	cmd := exec.Command(bin, "worker")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); e[k] == "" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range e {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	f, err := os.CreateTemp(h.t.TempDir(), "worker-*.log")
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	p := &proc{t: h.t, cmd: cmd, log: f.Name(), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	h.t.Cleanup(func() {
		p.kill()
		if h.t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			h.t.Logf("worker %d log (tail):\n%s", cmd.Process.Pid, b)
		}
	})
	return p
}

// kill ends the process with SIGKILL: a crash.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM and waits up to timeout; it returns the exit code and
// how long the process took to exit.
func (p *proc) term(timeout time.Duration) (int, time.Duration) {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), time.Since(start)
	case <-time.After(timeout):
		p.t.Fatalf("worker did not exit within %s of SIGTERM", timeout)
		return -1, 0
	}
}
