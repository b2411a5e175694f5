package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	benchmark "github.com/oshirase/oshirase/bench"
)

const benchUsage = `Usage: oshirase bench [flags]

Starts a private redis-server, Postfix's smtp-sink, one API process and
--workers worker processes (this binary), then measures:
  - the machine's ceiling: smtp-source -d -s 4 -m N -l 2048 into the sink;
  - end-to-end delivery of each --sizes campaign into the sink: msg/s, CPU
    seconds per 1,000 messages (utime+stime of the oshirase processes),
    peak RSS of the workers;
  - a --ingest-row CSV upload through the HTTP API: rows/s, API peak RSS;
  - Redis memory per recipient;
  - with --webhooks, each campaign once more right after with a local
    status-webhook receiver taking every event: msg/s with and without,
    and recipient.sent events per second received.
Settings for the oshirase processes (WORKER_CONCURRENCY, SMTP_POOL,
CHUNK_SIZE, GOMAXPROCS, ...) are taken from the environment or --env.

Flags:
`

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("oshirase bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	sizes := fs.String("sizes", "15370,100000", "comma-separated campaign sizes to deliver end to end")
	ingest := fs.Int("ingest", 1000000, "CSV rows to upload through the API (0 = skip)")
	workers := fs.Int("workers", 1, "oshirase worker processes")
	ceiling := fs.Int("ceiling", 15370, "messages smtp-source sends to measure the ceiling (0 = skip)")
	dir := fs.String("dir", "", "keep logs here (default: a temporary folder, removed afterwards)")
	var env multiFlag
	fs.Var(&env, "env", "KEY=VALUE for the oshirase processes (repeatable)")
	quiet := fs.Bool("q", false, "no progress lines")
	repeat := fs.Int("repeat", 1, "runs of each campaign size, each after a ceiling measurement of its own; targets judge the median")
	hooks := fs.Bool("webhooks", false, "run each campaign again right after with a status-webhook endpoint taking every event; report both rates and the events/s received")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := benchmark.Options{Ingest: *ingest, Workers: *workers, Ceiling: *ceiling, Dir: *dir, Repeat: *repeat, Webhooks: *hooks,
		RedisURL: os.Getenv("REDIS_URL"), Log: stderr}
	if *quiet {
		opts.Log = io.Discard
	}
	for _, s := range strings.Split(*sizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("--sizes: %q is not a positive number", s)
		}
		opts.Sizes = append(opts.Sizes, n)
	}
	for _, k := range []string{"WORKER_CONCURRENCY", "SMTP_POOL", "CHUNK_SIZE"} {
		if v := os.Getenv(k); v != "" {
			opts.Env = append(opts.Env, k+"="+v)
		}
	}
	opts.Env = append(opts.Env, env...)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	opts.Exe = exe
	rep, err := benchmark.Run(ctx, opts)
	if rep != nil {
		rep.Print(stdout, opts)
	}
	return err
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want KEY=VALUE, not %q", v)
	}
	*m = append(*m, v)
	return nil
}
