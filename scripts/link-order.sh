#!/usr/bin/env bash
# Regenerates cli/link-order.txt, the functions a `converge serve` runs, which the release
# build places together (cli/build.rs says why: about 6 MiB less resident code). Run it after
# changes that move the request paths or the dependencies, when `scripts/bench.sh` shows the
# server's mapped files growing back:
#   scripts/link-order.sh
# It builds the release binary with a linker map, runs the benchmarks' own workloads briefly
# against that binary under valgrind's callgrind (every function executed is seen, however
# rarely: the API and webhook loads on SQLite and PostgreSQL, and the queue job with its
# worker), then once more natively under `perf record` (sampled: the code a CPU feature selects
# at run time, which valgrind's emulated CPU lacks), and writes the executed functions'
# symbols. Takes about five minutes after a warm build. The runs answer slowly: their figures
# mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq valgrind >/dev/null; } || true
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

CONVERGE_LINK_MAP="$WORK/converge.map" cargo build --release -q -p converge-cli
cp target/release/converge "$WORK/converge"
mkdir "$WORK/dumps"
cat > "$WORK/under-valgrind" <<SH
#!/bin/sh
exec valgrind -q --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
  --callgrind-out-file="$WORK/dumps/%p" "$WORK/converge" "\$@"
SH
chmod +x "$WORK/under-valgrind"

mkdir "$WORK/samples"
cat > "$WORK/under-perf" <<SH
#!/bin/sh
exec perf record -q -F 4999 -o "$WORK/samples/\$\$.data" "$WORK/converge" "\$@"
SH
chmod +x "$WORK/under-perf"

workloads() { # $1: the wrapper that runs the binary
  BENCH_BIN="$1" BENCH_DURATION=3s bash scripts/bench-api.sh > "$WORK/api.log"
  BENCH_BIN="$1" BENCH_DURATION=3s bash scripts/bench-webhook.sh > "$WORK/webhook.log"
  python3 scripts/bench-queue-job.py "$1" --intents 20 --targets 2 --rounds 1 > "$WORK/queue.log"
  # The benchmarks stop their servers without waiting for them: each writes as it exits.
  for _ in $(seq 1 150); do pgrep -f "$WORK/converge" >/dev/null || break; sleep 0.2; done
  pkill -f "$WORK/converge" || true
}
echo "running the workloads under valgrind" >&2
workloads "$WORK/under-valgrind"
samples=()
if command -v perf >/dev/null; then
  echo "running the workloads under perf" >&2
  workloads "$WORK/under-perf"
  for data in "$WORK"/samples/*.data; do
    perf script -i "$data" --show-mmap-events -F ip > "$data.txt" 2>/dev/null && samples+=("$data.txt")
  done
else
  echo "perf not found: code chosen by CPU features at run time is left out" >&2
fi

# Written beside, then moved: a failure leaves the old list as it was.
python3 scripts/lib/link-order.py "$WORK/converge.map" "$WORK/converge" "$WORK"/dumps/* \
  ${samples[@]+--samples "${samples[@]}"} > "$WORK/link-order.txt"
mv "$WORK/link-order.txt" cli/link-order.txt
echo "cli/link-order.txt: $(wc -l < cli/link-order.txt) functions; relinking" >&2
cargo build --release -q -p converge-cli
