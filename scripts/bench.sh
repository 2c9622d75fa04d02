#!/usr/bin/env bash
# Benchmarks, outside the test suite (they need a release build and minutes of quiet):
#
#   scripts/bench.sh batch [EVENTS]      batch recompute and compaction vs DuckDB and pyspark
#   scripts/bench.sh speed [EVENTS]      ingest vs librdkafka's raw consume rate, freshness, memory
#   scripts/bench.sh ballista [EVENTS]   batch recompute on Ballista (one, then two executors) vs
#                                        the local engine, and how a Ballista run's time divides
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
cargo build --release --quiet -p strata -p strata-speed --bins --examples
strata="$CARGO_TARGET_DIR/release/strata"
work="${TMPDIR:-/tmp}/strata-bench"
case "${1:-batch}" in
  batch)
    .venv/bin/python bench/batch.py --strata "$strata" --repo "$PWD" --work "$work/batch" --events "${2:-5000000}"
    ;;
  speed)
    .venv/bin/python bench/speed.py --strata "$strata" --raw-consume "$CARGO_TARGET_DIR/release/examples/raw_consume" \
      --produce-load "$CARGO_TARGET_DIR/release/examples/produce_load" \
      --mock-broker "$CARGO_TARGET_DIR/release/examples/mock_broker" \
      --kafka-broker "$PWD/scripts/kafka-broker" --repo "$PWD" --work "$work/speed" --events "${2:-2000000}"
    ;;
  ballista)
    .venv/bin/python bench/ballista.py --strata "$strata" --repo "$PWD" --work "$work/ballista" --events "${2:-5000000}"
    ;;
  *)
    echo "usage: scripts/bench.sh batch|speed|ballista [EVENTS]" >&2
    exit 2
    ;;
esac
