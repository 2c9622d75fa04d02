#!/usr/bin/env bash
# Benchmarks, outside the test suite (they need a release build and minutes of quiet):
#
#   scripts/bench.sh batch [EVENTS]      batch recompute and compaction vs DuckDB and pyspark
#   scripts/bench.sh speed [EVENTS] [--profile]
#                                        ingest vs librdkafka's raw consume rate, cost per event
#                                        (records per CPU-second; --profile: where it goes),
#                                        freshness, memory
#   scripts/bench.sh ballista [EVENTS]   batch recompute on Ballista (one, then two executors) vs
#                                        the local engine, and how a Ballista run's time divides
#   scripts/bench.sh engines [EVENTS]    the speed layer's two views as a Flink SQL job (PyFlink) and a
#                                        Spark Structured Streaming job: events per CPU-second, freshness
#   scripts/bench.sh history [DAYS]      queries over DAYS (30) days of 1-minute windows of 300 groups,
#                                        live speed states merged, vs DuckDB reading the view's Parquet
#   scripts/bench.sh transfer [EVENTS]   SELECT * of a raw table over Flight SQL vs a pyarrow.flight
#                                        server streaming the same Parquet files
#   scripts/bench.sh decode [EVENTS]     the speed layer's JSON decoding alone, on one core: ns per
#                                        record of a generated clickstream
#   scripts/bench.sh plan [SEGMENTS...]  a point query of a view planned and run, phase by phase,
#                                        as the speed layer's state batches grow (10 100 400 1000)
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
cargo build --release --quiet -p strata -p strata-speed -p strata-serving --bins --examples
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
      --kafka-broker "$PWD/scripts/kafka-broker" --repo "$PWD" --work "$work/speed" --events "${2:-2000000}" "${@:3}"
    ;;
  ballista)
    .venv/bin/python bench/ballista.py --strata "$strata" --repo "$PWD" --work "$work/ballista" --events "${2:-5000000}"
    ;;
  engines)
    # PyFlink in an environment of its own, Flink's and Spark's Kafka connectors: fetched
    # once into $STRATA_TOOLS, with the functions scripts/setup.sh uses.
    . scripts/tools.sh
    pyflink="$tools/pyflink-2.2.1"
    venv_install "PyFlink 2.2.1" "$pyflink" scripts/flink/requirements.txt
    flink_kafka="$tools/flink-sql-connector-kafka-5.0.0-2.2"
    maven_fetch "Flink's Kafka SQL connector 5.0.0-2.2" "$flink_kafka" scripts/flink/pom.xml \
      -DexcludeTransitive=true -DoutputDirectory="$flink_kafka"
    spark_kafka="$tools/spark-sql-kafka-4.0.1"
    maven_fetch "Spark's Kafka connector 4.0.1" "$spark_kafka" scripts/spark-kafka/pom.xml -DincludeScope=runtime \
      -DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2 \
      -DoutputDirectory="$spark_kafka"
    .venv/bin/python bench/engines.py --strata "$strata" --produce-load "$CARGO_TARGET_DIR/release/examples/produce_load" \
      --kafka-broker "$PWD/scripts/kafka-broker" --pyflink "$pyflink/bin/python" --flink-jars "$flink_kafka"/*.jar \
      --spark-jars "$spark_kafka"/*.jar --repo "$PWD" --work "$work/engines" --events "${2:-2000000}" "${@:3}"
    ;;
  history)
    .venv/bin/python bench/history.py --strata "$strata" --kafka-broker "$PWD/scripts/kafka-broker" --repo "$PWD" \
      --work "$work/history" --days "${2:-30}" "${@:3}"
    ;;
  transfer)
    .venv/bin/python bench/transfer.py --strata "$strata" --repo "$PWD" --work "$work/transfer" --events "${2:-5000000}"
    ;;
  decode)
    mkdir -p "$work/decode"
    "$strata" generate --events "${2:-1000000}" --out "$work/decode/events.jsonl"
    "$CARGO_TARGET_DIR/release/examples/decode_rate" strata.example.toml "$work/decode/events.jsonl"
    ;;
  plan)
    shift
    "$CARGO_TARGET_DIR/release/examples/plan_rate" strata.example.toml "$@"
    ;;
  *)
    echo "usage: scripts/bench.sh batch|speed|ballista|engines|history|transfer|decode|plan [EVENTS|DAYS|SEGMENTS...]" >&2
    exit 2
    ;;
esac
