#!/usr/bin/env bash
# Load benchmark of the HTTP API (called by scripts/bench.sh api): a release `converge serve`
# on SQLite and on PostgreSQL, loaded with wrk over loopback on this machine.
#   - start-up: process start to the first answered request (GET /health/live)
#   - GET /v1/intents with 200 intents (the default first page of 100), 32 connections
#   - POST /v1/intents (unique ids), 32 connections
#   - peak RSS of the server (VmHWM)
# Rate limiting is off (the budget would cap the load); authentication is on.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p converge-cli
BIN=$PWD/target/release/converge
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

run_backend() {
  local name=$1; shift
  start_server "$@" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  local base="http://127.0.0.1:$PORT"
  for n in $(seq 1 200); do
    curl -sf -o /dev/null -H 'x-api-key: bench-key' -H 'content-type: application/json' \
      -d "{\"source\":\"feature/$n\",\"id\":\"seed-$n\",\"priority\":$((n % 5))}" "$base/v1/intents"
  done
  echo "== $name: start-up to first answer: ${STARTUP_MS} ms"
  echo "== $name: GET /v1/intents (200 intents, first page of 100, 32 connections, $DURATION)"
  wrk -t2 -c32 -d"$DURATION" --latency -H 'x-api-key: bench-key' "$base/v1/intents" \
    | grep -E 'Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors'
  echo "== $name: POST /v1/intents (32 connections, $DURATION)"
  wrk -t2 -c32 -d"$DURATION" --latency -H 'x-api-key: bench-key' -s "$WORK/post.lua" "$base/v1/intents" \
    | grep -E 'Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors'
  echo "== $name: peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$SERVER_PID/status")"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

run_backend sqlite CONVERGE_DB_BACKEND=sqlite CONVERGE_DB_PATH="$WORK/state.db"
pg_start >/dev/null
run_backend postgres CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$CONVERGE_TEST_PG_URL"
