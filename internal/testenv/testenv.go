// Package testenv gives tests a real Redis of their own. The machine's Redis
// at 127.0.0.1:6379 is shared by every test package running at once, and
// asynq's key names cannot be prefixed, so each package owns one database
// number (listed here so no two collide) and empties only that one.
package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/config"
)

// Test API keys, one per role.
const (
	AdminKey    = "test-admin-key-0123456789"
	SupportKey  = "test-support-key-0123456789"
	OperatorKey = "test-operator-key-0123456789"
)

// APIKeys is OSHIRASE_API_KEYS for the test keys.
const APIKeys = "admin:admin:" + AdminKey + ",support:support:" + SupportKey + ",ops:operator:" + OperatorKey

// Database numbers, one per test package that needs Redis.
const (
	DBStore   = 2
	DBWorker  = 3
	DBAPI     = 4
	DBService = 5
	DBFaults  = 6
	DBBench   = 7
	DBSupport = 8
	DBCmd     = 9
	DBMisc    = 10
	DBInbound = 11
	DBAuth    = 12 // auth/ and accounts
	DBCLI     = 13 // the CLI against a real server
	DBApp     = 14 // the application layer
	DBConsole = 15 // console browser tests
)

// Addr is the shared test Redis (REDIS_TEST_ADDR overrides it).
func Addr() string {
	if a := os.Getenv("REDIS_TEST_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Redis returns a client on database db, emptied before the test and after.
func Redis(t testing.TB, db int) (redis.UniversalClient, string) {
	t.Helper()
	url := fmt.Sprintf("redis://%s/%d", Addr(), db)
	rdb := redis.NewClient(&redis.Options{Addr: Addr(), DB: db})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("a real Redis is needed at %s (scripts/test.sh starts one): %v", Addr(), err)
	}
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("flush test db %d: %v", db, err)
	}
	t.Cleanup(func() {
		rdb.FlushDB(context.Background())
		rdb.Close()
	})
	return rdb, url
}

// AcceptRisk is REDIS_ACCEPT_RISK for the shared test Redis: it runs with
// neither persistence nor (necessarily) noeviction — scripts/test.sh starts
// it with --save "" --appendonly no, for speed — and tests that empty their
// database would not want one. Nothing a test writes must outlive it.
const AcceptRisk = "eviction,no-persistence"

// Config returns a configuration with defaults, then env applied. Unless
// env names REDIS_ACCEPT_RISK ("none" for the production default), the
// test Redis' risks are accepted (AcceptRisk).
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	// The shared test Redis has no persistence (accepted here), and the
	// per-key quotas are off unless a test sets one: a test that starts
	// more campaigns than an hour's quota tests something else.
	defaults := map[string]string{"REDIS_ACCEPT_RISK": AcceptRisk, "RESENDS_PER_HOUR": "0",
		"NOTIFICATIONS_PER_MINUTE": "0", "STARTS_PER_HOUR": "0", "AUTH_FAILURES_PER_MINUTE": "0"}
	e := make(map[string]string, len(defaults)+len(env))
	for k, v := range defaults {
		e[k] = v
	}
	for k, v := range env {
		e[k] = v
	}
	env = e
	cfg, _, err := config.Load(flag.NewFlagSet("test", flag.ContinueOnError), nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// RedisServer is a private redis-server the test started (for restarts and
// persistence, which the shared one must not be put through).
type RedisServer struct {
	Port int
	Dir  string
	Args []string
	// Password is the server's requirepass, if Args set one: Start needs
	// it to see the server up.
	Password string
	// TLS is the client side of a server that speaks only TLS (Args from
	// TLSFiles.RedisArgs), for Start to see it up.
	TLS *tls.Config
	cmd *exec.Cmd
}

// StartRedis starts redis-server on a free port with extra args (e.g.
// "--appendonly", "yes"); it is stopped when the test ends.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (scripts/test.sh installs it)")
	}
	_ = bin
	s := &RedisServer{Port: FreePort(t), Dir: t.TempDir(), Args: args}
	s.Start(t)
	t.Cleanup(func() { s.Stop() })
	return s
}

// Start (re)starts the server on its port and directory.
func (s *RedisServer) Start(t testing.TB) {
	t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--logfile", filepath.Join(s.Dir, "redis.log")}, s.Args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.Password, TLSConfig: s.TLS})
	defer rdb.Close()
	for i := 0; i < 100; i++ {
		if rdb.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("redis-server on port %d did not come up", s.Port)
}

// Stop kills the server (SIGKILL: a crash, not a clean shutdown).
func (s *RedisServer) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Shutdown stops the server gracefully (SIGTERM: it writes its append-only
// file out and exits), as an orderly restart or failover does.
func (s *RedisServer) Shutdown(t testing.TB) {
	t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop redis-server: %v", err)
	}
	s.cmd.Wait()
	s.cmd = nil
}

// Addr is host:port.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// FreePort returns a TCP port nothing listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := listenLocal()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// LogBuffer is a log destination for tests of what a service logs: safe
// for the concurrent writers a server has.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged (since the last Take).
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Take returns what was logged since the last Take and forgets it.
func (l *LogBuffer) Take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	l.b.Reset()
	return s
}

// Slow skips t under `go test -short` (the quick loop, under a minute for
// the whole module), saying why it is slow. scripts/test.sh runs it.
func Slow(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("slow (%s): skipped under -short", why)
	}
}
