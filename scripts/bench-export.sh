#!/usr/bin/env bash
# Memory benchmark of the decision export (called by scripts/bench.sh export): a release
# `converge serve` on SQLite and on PostgreSQL, each loaded with 25,000 intents and N events
# (a third each simulation.completed, risk.evaluated with a realistic payload, and
# policy.evaluated), written straight into the database. GET /v1/export/decisions (JSON lines,
# then CSV) is read whole at 100,000 and at 1,000,000 events; the server's peak RSS (VmHWM)
# must not grow with the log: the export holds one page of 500 intents at a time.
# (The rows are written by SQL, not through the API: their audit chain positions are placeholders
# the export does not read.)
set -euo pipefail
cd "$(dirname "$0")/.."

INTENTS=${BENCH_EXPORT_INTENTS:-25000}
SIZES=${BENCH_EXPORT_EVENTS:-"100000 1000000"}
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

RISK="{\"risk_score\": 41.5, \"damage_score\": 12.25, \"entropy_score\": 7.5, \"propagation_score\": 30.0, \"containment_score\": 0.8, \"signals\": {\"entropic_load\": 1.5, \"contextual_value\": 2.0, \"complexity_delta\": 3.0, \"path_dependence\": 4.0}, \"bombs\": [{\"type\": \"cascade\", \"message\": \"a change reaching far\"}], \"graph_metrics\": {\"nodes\": 8, \"edges\": 9, \"density\": 0.1607, \"components\": 2, \"pagerank_max\": 0.21, \"pagerank_top\": [{\"node\": \"src/lib.rs\", \"rank\": 0.21}, {\"node\": \"src/main.rs\", \"rank\": 0.14}]}, \"findings\": [{\"code\": \"semantic.core_target\", \"severity\": \"medium\", \"message\": \"targets a core branch\"}], \"impact_edges\": [{\"source\": \"src/lib.rs\", \"target\": \"src/main.rs\", \"weight\": 0.5}]}"
SIM='{"mergeable": true, "conflicts": [], "files_changed": ["src/lib.rs", "src/main.rs", "README.md"], "source": "feature", "target": "main"}'
POLICY='{"verdict": "ALLOW", "profile_used": "medium", "gates": [{"gate": "verification", "passed": true, "reason": "ok", "value": 1, "threshold": 1}]}'

# The rows, for a database whose schema the server has just migrated. $1: the number of events.
rows_sql() {
  local events=$1 series=$2 ts=$3 json=${4:-}
  cat <<SQL
INSERT INTO intents (id, source, target, status, created_at, created_by, risk_level, priority, semantic, technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type, updated_at, version)
SELECT 'bench-' || n, 'feature/' || n, 'main', 'VALIDATED', $ts, 'bench', 'medium', 1 + n % 5, '{}', '{}', '[]', '[]', 0, 'acme', NULL, 'api', $ts, 1
FROM $(printf "$series" 1 "$INTENTS");
INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id, payload, evidence, chain_index, chain_hash)
SELECT 'ev-' || n, 'trace-' || n, $ts,
  CASE n % 3 WHEN 0 THEN 'simulation.completed' WHEN 1 THEN 'risk.evaluated' ELSE 'policy.evaluated' END,
  'bench-' || (1 + (n / 3) % $INTENTS), NULL, 'acme',
  CASE n % 3 WHEN 0 THEN '$SIM'$json WHEN 1 THEN '$RISK'$json ELSE '$POLICY'$json END, '{}', n, 'placeholder'
FROM $(printf "$series" 0 "$((events - 1))");
INSERT INTO audit_chains (tenant, next_index, last_hash) VALUES ('acme', $events, 'placeholder');
SQL
}

measure() {
  local name=$1 events=$2
  local base="http://127.0.0.1:$PORT" idle
  idle=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  for fmt in jsonl csv; do
    local start end bytes lines
    start=$(date +%s.%N)
    curl -sf -H 'x-api-key: bench-key' "$base/v1/export/decisions?fmt=$fmt" -o "$WORK/export.$fmt"
    end=$(date +%s.%N)
    bytes=$(stat -c %s "$WORK/export.$fmt")
    lines=$(wc -l < "$WORK/export.$fmt")
    echo "   export $fmt: $lines lines, $((bytes / 1024)) KiB in $(python3 -c "print(round($end - $start, 2))") s"
  done
  echo "== $name: export at $events events and $INTENTS intents: RSS idle ${idle} kB, peak RSS: $(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status") kB"
}

pg_start >/dev/null
PSQL=$(command -v psql || echo "$PG_BIN/psql")
for events in $SIZES; do
  # SQLite: the server migrates the file, stops, the rows go in, it starts again.
  db="$WORK/export-$events.db"
  start_server CONVERGE_DB_PATH="$db" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  python3 - "$db" "$(rows_sql "$events" "(WITH RECURSIVE s(n) AS (SELECT %d UNION ALL SELECT n + 1 FROM s WHERE n < %d) SELECT n FROM s)" "'2026-12-01T00:00:00.000000Z'")" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript(sys.argv[2])
db.commit()
PY
  start_server CONVERGE_DB_PATH="$db" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  measure sqlite "$events"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  rm -f "$db"*

  url=$(python3 - "$CONVERGE_TEST_PG_URL" "$events" <<'PY'
import sys
base, events = sys.argv[1], sys.argv[2]
print(base.rsplit("/", 1)[0] + f"/export_{events}")
PY
)
  "$PSQL" -q "$CONVERGE_TEST_PG_URL" -c "DROP DATABASE IF EXISTS export_$events" -c "CREATE DATABASE export_$events"
  start_server CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$url" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  rows_sql "$events" "generate_series(%d, %d) AS n" "'2026-12-01T00:00:00Z'::timestamptz" ::jsonb | "$PSQL" -q -v ON_ERROR_STOP=1 "$url"
  start_server CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$url" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0
  measure postgres "$events"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  "$PSQL" -q "$CONVERGE_TEST_PG_URL" -c "DROP DATABASE export_$events"
done
