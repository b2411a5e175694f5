package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// loadCompose loads a compose file with compose-go, the loader and schema
// validator `docker compose config` itself uses (no Docker engine runs here).
func loadCompose(t *testing.T, path string) error {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithName("oshirase"), cli.WithWorkingDirectory(filepath.Dir(path)))
	if err != nil {
		return err
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	for _, want := range []string{"redis", "mailpit", "api", "worker"} {
		if _, err := p.GetService(want); err != nil {
			t.Errorf("docker-compose.yml lacks service %q", want)
		}
	}
	// Its Redis must pass oshirase's start-up check without
	// REDIS_ACCEPT_RISK: an append-only file, and no eviction.
	if r, err := p.GetService("redis"); err == nil {
		cmd := strings.Join(r.Command, " ")
		for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s: the redis service's command %q lacks %s", path, cmd, want)
			}
		}
	}
	// oshirase's services are checked by the binary itself (the image has
	// no shell): `oshirase healthcheck`, at the path the image puts it.
	for _, name := range []string{"api", "worker"} {
		s, err := p.GetService(name)
		if err != nil {
			continue
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) < 3 || s.HealthCheck.Test[0] != "CMD" ||
			s.HealthCheck.Test[1] != "/oshirase" || s.HealthCheck.Test[2] != "healthcheck" {
			t.Errorf("%s: service %s has no `/oshirase healthcheck` health check", path, name)
		}
	}
	return nil
}

func TestComposeFileIsValid(t *testing.T) {
	if err := loadCompose(t, filepath.Join("..", "..", "docker-compose.yml")); err != nil {
		t.Fatalf("docker compose config would reject docker-compose.yml: %v", err)
	}
	// The check can fail: a service with an unknown key is refused.
	bad := filepath.Join(t.TempDir(), "compose.yml")
	os.WriteFile(bad, []byte("services:\n  redis:\n    image: redis\n    restartt: always\n"), 0o644)
	if err := loadCompose(t, bad); err == nil {
		t.Fatal("a compose file with an unknown key was accepted")
	}
}
