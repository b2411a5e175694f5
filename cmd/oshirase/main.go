// Command oshirase sends mass customer notices — first of all data-breach
// notices — by email. Run `oshirase help` for the commands and settings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	_ "time/tzdata" // TZ=Asia/Tokyo works in images without a zoneinfo database

	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/service"
)

const usage = `oshirase — mass customer notices (data-breach notices first) by email.

Usage:
  oshirase <command> [flags]

Commands:
  serve     run the HTTP API and a worker in one process
  api       run the HTTP API only
  worker    run a worker only (run as many as you like against one Redis)
  inbound   run the bounce receiver only (INBOUND_URL, BOUNCE_DOMAIN, BOUNCE_SECRET)
  demo      send a synthetic card-leak campaign end to end; needs nothing installed
  preview   render a template to the terminal or an .eml file
  bench     measure throughput end to end (see README)
  hashkey   print the SHA-256 form of an API key for OSHIRASE_API_KEYS
  version   print the version, VCS revision and Go version (as oshirase_build_info)
  healthcheck  ask this host's oshirase process for /healthz (--path /readyz): exit 0 when it answers 200
  help      this text and every setting with its default (--markdown: the settings as a Markdown table)

Client commands (against OSHIRASE_URL with OSHIRASE_KEY; docs/cli.md):
  campaign  create|upload|start|status|pause|resume|cancel|report
  recipient find|resend
  webhook   add|list|delete|rotate|deliveries|redeliver

Every setting is an environment variable and also a flag (REDIS_URL → --redis-url):
`

// startCPUProfile writes a CPU profile to file until the returned func runs.
func startCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		config.Usage(stderr)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if f := os.Getenv("OSHIRASE_CPU_PROFILE"); f != "" {
		// For finding where the CPU goes under `oshirase bench`
		// (--env OSHIRASE_CPU_PROFILE=/tmp/osh.prof writes
		// /tmp/osh.prof.<command>.<pid>); not a setting.
		stopProfile, err := startCPUProfile(fmt.Sprintf("%s.%s.%d", f, cmd, os.Getpid()))
		if err != nil {
			fmt.Fprintln(stderr, "oshirase:", err)
			return 1
		}
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "help", "-h", "--help", "-help":
		if len(rest) > 0 && rest[0] == "--markdown" {
			config.Markdown(stdout) // docs/configuration.md's table
			return 0
		}
		fmt.Fprint(stdout, usage)
		config.Usage(stdout)
		return 0
	case "serve":
		err = serve(ctx, rest, service.Options{API: true, Worker: true}, stderr)
	case "api":
		err = serve(ctx, rest, service.Options{API: true}, stderr)
	case "worker":
		err = serve(ctx, rest, service.Options{Worker: true}, stderr)
	case "inbound":
		err = serve(ctx, rest, service.Options{Inbound: true}, stderr)
	case "demo":
		err = demo(ctx, rest, stdout, stderr)
	case "preview":
		err = preview(ctx, rest, stdout, stderr)
	case "bench":
		err = bench(ctx, rest, stdout, stderr)
	case "hashkey":
		err = hashkey(rest, stdout)
	case "campaign":
		err = campaignCmd(ctx, rest, stdout, stderr)
	case "recipient":
		err = recipientCmd(ctx, rest, stdout, stderr)
	case "webhook":
		err = webhookCmd(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		b := metrics.BuildInfo()
		fmt.Fprintf(stdout, "oshirase %s (revision %s, %s)\n", b.Version, b.Revision, b.GoVersion)
		return 0
	case "healthcheck":
		err = healthcheck(ctx, rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "oshirase: unknown command %q\n\n", cmd)
		fmt.Fprint(stderr, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "oshirase %s: %v\n", cmd, err)
		if e, ok := errorsAs[*exitError](err); ok {
			return e.code
		}
		return 1
	}
	return 0
}

// newLogger returns the process logger: JSON for services (machines read
// it), text for the demo and tools (people read it).
func newLogger(cfg *config.Config, w io.Writer, defaultFormat string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	format := cfg.LogFormat
	if format == "" {
		format = defaultFormat
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("LOG_FORMAT %q: want json or text", format)
}

func serve(ctx context.Context, args []string, opts service.Options, stderr io.Writer) error {
	fs := flag.NewFlagSet("oshirase", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, _, err := config.Load(fs, args, nil)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr, "json")
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	if opts.Worker && os.Getenv("GOGC") == "" {
		// A worker's live heap is small (tens of MB) and it allocates a
		// fresh message for every recipient: collecting a third as often
		// saves ~7% CPU at full speed for a few tens of MB. GOGC overrides.
		debug.SetGCPercent(300)
	}
	svc, err := service.New(ctx, cfg, log, opts)
	if err != nil {
		return err
	}
	defer svc.Close()
	return svc.Run(ctx)
}

func hashkey(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: oshirase hashkey <key>")
	}
	fmt.Fprintln(stdout, apiHashKey(args[0]))
	return nil
}
