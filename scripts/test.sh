#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, vet, unit,
# integration and end-to-end tests (with the race detector), and short fuzz
# runs of the parsers. It installs and starts whatever the tests need: Redis
# and ClickHouse from Debian's packages (scripts/services.sh), and Prometheus (promtool, the dashboards' queries), on a free loopback port, ended
# by its PID when the script exits. The fake upstream runs inside the tests;
# the conformance suite's Node and uvicorn upstreams (python3-uvicorn, from
# Debian's packages) are started by the tests themselves.
#
# Usage: scripts/test.sh   (FUZZTIME=5s: every fuzz target for that long, through
# scripts/fuzz.sh, which tells the time-limit flake of Go 1.26 from a failure;
# FUZZTIME=0 skips fuzzing. SLUICE_SOAK=10m: the soak's duration; 0 skips it)
# For everyday work, scripts/quick.sh runs go vet and go test -short with no
# services in about two minutes; this script is the full suite CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "test.sh: Go 1.26 is required (https://go.dev/dl/)" >&2; exit 1; }
export FUZZTIME="${FUZZTIME:-5s}"
SOAK="${SLUICE_SOAK:-10m}"

step() { printf '\n== %s\n' "$*"; }

step "modules"
go mod download

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "build"
go build -o bin/sluice ./cmd/sluice
go build -o bin/fakeai ./cmd/fakeai
bin/sluice validate -config configs/sluice.yaml -policies configs/policies.yaml

step "services"
source scripts/services.sh
trap stop_services EXIT
start_redis
echo "redis at $SLUICE_TEST_REDIS_ADDR"
start_clickhouse
echo "clickhouse at $SLUICE_TEST_CLICKHOUSE_ADDR"
start_prometheus
echo "prometheus at $SLUICE_TEST_PROMETHEUS"
# Two ClickHouse replicas and ZooKeeper for the sink's cluster test
# (installs Debian's zookeeper, and with it Java, when missing).
source scripts/clickhouse-cluster.sh
start_clickhouse_cluster
echo "clickhouse cluster $SLUICE_TEST_CLICKHOUSE_CLUSTER at $SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS"
ensure_node
ensure_uvicorn
ensure_chromium
# The console's browser test keeps its screenshots here.
export SLUICE_TEST_ARTIFACTS="$PWD/bin/artifacts"
echo "conformance upstreams: $(node --version 2>/dev/null || /usr/bin/node --version), uvicorn $(/usr/bin/python3 -c 'import uvicorn; print(uvicorn.__version__)')"

step "alert rules: promtool check rules, promtool test rules"
promtool check rules dashboards/alerts.yaml
(cd dashboards && promtool test rules alerts_test.yaml)

step "tests (race detector on)"
# The soak runs in a step of its own, below, not here. The e2e package
# alone takes about 10 minutes under the race detector (go test's default
# timeout), so the timeout is raised.
env -u SLUICE_SOAK go test -race -count=1 -timeout 30m ./...

mkdir -p bin
step "allocation proofs and the other tests the race detector skips (no -race)"
# The race detector allocates and adds its own heap, so allocation proofs and
# heap bounds sit behind //go:build !race or skip when raceEnabled. They are
# found here, not named: every Test in a file built with !race, and every Test
# whose body calls testing.AllocsPerRun or reads raceEnabled. Each must report
# PASS; a skip or a missing test fails the step.
norace_tests() {
  git ls-files '*_test.go' | while read -r f; do
    awk -v dir="$(dirname "$f")" -v file="$f" '
      FNR == 1 { norace = ($0 ~ /^\/\/go:build !race$/) }
      /^func / {
        cur = ""; name = $0; sub(/^func /, "", name); sub(/\(.*/, "", name)
        if (name ~ /^Test/ && $0 ~ /\*testing\.T\)/) { cur = name; if (norace) print dir, cur }
      }
      /raceEnabled|AllocsPerRun/ && !/^(const|var) / {
        if (cur != "") print dir, cur
        else if ($0 ~ /AllocsPerRun/) print dir, "HELPER:" file
      }
    ' "$f"
  done | sort -u
}
norace_list=$(norace_tests)
if grep -q ' HELPER:' <<<"$norace_list"; then
  echo "testing.AllocsPerRun outside a Test function (call it from the Test itself so this step finds it):"
  grep ' HELPER:' <<<"$norace_list" | sed 's/.* HELPER://'; exit 1
fi
for dir in $(cut -d' ' -f1 <<<"$norace_list" | sort -u); do
  names=$(awk -v d="$dir" '$1 == d { print $2 }' <<<"$norace_list")
  pattern="^($(paste -sd'|' <<<"$names"))\$"
  log="bin/norace-$(tr / - <<<"$dir").log"
  if ! go test -count=1 -v -run "$pattern" "./$dir/" >"$log" 2>&1; then
    cat "$log"; exit 1
  fi
  for name in $names; do
    if ! grep -q "^--- PASS: $name " "$log"; then
      cat "$log"; echo "$dir: $name did not pass (skipped or not run) without -race"; exit 1
    fi
  done
  echo "ok ./$dir: $(wc -w <<<"$names") tests: $(paste -sd' ' <<<"$names")"
done

step "transcripts end to end: ClickHouse 18.16 killed, frozen, sluice stopped under load (no -race: sluice is a subprocess)"
if ! go test -count=1 -timeout 15m -run 'TestTranscripts|TestSinkNeverSlowsRequests' -v ./e2e/ >bin/transcripts-e2e.log 2>&1; then
  cat bin/transcripts-e2e.log; exit 1
fi
grep -E '^(--- |    transcripts_test|ok )' bin/transcripts-e2e.log

if [ "$SOAK" != "0" ]; then
  step "soak: $SOAK of mixed load at a fixed rate through the binary; RSS, goroutines and fds flat (no -race: sluice is a subprocess)"
  if ! SLUICE_SOAK="$SOAK" go test -count=1 -timeout 60m -run '^TestSoak$' -v ./e2e/ >bin/soak-e2e.log 2>&1; then
    cat bin/soak-e2e.log; exit 1
  fi
  grep -E '^(--- |    soak_test\.go:[0-9]+: soak|ok )' bin/soak-e2e.log
fi

step "sink throughput into ClickHouse 18.16 (benchmark)"
go test -run '^$' -bench 'ClickHouseThroughput|SinkThroughput' -benchtime 2x ./sink/

step "modern DDL and shipped queries on a current ClickHouse engine (chDB 26.5, in process)"
# libchdb.so comes in an npm package (167 MB download, 559 MB unpacked), cached
# between runs; sink/chdbtest is a module of its own so chdb-go stays out of
# Sluice's go.mod. CHDB=0 skips this step.
if [ "${CHDB:-1}" != "0" ]; then
  CHDB_DIR="${CHDB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-chdb-26.5.3}"
  if [ ! -f "$CHDB_DIR/package/libchdb.so" ]; then
    if command -v npm >/dev/null; then
      mkdir -p "$CHDB_DIR"
      (cd "$CHDB_DIR" && npm pack --silent @chdb/lib-linux-x64-gnu@26.5.3 >/dev/null &&
        tar xzf chdb-lib-linux-x64-gnu-26.5.3.tgz package/libchdb.so && rm -f chdb-lib-linux-x64-gnu-26.5.3.tgz) ||
        echo "could not fetch libchdb.so; the chDB test will skip"
    else
      echo "npm not found: cannot fetch libchdb.so; the chDB test will skip"
    fi
  fi
  (cd sink/chdbtest && CHDB_LIB_PATH="$CHDB_DIR/package/libchdb.so" go test -count=1 -v ./...)
fi

if [ "$FUZZTIME" != "0" ]; then
  step "fuzz: every target, $FUZZTIME each (FuzzParity ${PARITY_FUZZTIME:-5000x}, by count: Redis round trips)"
  scripts/fuzz.sh
fi

step "all tests passed"
