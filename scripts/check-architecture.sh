#!/usr/bin/env bash
# The seams between crates, checked in CI (docs/architecture.md, "Rules"):
# - shared/http has no sqlx: store errors reach it classified (StoreError), not as driver errors;
# - only shared/runtime wires services (stores, ports, queues, secrets): the functions, the CLI
#   and HTTP take them from runtime::services;
# - only the store's lease code issues merge permits;
# - no handler checks a role or scope by hand: the route table does (routes/mod.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
failed=0
fail() { echo "architecture: $*" >&2; failed=1; }

if grep -Eq '^sqlx' shared/http/Cargo.toml; then
  fail "shared/http depends on sqlx"
fi

wiring='Store::open\(|Store::from_url\(|QueueProcessor::with_ports\(|RoutedPorts::new\(|SqsQueue::from_settings\(|Secrets::shared\(|secrets::store_config\(|secrets::github_app\('
# The CLI's backfill opens the two stores it is given by URL: that is its job, not wiring.
if hits=$(grep -rnE "$wiring" --include=*.rs functions shared/http/src cli/src | grep -v 'cli/src/state.rs:.*Store::\(open_existing\|from_url\)(&\(from\|to\)'); then
  fail "services built outside shared/runtime:"$'\n'"$hits"
fi

if hits=$(grep -rn 'MergePermit::issue(' --include=*.rs . | grep -v '^./target/' | grep -v '^./shared/store/src/' | grep -v '^./shared/core/src/'); then
  fail "a merge permit issued outside the store's lease code:"$'\n'"$hits"
fi

if hits=$(grep -rn '\.require(' shared/http/src/routes | grep -v 'shared/http/src/routes/mod.rs'); then
  fail "a handler checks a role or scope by hand (declare it in the route table):"$'\n'"$hits"
fi

exit "$failed"
