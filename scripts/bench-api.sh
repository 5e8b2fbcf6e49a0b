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

# Starts the server with the given environment; prints milliseconds from exec to the first
# answered request, and leaves SERVER_PID and PORT set.
start_server() {
  local out
  out=$(python3 - "$BIN" "$@" <<'PY'
import os, socket, subprocess, sys, time, urllib.request
binary, env_pairs = sys.argv[1], sys.argv[2:]
env = dict(os.environ, **dict(p.split("=", 1) for p in env_pairs))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
start = time.perf_counter()
proc = subprocess.Popen([binary, "serve", "--port", str(port), "--no-worker"], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1) as r:
            if r.status == 200:
                break
    except Exception:
        if proc.poll() is not None:
            sys.exit("server exited")
        time.sleep(0.0005)
print(proc.pid, port, round((time.perf_counter() - start) * 1000, 1))
PY
)
  read -r SERVER_PID PORT STARTUP_MS <<<"$out"
}

# CPU ticks (user + system) of a process, and of every PostgreSQL process on the machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# PostgreSQL's backends exit with their connections; the postmaster reaps them and counts their
# time as its children's (fields 16 and 17).
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres 2>/dev/null); do
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# Loads the server with wrk (the arguments after the label) and prints requests per second,
# latency, and the CPU spent per request and per KB served: the server's, and PostgreSQL's.
load() {
  local label=$1 bytes=$2; shift 2
  local server_before pg_before requests
  server_before=$(ticks "$SERVER_PID"); pg_before=$(pg_ticks)
  wrk -t2 -c32 -d"$DURATION" --latency "$@" > "$WORK/wrk.out"
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  python3 - "$label" "$bytes" "$requests" "$HZ" "$server_before" "$(ticks "$SERVER_PID")" \
    "$pg_before" "$(pg_ticks)" "$WORK/wrk.out" <<'PY'
import re, sys
label, size, requests, hz, s0, s1, p0, p1, path = sys.argv[1:]
out = open(path).read()
requests, hz, size = int(requests), int(hz), int(size)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
p50 = re.search(r"\s50%\s+(\S+)", out).group(1)
p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
server_ms = (int(s1) - int(s0)) * 1000 / hz / requests
pg_ms = (int(p1) - int(p0)) * 1000 / hz / requests
per_kb = (server_ms + pg_ms) * 1000 / max(size / 1024, 1e-9)
print(f"   {label}: {float(rps):,.0f} req/s, p50 {p50}, p99 {p99}, CPU per request "
      f"{server_ms:.3f} ms server + {pg_ms:.3f} ms PostgreSQL, {per_kb:.1f} µs per KB "
      f"({size} B)" + (f", {non2xx.group(1)} non-2xx/3xx" if non2xx else ""))
PY
}

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
  echo "== $name: peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$SERVER_PID/status")"
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
