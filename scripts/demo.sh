#!/usr/bin/env bash
# Starts Sluice in front of the fake upstream, sends a request and a stream
# with curl, shows a few metrics, then stops both. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

go build -o bin/sluice ./cmd/sluice
go build -o bin/fakeai ./cmd/fakeai

UP=127.0.0.1:${DEMO_UPSTREAM_PORT:-18081}
export OPENAI_BASE_URL="http://$UP/v1" OPENAI_API_KEY=sk-upstream-demo SLUICE_DEMO_KEY=sk-demo
export SLUICE_ADDR=127.0.0.1:${DEMO_PORT:-18080} SLUICE_ADMIN_ADDR=127.0.0.1:${DEMO_ADMIN_PORT:-19090}

bin/fakeai -addr "$UP" -api-key "$OPENAI_API_KEY" -chunks 8 -chunk-interval 150ms >/dev/null &
fake=$!
bin/sluice serve -config configs/sluice.yaml -policies configs/policies.yaml 2>/tmp/sluice-demo.log &
sluice=$!
trap 'kill $sluice $fake 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf "http://$SLUICE_ADMIN_ADDR/readyz" >/dev/null && break; sleep 0.1; done

echo "== a chat completion through Sluice"
curl -sS "http://$SLUICE_ADDR/v1/chat/completions" -H "Authorization: Bearer $SLUICE_DEMO_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Sluice"}]}'
echo
echo "== the same as a stream (events arrive one by one)"
curl -sSN "http://$SLUICE_ADDR/v1/chat/completions" -H "Authorization: Bearer $SLUICE_DEMO_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream me a few words please"}]}' |
  while IFS= read -r line; do if [ -n "$line" ]; then printf "%s  %s\n" "$(date +%T.%3N)" "${line:0:110}"; fi; done
echo
echo "== a wrong key"
curl -sS "http://$SLUICE_ADDR/v1/models" -H "Authorization: Bearer wrong"
echo
echo "== metrics (http://$SLUICE_ADMIN_ADDR/metrics)"
curl -sS "http://$SLUICE_ADMIN_ADDR/metrics" | grep -E '^sluice_(requests_total|overhead_seconds_(sum|count)|stream_first_byte_seconds_count)' | grep -v ' 0$'
