#!/usr/bin/env bash
# The queue's load test: 1,000 simulated users, each sending one chat
# request within 30 s, against a fake provider enforcing 600 RPM and 100k
# TPM — first directly (the provider's 429s are counted), then through
# Sluice with the provider's budget configured. Prints both tables of
# figures. Then chat users with the official SDK's retries at about 3x
# and 20x a provider's capacity (retry slots: docs/limits.md). Tunable: SLUICE_QUEUE_LOAD_USERS (1000), SLUICE_QUEUE_LOAD_SECONDS (30).
#
#   scripts/queue-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run '^(TestQueueLoad|TestRetrySlotsUnderOverload)$' -v -timeout 10m ./e2e | grep -E '(queue|slots)_test.go|^(---|ok|FAIL|PASS)'
