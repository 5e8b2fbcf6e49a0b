#!/usr/bin/env bash
# Builds the three functions' deployment zips the way the template deploys them:
# `cargo lambda build --release --arm64 --output-format zip` (cargo-lambda and zig from PyPI,
# in .venv-tools), and prints each zip's size. Run by .ci/run after the tests.
#   scripts/build-lambdas.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.venv-tools
if [ ! -x "$TOOLS/bin/cargo-lambda" ]; then
  echo "installing cargo-lambda from PyPI into $TOOLS" >&2
  python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q cargo-lambda ziglang >&2
fi
# First on PATH: cargo-lambda finds zig as this venv's `python3 -m ziglang`.
export PATH="$PWD/$TOOLS/bin:$PATH"
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' ||
  rustup target add aarch64-unknown-linux-gnu >&2

cargo lambda build --release --arm64 --output-format zip \
  -p converge-fn-api -p converge-fn-webhook -p converge-fn-worker
for function in api webhook worker; do
  zip="target/lambda/$function/bootstrap.zip"
  [ -s "$zip" ] || { echo "no zip for $function at $zip" >&2; exit 1; }
  printf '%-8s %s bytes\n' "$function" "$(stat -c %s "$zip")"
done
