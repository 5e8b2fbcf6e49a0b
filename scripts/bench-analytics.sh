#!/usr/bin/env bash
# Latency of the analytics routes at scale (called by scripts/bench.sh analytics): a release
# `converge serve` on PostgreSQL loaded with 25,000 intents and 1,000,000 events of one tenant
# spread evenly over the last 30 days (simulations, risk and policy evaluations, merges,
# rejections, requeues, semantic conflicts, checks; about 33,000 events a day), written
# straight into the database with the day tallies `commit` would have kept, and 720 hourly
# health snapshots. Each route is asked 20 times after one warm-up; the median and the
# slowest are printed. The goal (issue 18): each answers within 100 ms.
# (The rows are written by SQL, not through the API: their audit chain positions are
# placeholders the analytics do not read.)
set -euo pipefail
cd "$(dirname "$0")/.."

INTENTS=${BENCH_ANALYTICS_INTENTS:-25000}
EVENTS=${BENCH_ANALYTICS_EVENTS:-1000000}
ROUNDS=${BENCH_ANALYTICS_ROUNDS:-20}
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

pg_start >/dev/null
PSQL=$(command -v psql || echo "$PG_BIN/psql")
url="${CONVERGE_TEST_PG_URL%/*}/analytics_bench"
"$PSQL" -q "$CONVERGE_TEST_PG_URL" -c "DROP DATABASE IF EXISTS analytics_bench" -c "CREATE DATABASE analytics_bench"
env=(CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="$url" CONVERGE_API_KEYS="bench-key:admin:bench" CONVERGE_RATE_LIMIT_ENABLED=0)
start_server "${env[@]}"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

"$PSQL" -q -v ON_ERROR_STOP=1 "$url" <<SQL
INSERT INTO intents (id, source, target, status, created_at, created_by, risk_level, priority, semantic, technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type, updated_at, version)
SELECT 'bench-' || n, 'feature/' || n, 'main',
  CASE n % 4 WHEN 0 THEN 'VALIDATED' WHEN 1 THEN 'QUEUED' WHEN 2 THEN 'MERGED' ELSE 'READY' END,
  now() - (n % 720) * interval '1 hour', 'bench', 'medium', 1 + n % 5, '{}', '{}', '[]', '[]', n % 3, 'acme', NULL, 'api', now(), 1
FROM generate_series(1, $INTENTS) AS n;
INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id, payload, evidence, chain_index, chain_hash)
SELECT 'ev-' || n, 'trace-' || n, now() - n * (interval '30 days' / $EVENTS),
  CASE n % 10 WHEN 0 THEN 'simulation.completed' WHEN 1 THEN 'simulation.completed' WHEN 2 THEN 'risk.evaluated'
    WHEN 3 THEN 'risk.evaluated' WHEN 4 THEN 'policy.evaluated' WHEN 5 THEN 'intent.merged'
    WHEN 6 THEN 'intent.rejected' WHEN 7 THEN 'intent.requeued' WHEN 8 THEN 'semantic_conflict.detected'
    ELSE 'check.completed' END,
  'bench-' || (1 + n % $INTENTS), NULL, 'acme',
  CASE n % 10
    WHEN 0 THEN '{"mergeable": true, "conflicts": [], "files_changed": ["src/lib.rs"]}'::jsonb
    WHEN 1 THEN jsonb_build_object('mergeable', n % 7 <> 0, 'conflicts', '[]'::jsonb)
    WHEN 2 THEN jsonb_build_object('risk_score', 20 + n % 50, 'entropy_score', (n % 400) / 10.0, 'propagation_score', n % 80, 'containment_score', (n % 100) / 100.0)
    WHEN 3 THEN jsonb_build_object('risk_score', 30 + n % 40, 'entropy_score', (n % 300) / 10.0, 'propagation_score', n % 60, 'containment_score', (n % 90) / 100.0)
    WHEN 4 THEN '{"verdict": "ALLOW", "profile_used": "medium"}'::jsonb
    ELSE '{}'::jsonb END,
  '{}', n, 'placeholder'
FROM generate_series(1, $EVENTS) AS n;
INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id, payload, evidence, chain_index, chain_hash)
SELECT 'snap-' || n, 'trace-snap', now() - n * interval '1 hour', 'health.snapshot', NULL, NULL, 'acme',
  jsonb_build_object('repo_health_score', 60 + n % 30, 'entropy_score', 10 + n % 7, 'conflict_rate', (n % 20) / 100.0),
  '{}', $EVENTS + n, 'placeholder'
FROM generate_series(1, 720) AS n;
INSERT INTO audit_chains (tenant, next_index, last_hash) VALUES ('acme', $EVENTS + 721, 'placeholder');
INSERT INTO event_tallies (tenant, event_type, day, events, mergeable)
SELECT COALESCE(tenant_id, ''), event_type, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
       COUNT(*), COUNT(*) FILTER (WHERE payload->'mergeable' = 'true'::jsonb)
FROM events GROUP BY 1, 2, 3
ON CONFLICT (tenant, event_type, day) DO UPDATE SET events = excluded.events, mergeable = excluded.mergeable;
ANALYZE;
SQL

start_server "${env[@]}"
echo "== postgres: analytics routes at $EVENTS events and $INTENTS intents (median and slowest of $ROUNDS)"
for route in /v1/health/repo/now /v1/verification/debt /v1/compliance/report /v1/compliance/alerts \
  /v1/predictions /v1/metrics/integration /v1/health/predict /v1/health/repo/trend \
  /v1/verification/debt/trend "/v1/health/change?intent_id=bench-7" /v1/health/entropy/trend \
  /v1/compliance/thresholds /v1/summary /v1/dashboard /v1/dashboard/alerts; do
  python3 - "http://127.0.0.1:$PORT$route" "$ROUNDS" "$route" <<'PY'
import statistics, sys, time, urllib.request
url, rounds, route = sys.argv[1], int(sys.argv[2]), sys.argv[3]
request = urllib.request.Request(url, headers={"x-api-key": "bench-key"})
def once():
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - start) * 1000
once()
times = [once() for _ in range(rounds)]
print(f"   analytics {route}: median {statistics.median(times):.1f} ms, slowest {max(times):.1f} ms")
PY
done
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
"$PSQL" -q "$CONVERGE_TEST_PG_URL" -c "DROP DATABASE analytics_bench"
