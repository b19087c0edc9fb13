#!/usr/bin/env bash
# The queue's load test: 1,000 simulated users, each sending one chat
# request within 30 s, against a fake provider enforcing 600 RPM and 100k
# TPM — first directly (the provider's 429s are counted), then through
# Sluice with the provider's budget configured. Prints both tables of
# figures. Tunable: SLUICE_QUEUE_LOAD_USERS (1000), SLUICE_QUEUE_LOAD_SECONDS (30).
#
#   scripts/queue-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run '^TestQueueLoad$' -v -timeout 10m ./e2e | grep -E 'queue_test.go|^(---|ok|FAIL|PASS)'
