#!/usr/bin/env bash
# Criterion benchmarks. Figures depend on the machine: report medians with the machine noted.
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh risk_eval  one benchmark target
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  cargo bench -p converge-core --bench "$1" -- "${@:2}"
else
  cargo bench -p converge-core
fi
