#!/usr/bin/env bash
# Runs oshirase's whole test suite on this machine. It needs a real Redis at
# 127.0.0.1:6379 (started here if nothing answers), Redis' own binaries for
# the tests that start private servers, Postfix's smtp-sink for the benchmark
# tests, Chromium with its driver for the support console's browser test and
# the notices' phone-width screenshots, and SpamAssassin (run offline, -L)
# and python3 for the notices' independent checks.
# Missing Debian packages are installed with apt-get when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
[ -x /usr/sbin/smtp-sink ] || need+=(postfix)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v spamassassin >/dev/null || need+=(spamassassin)
[ -d /usr/share/fonts/opentype/ipafont-gothic ] || need+=(fonts-ipafont-gothic) # Japanese in the screenshots
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "== missing ${need[*]}; tests that need them will be skipped (run as root to install)"
  fi
fi

# The shared test Redis keeps nothing on disk (fast, and every test empties
# its database anyway). oshirase refuses such a Redis unless
# REDIS_ACCEPT_RISK accepts it: the tests do, explicitly (testenv.AcceptRisk),
# and tests of the check itself start private servers.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/oshirase-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/oshirase-redis --logfile /tmp/oshirase-redis/redis.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "== gofmt and go vet"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad"; exit 1; fi
go vet ./...

echo "== go test"
# The fault tests run alone, after the rest: they time real processes (the
# rate limit as the SMTP server sees it, crash recovery), and the other
# packages' tests on the same cores would only add noise to what they measure.
go test -count=1 -timeout 60m "$@" $(go list ./... | grep -v '/faults$')
go test -count=1 -timeout 60m "$@" ./faults/
