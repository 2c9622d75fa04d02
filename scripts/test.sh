#!/usr/bin/env bash
# The whole test suite: installs what the tests need (skipped when present), then runs
# every Rust test, unit and end to end, in one build profile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export STRATA_PYTHON="$PWD/.venv/bin/python"
exec cargo test --workspace --all-targets "$@"
