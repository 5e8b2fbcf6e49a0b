#!/usr/bin/env bash
# Criterion benchmarks. Figures depend on the machine: report medians with the machine noted.
#   scripts/bench.sh                     all benchmarks
#   scripts/bench.sh risk_eval           the risk engine only
#   scripts/bench.sh store_throughput    PostgreSQL commits and leases (starts a throwaway cluster)
#   scripts/bench.sh api                 the HTTP API under wrk, on SQLite and PostgreSQL
#   scripts/bench.sh webhook             webhook deliveries: in-process (criterion) and over HTTP (wrk)
#   scripts/bench.sh reads               queue/state, summary and the dashboard at 25,000 intents
#   scripts/bench.sh queue               intents decided, and merged, per second (batches of 512):
#                                        1 and 4 workers in process (also over four tenants) and on the GitHub fake
#   scripts/bench.sh queue-job           the queue job end to end: intents created over HTTP to
#                                        all MERGED in a local repository (release `converge serve`)
#   scripts/bench.sh cold-start          the functions' cold starts and zip sizes (scripts/cold-start.sh)
#   scripts/bench.sh export              the decision export's peak RSS at 100,000 and 1,000,000 events
#                                        (scripts/bench-export.sh)
#   scripts/bench.sh analytics           the analytics routes' latency at 1,000,000 events and 25,000
#                                        intents on PostgreSQL (scripts/bench-analytics.sh)
# At the end, the figures are printed again as one table beside the goals (scripts/lib/bench-table.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BENCH_LOG:-}" ]; then
  BENCH_LOG=$(mktemp)
  export BENCH_LOG
  status=0
  bash scripts/bench.sh "$@" 2>&1 | tee "$BENCH_LOG" || status=$?
  python3 scripts/lib/bench-table.py < "$BENCH_LOG"
  rm -f "$BENCH_LOG"
  exit "$status"
fi

# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
trap pg_stop EXIT

which=${1:-all}
shift || true
if [ "$which" = all ] || [ "$which" = risk_eval ]; then
  cargo bench -p converge-core --bench risk_eval -- "$@"
fi
if [ "$which" = all ] || [ "$which" = store_throughput ]; then
  pg_start
  cargo bench -p converge-store --bench store_throughput -- "$@"
  pg_stop
fi
if [ "$which" = all ] || [ "$which" = api ]; then
  bash scripts/bench-api.sh
fi
if [ "$which" = all ] || [ "$which" = queue ]; then
  pg_start
  cargo bench -p converge-runtime --bench queue_throughput -- "$@"
  pg_stop
fi
if [ "$which" = all ] || [ "$which" = queue-job ]; then
  cargo build --release -q -p converge-cli
  job="python3 scripts/bench-queue-job.py $PWD/target/release/converge"
  $job --intents 50 --targets 1
  $job --intents 500 --targets 10 --rounds 1
  pg_start >/dev/null
  $job --intents 50 --targets 1 --postgres "$CONVERGE_TEST_PG_URL" --psql "$(command -v psql || echo "$PG_BIN/psql")"
  $job --intents 500 --targets 10 --rounds 1 --postgres "$CONVERGE_TEST_PG_URL" --psql "$(command -v psql || echo "$PG_BIN/psql")"
  pg_stop
fi
if [ "$which" = all ] || [ "$which" = cold-start ]; then
  bash scripts/cold-start.sh
fi
if [ "$which" = all ] || [ "$which" = export ]; then
  bash scripts/bench-export.sh
fi
if [ "$which" = all ] || [ "$which" = analytics ]; then
  bash scripts/bench-analytics.sh
fi
if [ "$which" = all ] || [ "$which" = reads ]; then
  pg_start
  cargo bench -p converge-http --bench reads_at_scale -- "$@"
  pg_stop
fi
if [ "$which" = all ] || [ "$which" = webhook ]; then
  pg_start
  cargo bench -p converge-http --bench webhook -- "$@"
  pg_stop
  bash scripts/bench-webhook.sh
fi
