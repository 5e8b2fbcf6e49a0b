#!/usr/bin/env bash
# The test command: everything CI checks, from a fresh clone, on one build profile (dev).
# Starts what the suites need (an ephemeral PostgreSQL and the AWS emulator; the GitHub fake and
# headless Chromium, installed here when missing, are started by the tests that use them) and
# tears them down on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A run from a fresh clone gains nothing from incremental caches, which would double the size of
# target/ (CI's disk is not large); set CARGO_INCREMENTAL=1 to keep them while iterating.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The parity fixtures live beside the repository (../shared); CI lays them out the same way.
# Pinned, like the snapshot settings: a variable left in a developer's shell must not point the
# run elsewhere, accept changed snapshots, or pass failing ones.
export CONVERGE_FIXTURES_DIR="$(cd .. && pwd)/shared/fixtures/risk"
export CONVERGE_ANALYTICS_FIXTURES_DIR="$(cd .. && pwd)/shared/fixtures/analytics"
export INSTA_UPDATE=no INSTA_FORCE_PASS=0

step() { printf '\n== %s\n' "$*"; }

# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
# shellcheck source=scripts/lib/aws-emulator.sh
. scripts/lib/aws-emulator.sh
# shellcheck source=scripts/lib/browser.sh
. scripts/lib/browser.sh
# shellcheck source=scripts/lib/template-tools.sh
. scripts/lib/template-tools.sh
# shellcheck source=scripts/lib/cargo-deny.sh
. scripts/lib/cargo-deny.sh
log=$(mktemp)
cleanup() { pg_stop; aws_emulator_stop; rm -f "$log"; }
trap cleanup EXIT

# Free space before and after: a full disk shows up as a linker crash, far from its cause.
disk_report() {
  local free target_size
  free=$(df -h --output=avail . | tail -1 | tr -d ' ')
  # No target/ yet on a fresh clone: du fails, which pipefail would make fatal.
  target_size=$( (du -sh target 2>/dev/null || true) | cut -f1)
  echo "disk: $free free; target/ ${target_size:-absent}"
}
disk_report

step "format"
cargo fmt --all -- --check

step "domain purity"
bash scripts/check-core-purity.sh

step "crate seams"
bash scripts/check-architecture.sh

step "template.yaml (cfn-lint, SAM transform)"
template_tools_install_if_missing
python3 scripts/check-template.py template.yaml

step "dependencies (cargo deny: licenses, bans, sources)"
cargo_deny_install_if_missing
cargo_deny_check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs (cargo doc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "services"
pg_start
aws_emulator_start
browser_install_if_missing

step "tests"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# A test binary that aborts (a crash, an abort in a test) prints no closing line, and one that
# does not build never runs: count those as failures too, so the closing line below can never
# say "0 failed" of a failing run.
started=$(grep -cE '^ +(Running|Doc-tests) ' "$log" || true)
finished=$(grep -cE '^test result: ' "$log" || true)
unfinished=$((started > finished ? started - finished : 0))
if [ "$status" != 0 ] && [ "$unfinished" = 0 ] && ! grep -qE '^test result: .* [1-9][0-9]* failed' "$log"; then
  unfinished=1 # cargo failed before or outside the binaries (a build error)
fi

# After cargo's run, which holds the build directory: the stack builds and runs its functions.
step "local stack (scripts/dev-stack.sh end to end)"
bash scripts/test-local-stack.sh 2>&1 | tee -a "$log"
stack_status=${PIPESTATUS[0]}
[ "$status" = 0 ] && status=$stack_status

step "API fuzzing (schemathesis against converge serve, both backends)"
bash scripts/api-fuzz.sh 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
[ "$status" = 0 ] && status=$fuzz_status
set -e
# One closing line for the whole run: cargo prints one per test binary, the last of which is
# often a crate without tests.
{
  grep -E '^test result: ' "$log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/'
  grep -E '^(local stack|api fuzz): [0-9]+ passed' "$log" | sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/'
  echo "0 $unfinished"
} | awk '{ passed += $1; failed += $2 } END { printf "\ntests: %d passed, %d failed\n", passed, failed }'
disk_report
exit "$status"
