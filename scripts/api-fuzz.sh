#!/usr/bin/env bash
# Property-based tests of the HTTP API from its own OpenAPI document: schemathesis (from PyPI)
# against `converge serve` on SQLite, then on PostgreSQL when CONVERGE_TEST_PG_URL is set (as
# scripts/test.sh sets it). Every check is on: no server error, answers that match the
# document (status, headers, content type, body schema), valid requests accepted, invalid ones
# refused, auth not ignored. Bounded and repeatable: a fixed number of examples per operation
# (API_FUZZ_EXAMPLES, 60) from a fixed seed on one worker, so a run tries the same cases on
# any machine (a time budget would make a faster machine try more); a run that takes longer
# than API_FUZZ_MAX_SECONDS (900) per schemathesis call is stopped and fails.
# Prints one closing line: `api fuzz: N passed, N failed` (one per backend).
#
# Uses target/debug/converge (built by `cargo test`); pass CONVERGE_BIN to use another.
set -uo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${API_FUZZ_EXAMPLES:-60}"
MAX_SECONDS="${API_FUZZ_MAX_SECONDS:-900}"
bin="${CONVERGE_BIN:-target/debug/converge}"
venv="${API_FUZZ_VENV:-.venv-fuzz}"
work=$(mktemp -d /tmp/converge-fuzz.XXXXXX)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "schemathesis $SCHEMATHESIS_VERSION not found: installing it from PyPI into $venv" >&2
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2 ||
    { echo "api fuzz: 0 passed, 1 failed (schemathesis could not be installed)"; exit 1; }
fi
[ -x "$bin" ] || { echo "api fuzz: $bin is missing (run cargo build first)"; echo "api fuzz: 0 passed, 1 failed"; exit 1; }

# A repository with a target branch that no work tree has checked out, so that validate,
# simulate and queue run have something real to work on.
git_fuzz() { git -C "$work/repo" -c user.name=fuzz -c user.email=fuzz@localhost "$@"; }
git init -q -b main "$work/repo" && git_fuzz commit -q --allow-empty -m initial &&
  git_fuzz checkout -q -b work && echo change >"$work/repo/change.txt" && git_fuzz add change.txt &&
  git_fuzz commit -q -m change

FUZZ_KEY=fuzz-admin-key
passed=0
failed=0
# One schemathesis run against ADDRESS (settings: scripts/lib/schemathesis.toml), stopped
# after MAX_SECONDS; the rest are filter options.
fuzz() {
  local address=$1; shift
  CONVERGE_FUZZ_KEY=$FUZZ_KEY PYTHONPATH=scripts/lib timeout "$MAX_SECONDS" \
    "$venv/bin/st" --config-file scripts/lib/schemathesis.toml --no-color run \
    "$address/v1/openapi.json" --url "$address" --checks all --max-examples "$EXAMPLES" "$@"
}
# Whether the fuzzer created intents of its own at ADDRESS (more than the five seeded).
created_by_fuzzer() {
  local count
  count=$(curl -sf -H "x-api-key: $FUZZ_KEY" "$1/v1/intents?limit=500" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["intents"]))') || count=0
  echo "api fuzz: $count intents after the run"
  [ "$count" -gt 5 ] || { echo "api fuzz: the fuzzer created no intent: was its key refused?" >&2; return 1; }
}
run_backend() {
  local name=$1; shift
  local out="$work/$name.out" port_line address
  rm -f "$work/state.db"
  # The fuzzer probes every operation with a wrong key from one address, which the failed-auth
  # throttle would soon answer with 429 for the valid key too: allow it that many failures.
  env "$@" CONVERGE_API_KEYS="$FUZZ_KEY:admin:fuzz" CONVERGE_REPO_PATH="$work/repo" \
    CONVERGE_RATE_LIMIT_ENABLED=0 CONVERGE_AUTH_FREE_FAILURES=1000000 RUST_LOG=warn \
    "$bin" serve --port 0 >"$out" 2>"$work/$name.err" &
  server=$!
  for _ in $(seq 1 100); do grep -q 'http://' "$work/$name.err" 2>/dev/null && break; sleep 0.1; done
  port_line=$(grep -o 'http://[0-9.:]*' "$work/$name.err" | head -1)
  if [ -z "$port_line" ]; then
    echo "api fuzz ($name): the server did not start" >&2; tail -20 "$work/$name.err" >&2
    failed=$((failed + 1)); return
  fi
  address=$port_line
  # The intents of the dictionary in scripts/lib/schemathesis.toml.
  for n in 1 2 3 4 5; do
    curl -sf -o /dev/null -H "x-api-key: $FUZZ_KEY" -H 'content-type: application/json' \
      -d "{\"id\": \"fuzz-$n\", \"source\": \"work\"}" "$address/v1/intents" ||
      { echo "api fuzz ($name): could not create intent fuzz-$n" >&2; failed=$((failed + 1)); return; }
  done
  # Intake stays open while the fuzzer creates intents (an operator's choice: left on auto, the
  # debt its own intents pile up would start throttling them); setting the mode, which would
  # refuse every later creation, runs alone at the end like key rotation.
  curl -sf -o /dev/null -H "x-api-key: $FUZZ_KEY" -H 'content-type: application/json' \
    -d '{"mode": "open", "reason": "fuzzing"}' "$address/v1/intake/mode" ||
    { echo "api fuzz ($name): could not open intake" >&2; failed=$((failed + 1)); return; }
  echo "api fuzz ($name): $address, $EXAMPLES examples per operation"
  # Key rotation retires the fuzzer's own key, so it runs alone, after everything else. In
  # between: the fuzzer's key really worked (401s alone would pass every check), as the
  # intents it created besides the five seeded show.
  if fuzz "$address" --exclude-path-regex 'keys/rotate$|intake/mode$' &&
    created_by_fuzzer "$address" && fuzz "$address" --include-path-regex 'intake/mode$' &&
    fuzz "$address" --include-path-regex 'keys/rotate$'; then
    passed=$((passed + 1))
  else
    echo "api fuzz ($name): schemathesis found problems (above)" >&2
    failed=$((failed + 1))
  fi
  if grep -qE 'panicked|ERROR' "$work/$name.err"; then
    echo "api fuzz ($name): the server logged errors:" >&2; grep -E 'panicked|ERROR' "$work/$name.err" | head -20 >&2
    failed=$((failed + 1))
  fi
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; server=""
}

# SQLite always; PostgreSQL when a server is at hand.
run_backend sqlite CONVERGE_DB_BACKEND=sqlite CONVERGE_DB_PATH="$work/state.db"
if [ -n "${CONVERGE_TEST_PG_URL:-}" ]; then
  db="converge_fuzz_$$"
  # shellcheck source=scripts/lib/postgres.sh
  . scripts/lib/postgres.sh
  # The server's own directory (pg_find_bin may name a directory of links to it).
  psql="$(dirname "$(readlink -f "$(pg_find_bin)/initdb")")/psql"
  if "$psql" "$CONVERGE_TEST_PG_URL" -qc "CREATE DATABASE $db" >/dev/null; then
    run_backend postgres CONVERGE_DB_BACKEND=postgres CONVERGE_PG_DSN="${CONVERGE_TEST_PG_URL%/*}/$db"
  else
    echo "api fuzz (postgres): could not create database $db" >&2
    failed=$((failed + 1))
  fi
fi

echo "api fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
