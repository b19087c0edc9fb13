#!/usr/bin/env bash
# The quick tier, for everyday work: go vet and go test -short ./..., with no
# services. Tests that need Redis, ClickHouse, Prometheus or the Node and
# uvicorn upstreams, and the long ones (soak, load, the 30 s timeouts),
# skip under -short with their reason; the service addresses are unset so a
# shell that sourced scripts/services.sh gets the same run. No race detector
# (it is several times slower on 2 cores); scripts/test.sh, the full suite
# that CI runs, keeps it.
#
# Usage: scripts/quick.sh [go test flags, e.g. -run TestX or -v]
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "quick.sh: Go 1.26 is required (https://go.dev/dl/)" >&2; exit 1; }
unset SLUICE_TEST_REDIS_ADDR SLUICE_TEST_CLICKHOUSE_ADDR SLUICE_TEST_CLICKHOUSE_HTTP \
  SLUICE_TEST_PROMETHEUS SLUICE_TEST_PROMETHEUS_TARGETS SLUICE_TEST_UVICORN SLUICE_SOAK

start=$SECONDS
printf '== go vet\n'
go vet ./...
printf '\n== go test -short\n'
go test -short -count=1 "$@" ./...
printf '\n== quick tier passed in %ds\n' $((SECONDS - start))
