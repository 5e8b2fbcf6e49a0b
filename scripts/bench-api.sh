#!/usr/bin/env bash
# Load benchmark of the HTTP API (called by scripts/bench.sh api): a release `converge serve`
# on SQLite and on PostgreSQL, loaded with wrk over loopback on this machine.
#   - start-up: process start to the first answered request (GET /health/live)
#   - GET /v1/intents with 200 intents (the default first page of 100), 32 connections; then
#     the same with If-None-Match (304s), and with the rate limit on at a budget never reached
#   - POST /v1/intents (unique ids), 32 connections
#   - CPU per request and per KB served: the server's and PostgreSQL's (/proc ticks)
#   - peak RSS of the server (VmHWM)
# Rate limiting is off but in its own run (the budget would cap the load); authentication is on.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
# BENCH_BIN: another build to measure (an earlier commit's, for a before/after table).
if [ -z "${BENCH_BIN:-}" ]; then cargo build --release -q -p converge-cli; fi
BIN=${BENCH_BIN:-$PWD/target/release/converge}
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap 'cleanup; pg_stop' EXIT

# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh

cat > "$WORK/post.lua" <<'LUA'
-- Unique ids across wrk's threads: each thread numbers its own requests.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  counter = counter + 1
  local id = string.format("bench-%d-%d-%d", tid, counter, os.time())
  return wrk.format(nil, nil, nil, '{"source":"feature/bench","id":"' .. id .. '"}')
end
LUA

# shellcheck source=scripts/lib/bench-load.sh
. scripts/lib/bench-load.sh

run_backend() {
  local name=$1; shift
  start_server "$@" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  local base="http://127.0.0.1:$PORT"
  for n in $(seq 1 200); do
    curl -sf -o /dev/null -H 'x-api-key: bench-key' -H 'content-type: application/json' \
      -d "{\"source\":\"feature/$n\",\"id\":\"seed-$n\",\"priority\":$((n % 5))}" "$base/v1/intents"
  done
  local page_bytes etag
  page_bytes=$(curl -s -o /dev/null -w '%{size_download}' -H 'x-api-key: bench-key' "$base/v1/intents")
  etag=$(curl -s -D - -o /dev/null -H 'x-api-key: bench-key' "$base/v1/intents" | awk -F': ' 'tolower($1) == "etag" {print $2}' | tr -d '\r')
  echo "== $name: start-up to first answer: ${STARTUP_MS} ms"
  echo "== $name: 200 intents, first page of 100, 32 connections, $DURATION each"
  load "GET /v1/intents" "$page_bytes" -H 'x-api-key: bench-key' "$base/v1/intents"
  load "GET /v1/intents, If-None-Match (304)" "$page_bytes" -H 'x-api-key: bench-key' -H "if-none-match: $etag" "$base/v1/intents"
  load "POST /v1/intents" 400 -H 'x-api-key: bench-key' -s "$WORK/post.lua" "$base/v1/intents"
  echo "== $name: peak RSS: $(rss_report "$SERVER_PID")"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  # The same GET with the rate limit on (a budget it never reaches): what the limiter costs.
  start_server "$@" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_RPM=1000000000
  base="http://127.0.0.1:$PORT"
  load "GET /v1/intents, rate limit on" "$page_bytes" -H 'x-api-key: bench-key' "$base/v1/intents"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

run_backend sqlite CONVERGE_DB_BACKEND=sqlite CONVERGE_DB_PATH="$WORK/state.db"
pg_start >/dev/null
run_backend postgres CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$CONVERGE_TEST_PG_URL"
