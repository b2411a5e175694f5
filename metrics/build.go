package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version may be set at build time:
//
//	go build -ldflags "-X github.com/oshirase/oshirase/metrics.version=v1.2.3" ./cmd/oshirase
//
// Without it, the module version Go recorded (a tagged `go install`) is used.
// revision may be set the same way where the build has no VCS information
// (a Docker build without .git; GOFLAGS=-buildvcs=false).
var version, revision string

// Build is what the running binary was built from.
type Build struct {
	Version   string // v1.2.3, or "devel"
	Revision  string // the VCS commit, "-dirty" when modified; "unknown" without VCS stamping
	GoVersion string
}

// BuildInfo reads the binary's build information (runtime/debug).
func BuildInfo() Build {
	b := Build{Version: version, Revision: revision, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && b.Revision == "" {
			b.Revision = rev
			if dirty {
				b.Revision += "-dirty"
			}
		}
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// BuildInfoGauge is oshirase_build_info: always 1, its labels say what runs.
func BuildInfoGauge() prometheus.Collector {
	b := BuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "oshirase", Name: "build_info",
		Help:        "Always 1; the labels say which oshirase runs: version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
