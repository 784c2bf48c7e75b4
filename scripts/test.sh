#!/usr/bin/env bash
# The whole test suite: installs the SDK clients the tests drive (Python packages into a virtual
# environment, the Node packages with `npm ci`, both under target/, so a fresh clone needs nothing
# else and nothing is written into the source tree), then runs every Rust test.
# An install is skipped when its requirements are unchanged since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."

# Concurrent runs share target/: one installs at a time (the lock is released before the tests).
mkdir -p target
exec 9>target/.sdk-install.lock
if command -v flock >/dev/null; then flock 9; fi

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s tests/sdk/requirements.txt "$venv/.installed-requirements.txt"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/.installed-requirements.txt"
fi
export KEYRELAY_SDK_PYTHON="$PWD/$venv/bin/python"

node_dir=target/sdk-node
if command -v node >/dev/null && command -v npm >/dev/null; then
  if ! cmp -s tests/sdk/package-lock.json "$node_dir/.installed-lock.json" \
    || ! npm ls --prefix "$node_dir" --depth=0 >/dev/null 2>&1; then
    mkdir -p "$node_dir"
    cp tests/sdk/package.json tests/sdk/package-lock.json "$node_dir/"
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null
    cp tests/sdk/package-lock.json "$node_dir/.installed-lock.json"
  fi
  export KEYRELAY_SDK_NODE_DIR="$PWD/$node_dir"
else
  echo "scripts/test.sh: node/npm not on PATH: the Node SDK test will fail" >&2
fi

exec 9>&-
export KEYRELAY_REQUIRE_SDK=1
cargo test --locked "$@"
