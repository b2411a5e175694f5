package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/oshirase/oshirase/config"
)

// healthcheck asks the oshirase process on this host whether it is alive
// (/healthz) or ready (/readyz), for container health checks: the image
// has no shell and no curl. Exit status 0 when it answers 200.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("oshirase healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("path", "/healthz", "endpoint to ask: /healthz (the process is up) or /readyz (Redis and SMTP answer)")
	target := fs.String("url", "", "full URL to ask instead (default: METRICS_ADDR if set, else LISTEN_ADDR, on loopback)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	cfg, _, err := config.Load(fs, args, nil)
	if err != nil {
		return err
	}
	u := *target
	if u == "" {
		u = healthURL(cfg, *path)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: %s\n", u, resp.Status)
	return nil
}

// healthURL is where this host's oshirase answers path: the worker's
// METRICS_ADDR when set (a worker has no LISTEN_ADDR), else LISTEN_ADDR;
// an address listening on every interface is asked on loopback.
func healthURL(cfg *config.Config, path string) string {
	addr := cfg.ListenAddr
	if cfg.MetricsAddr != "" {
		addr = cfg.MetricsAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + path
	}
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}
