#!/usr/bin/env bash
# The whole test suite: installs the SDK clients the tests drive into a virtual environment
# (under target/, so a fresh clone needs nothing else), then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

export KEYRELAY_SDK_PYTHON="$PWD/$venv/bin/python"
export KEYRELAY_REQUIRE_SDK=1
cargo test --locked "$@"
