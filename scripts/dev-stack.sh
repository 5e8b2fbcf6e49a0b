#!/usr/bin/env bash
# The whole serverless stack on this machine, in one command:
#   - PostgreSQL (a throwaway cluster);
#   - the AWS emulator (moto server, or LocalStack with --emulator localstack), reached only
#     through the AWS SDK (AWS_ENDPOINT_URL),
#     with the queue, its DLQ and the secrets of infra/local-stack.json (the queues' settings
#     come from template.yaml's MergeQueue and MergeDeadLetterQueue);
#   - the three functions under `cargo lambda watch` (the Lambda runtime emulator);
#   - a bridge feeding the queue to the worker function like the event source mapping, and
#     the sweep's schedule;
#   - the GitHub fake with a demo repository and pull request.
# It prints the URLs, then runs until Ctrl-C (or SIGTERM), which stops everything it started.
#
#   scripts/dev-stack.sh [--port 9050] [--emulator moto|localstack]
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=9050
EMULATOR=moto
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --emulator) EMULATOR=$2; shift 2 ;;
    *) echo "usage: scripts/dev-stack.sh [--port N] [--emulator moto|localstack]" >&2; exit 2 ;;
  esac
done
case "$EMULATOR" in
  moto | localstack) export AWS_EMULATOR=$EMULATOR ;;
  *) echo "--emulator must be moto or localstack" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
# shellcheck source=scripts/lib/aws-emulator.sh
. scripts/lib/aws-emulator.sh

WORK=$(mktemp -d /tmp/converge-stack.XXXXXX)
PIDS=()
stop_all() {
  trap - EXIT INT TERM
  echo "stopping the local stack" >&2
  for pid in "${PIDS[@]}"; do
    # Each was started in its own process group: end the group (cargo-lambda's functions too).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  aws_emulator_stop
  pg_stop
  rm -rf "$WORK"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in its own process group, logging to $WORK/<name>.log; remembers its pid.
start() {
  local name=$1; shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
}

# cargo-lambda (and zig) from PyPI, in a virtual environment of their own.
TOOLS=.venv-tools
if [ ! -x "$TOOLS/bin/cargo-lambda" ]; then
  echo "installing cargo-lambda from PyPI into $TOOLS" >&2
  python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q cargo-lambda ziglang >&2
fi
# Last on PATH: its python3 must not hide the one moto is installed for.
export PATH="$PATH:$PWD/$TOOLS/bin"

pg_start >&2
psql_url=$CONVERGE_TEST_PG_URL
psql -q "$psql_url" -c "CREATE DATABASE converge" >/dev/null
DSN=${psql_url%/postgres}/converge
aws_emulator_start >&2

cargo build -q -p converge-testkit --bin github-fake
start github-fake target/debug/github-fake --key-out "$WORK/app-key.pem"
for _ in $(seq 1 100); do grep -q '^ready=1' "$WORK/github-fake.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready=1' "$WORK/github-fake.log" || { cat "$WORK/github-fake.log" >&2; exit 1; }
fact() { sed -n "s/^$1=//p" "$WORK/github-fake.log"; }

WEBHOOK_SECRET=local-webhook-secret
while IFS= read -r setting; do export "${setting?}"; done < <(
  python3 scripts/lib/local-resources.py infra/local-stack.json "$WEBHOOK_SECRET" "$WORK/app-key.pem" "$DSN")

export CONVERGE_DB_BACKEND=postgres
export CONVERGE_API_KEYS=dev-key:admin:me
export CONVERGE_GITHUB_APP_ID=$(fact app_id)
export CONVERGE_GITHUB_API_URL=$(fact github_url)
export CONVERGE_GITHUB_CHECK_MAP=lint=ci/lint
export CONVERGE_WORKER_AUTO_CONFIRM=1
export CONVERGE_WORKER_POLL_INTERVAL=1
export CONVERGE_WORKER_BATCH_SIZE=10
unset CONVERGE_PG_DSN CONVERGE_DB_PATH CONVERGE_REPO_PATH

start functions cargo lambda watch -A 127.0.0.1 -P "$PORT"
RUNTIME=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do curl -sf -o /dev/null "$RUNTIME/lambda-url/api/health" && break; sleep 0.5; done
curl -sf -o /dev/null "$RUNTIME/lambda-url/api/health" || { tail -20 "$WORK/functions.log" >&2; exit 1; }
start bridge python3 scripts/lib/sqs-bridge.py "$CONVERGE_QUEUE_URL" "$RUNTIME/2015-03-31/functions/worker/invocations"

cat <<EOF
Converge's local stack is up (logs in $WORK):
  API          $RUNTIME/lambda-url/api/v1/intents   (x-api-key: dev-key)
  webhook      $RUNTIME/lambda-url/webhook/integrations/github/webhook   (secret: $WEBHOOK_SECRET)
  worker       $RUNTIME/2015-03-31/functions/worker/invocations   (fed from $CONVERGE_QUEUE_URL)
  GitHub fake  $CONVERGE_GITHUB_API_URL   ($(fact repo), pull request #$(fact pull))
  AWS          $AWS_ENDPOINT_URL ($EMULATOR)
Ctrl-C stops everything.
stack api=$RUNTIME/lambda-url/api webhook=$RUNTIME/lambda-url/webhook/integrations/github/webhook secret=$WEBHOOK_SECRET repo=$(fact repo) repo_path=$(fact repo_path) pull=$(fact pull) head=$(fact head_sha) base=$(fact base_sha) pids=${PIDS[*]}
EOF
wait
