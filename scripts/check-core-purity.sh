#!/usr/bin/env bash
# Fails when the domain crate (shared/core) reaches a database, HTTP, AWS or async-runtime crate
# through its normal or build dependencies. The domain must stay pure: adapters live elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(sqlx|sqlx-[a-z-]+|tokio|tokio-[a-z-]+|aws-[a-z-]+|aws_[a-z_]+|octocrab|axum|axum-[a-z-]+|hyper|reqwest|ureq|lambda_http|lambda_runtime|async-std|smol|rusqlite|postgres|tokio-postgres|mio)$'
crates=$(cargo tree --offline -p converge-core -e normal,build --prefix none --format '{p}' 2>/dev/null \
  || cargo tree -p converge-core -e normal,build --prefix none --format '{p}')
found=$(printf '%s\n' "$crates" | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
if [ -n "$found" ]; then
  echo "shared/core must stay pure, but its dependency tree contains:" >&2
  printf '  %s\n' $found >&2
  exit 1
fi
# No I/O from the standard library either: files, sockets, processes, environment, clock.
io_uses=$(grep -rnE 'std::(fs|net|process|env)\b|SystemTime|Instant::now|Utc::now|chrono::Local' shared/core/src || true)
if [ -n "$io_uses" ]; then
  echo "shared/core must not perform I/O, but its sources use:" >&2
  printf '%s\n' "$io_uses" >&2
  exit 1
fi
echo "core purity: ok ($(printf '%s\n' "$crates" | awk '{print $1}' | sort -u | wc -l) crates, none of sqlx, tokio, aws-*, octocrab, axum)"
