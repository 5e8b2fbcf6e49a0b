#!/usr/bin/env bash
# Load benchmark of webhook deliveries over HTTP (called by scripts/bench.sh webhook): a release
# `converge serve` on SQLite and on PostgreSQL, loaded with wrk over loopback on this machine,
# 16 connections, printing throughput, latency, CPU per delivery (the server's and
# PostgreSQL's) and peak RSS. Each request is a signed ~25 KB pull_request delivery with its own
# delivery id; 500 pull requests are cycled (the first delivery of each creates its intent,
# later ones are repeats). BENCH_BIN=path measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
SECRET=bench-secret
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [ -z "${BENCH_BIN:-}" ]; then cargo build --release -q -p converge-cli; fi
BIN=${BENCH_BIN:-$PWD/target/release/converge}
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap 'cleanup; pg_stop' EXIT

# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
# shellcheck source=scripts/lib/bench-load.sh
. scripts/lib/bench-load.sh

# 500 signed bodies, one per line: "<signature> <body>" (wrk's Lua cannot compute an HMAC).
python3 - "$SECRET" "$WORK/deliveries.txt" <<'PY'
import hashlib, hmac, json, sys
secret, out = sys.argv[1].encode(), sys.argv[2]
with open(out, "w") as f:
    for n in range(500):
        body = json.dumps({
            "action": "opened", "number": n,
            "pull_request": {"number": n, "title": f"Change {n}", "draft": False,
                             "head": {"ref": f"feature-{n}", "sha": f"{n:040x}"},
                             "base": {"ref": "main", "sha": "b" * 40},
                             "labels": [{"name": "converge/priority-2"}],
                             "body": "lorem ipsum " * 2000},
            "repository": {"full_name": "acme/app", "description": "x" * 500},
            "installation": {"id": 7}, "sender": {"login": "octocat"}}, separators=(",", ":"))
        signature = "sha256=" + hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        f.write(signature + " " + body + "\n")
PY

cat > "$WORK/webhook.lua" <<LUA
local deliveries = {}
for line in io.lines("$WORK/deliveries.txt") do
  local space = line:find(" ")
  deliveries[#deliveries + 1] = {line:sub(1, space - 1), line:sub(space + 1)}
end
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-github-event"] = "pull_request"
request = function()
  counter = counter + 1
  local d = deliveries[(counter % #deliveries) + 1]
  wrk.headers["x-hub-signature-256"] = d[1]
  wrk.headers["x-github-delivery"] = string.format("bench-%d-%d-%d", tid, counter, os.time())
  return wrk.format(nil, nil, nil, d[2])
end
LUA

body_bytes=$(head -1 "$WORK/deliveries.txt" | cut -d' ' -f2- | wc -c)
run_backend() {
  local name=$1; shift
  start_server "$@" CONVERGE_GITHUB_WEBHOOK_SECRET=$SECRET CONVERGE_API_KEYS=bench-key:admin:bench
  echo "== $name: signed 25 KB pull_request deliveries, 16 connections, $DURATION"
  CONNECTIONS=16 load "POST webhook (per KB received)" "$body_bytes" -s "$WORK/webhook.lua" \
    "http://127.0.0.1:$PORT/integrations/github/webhook"
  echo "== $name: peak RSS: $(rss_report "$SERVER_PID")"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

run_backend sqlite CONVERGE_DB_BACKEND=sqlite CONVERGE_DB_PATH="$WORK/state.db"
pg_start >/dev/null
run_backend postgres CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$CONVERGE_TEST_PG_URL"
