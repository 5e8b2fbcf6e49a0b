#!/usr/bin/env bash
# Cold starts of the three function binaries, and the sizes of their deployment zips. Each
# binary (release profile: LTO, stripped — what Lambda gets) is started against a Lambda
# Runtime API emulator (scripts/lib/lambda-runtime.py) and timed from process start to its
# first answer: the sample event of events/. The store is SQLite, migrated by a first run;
# the worker's queue is on the AWS emulator. Five runs each; the median is reported.
# Built for this machine's architecture; `cargo lambda build --release --arm64` gives the
# arm64 zips the template deploys.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/aws-emulator.sh
. scripts/lib/aws-emulator.sh
work=$(mktemp -d)
trap 'aws_emulator_stop; rm -rf "$work"' EXIT

cargo build --release -q -p converge-fn-api -p converge-fn-webhook -p converge-fn-worker
aws_emulator_start >/dev/null
queue_url=$(python3 -c 'import boto3; print(boto3.client("sqs").create_queue(QueueName="cold-start")["QueueUrl"])')
export CONVERGE_DB_PATH="$work/state.db" CONVERGE_API_KEYS=dev-key:admin:me \
  CONVERGE_GITHUB_WEBHOOK_SECRET=dev-webhook-secret CONVERGE_QUEUE_URL="$queue_url" CONVERGE_LOG=warn

printf '%-8s %10s %12s %16s\n' function zip_bytes binary_bytes cold_start_ms
for fn in api webhook worker; do
  case $fn in
    api) event=events/api-list-intents.json ;;
    webhook) event=events/webhook-ping.json ;;
    worker) event=events/sqs-batch.json ;;
  esac
  zip="target/lambda-zips/$fn.zip"
  mkdir -p target/lambda-zips
  python3 - "$zip" "target/release/$fn" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(sys.argv[2], "rb") as f:
        z.writestr(info, f.read())
PY
  python3 scripts/lib/lambda-runtime.py "$fn" "$event" "target/release/$fn" >/dev/null # migrates
  runs=()
  for _ in 1 2 3 4 5; do
    runs+=("$(python3 scripts/lib/lambda-runtime.py "$fn" "$event" "target/release/$fn" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["cold_start_ms"])')")
  done
  median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 3p)
  printf '%-8s %10s %12s %16s\n' "$fn" "$(stat -c %s "$zip")" "$(stat -c %s "target/release/$fn")" "$median"
done
