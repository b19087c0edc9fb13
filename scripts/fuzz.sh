#!/usr/bin/env bash
# Runs every Go fuzz target of the module (every `func FuzzXxx` in a
# *_test.go file) for a bounded time each, one after the other, and prints
# one line per target: its execs and new corpus entries, or the failure.
# Used by scripts/test.sh and scripts/faults.sh; runnable alone.
#
# Usage: scripts/fuzz.sh             FUZZTIME=10s each (a duration or an exec
#                                    count such as 30000x)
#        FUZZ_PARALLEL=2             fuzzing workers per target
#        PARITY_FUZZTIME=5000x       FuzzParity (policy/limit) runs by count:
#                                    each input costs dozens of Redis round
#                                    trips; it needs SLUICE_TEST_REDIS_ADDR
#                                    (skipped without it)
#
# Go 1.26's coordinator can report "context deadline exceeded" when a
# duration -fuzztime ends while a worker is mid-call on a loaded machine
# (go.dev/issue/75804, fixed in Go 1.27). Such a run wrote no failing input:
# it is reported as a flake and does not fail the script. Any run that wrote
# a failing input to testdata/fuzz/, or failed otherwise, fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

FUZZTIME="${FUZZTIME:-10s}"
FUZZ_PARALLEL="${FUZZ_PARALLEL:-2}"
PARITY_FUZZTIME="${PARITY_FUZZTIME:-5000x}"
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")"
trap 'rm -rf "$log_dir"' EXIT

# targets prints "package-dir FuzzName" for every fuzz target, sorted.
targets() {
  { git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go' -not -path './bin/*' | sed 's|^\./||'; } |
    xargs grep -H -o '^func Fuzz[A-Za-z0-9_]*(' |
    sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|; s|^[^/ ]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|. \1|' |
    grep -v '^sink/chdbtest' | sort -u
}

failed=0 flaked=0 ran=0
start=$SECONDS
while read -r dir name; do
  budget="$FUZZTIME"
  if [ "$name" = FuzzParity ]; then
    budget="$PARITY_FUZZTIME"
    if [ -z "${SLUICE_TEST_REDIS_ADDR:-}" ]; then
      printf '%-22s %-22s skipped (needs SLUICE_TEST_REDIS_ADDR)\n' "$dir" "$name"
      continue
    fi
  fi
  corpus="$dir/testdata/fuzz/$name"
  before="$(ls "$corpus" 2>/dev/null | sort || true)"
  log="$log_dir/$name.log"
  t0=$SECONDS
  ran=$((ran + 1))
  if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$budget" -parallel="$FUZZ_PARALLEL" "./$dir/" >"$log" 2>&1; then
    last="$(grep -E '^fuzz: elapsed.*execs:' "$log" | tail -n 1 || true)"
    execs="$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")"
    new="$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")"
    note=""
    if [ -z "$execs" ]; then # the time went on replaying the cached corpus
      execs=0
      note=" (budget spent replaying the corpus: $(grep -oE 'gathering baseline coverage: [0-9]+/[0-9]+' "$log" | tail -n 1 | cut -d' ' -f4))"
    fi
    printf '%-22s %-22s ok   %8s execs, %s new, %3ds%s\n' "$dir" "$name" "$execs" "${new:-0}" $((SECONDS - t0)) "$note"
    continue
  fi
  after="$(ls "$corpus" 2>/dev/null | sort || true)"
  if ! grep -q 'Failing input written' "$log" && [ "$before" = "$after" ] &&
    grep -q 'context deadline exceeded' "$log"; then
    flaked=$((flaked + 1))
    printf '%-22s %-22s FLAKE (context deadline exceeded at the time limit, no failing input: go.dev/issue/75804)\n' "$dir" "$name"
    continue
  fi
  failed=$((failed + 1))
  printf '%-22s %-22s FAIL\n' "$dir" "$name"
  cat "$log"
done < <(targets)

echo "fuzz: $ran targets, $failed failed, $flaked flaked (time limit race), $((SECONDS - start)) s"
[ "$failed" -eq 0 ]
