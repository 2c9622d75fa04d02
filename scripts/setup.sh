#!/usr/bin/env bash
# Installs what the tests and benchmarks need, skipping what is already there:
# - the Python environment (.venv: DuckDB, ADBC, pyarrow, moto, confluent-kafka, pyspark);
# - Apache Kafka, the broker of the tests (its jars, fetched with Maven into
#   $STRATA_TOOLS/kafka-4.4.0/libs; started by scripts/kafka-broker; needs Java 17+);
# - docker-compose, to validate docker-compose.yml (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.requirements.sha
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: Python environment up to date (.venv)"
else
  echo "setup: installing the Python environment into .venv"
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

tools="${STRATA_TOOLS:-$HOME/.cache/strata-tools}"
kafka="$tools/kafka-4.4.0"
if [ -f "$kafka/.complete" ]; then
  echo "setup: Apache Kafka present ($kafka)"
else
  command -v java >/dev/null 2>&1 || { echo "setup: Apache Kafka needs Java 17 or newer (java is not on the PATH)" >&2; exit 1; }
  command -v mvn >/dev/null 2>&1 || { echo "setup: fetching Apache Kafka needs Maven (mvn is not on the PATH)" >&2; exit 1; }
  echo "setup: fetching Apache Kafka 4.4.0 into $kafka"
  rm -rf "$kafka"
  mvn -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$kafka/libs"
  touch "$kafka/.complete"
fi

# docker-compose validates docker-compose.yml in CI (`docker-compose config`; no engine runs).
if command -v docker-compose >/dev/null 2>&1; then
  echo "setup: docker-compose present"
elif command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing docker-compose (to validate docker-compose.yml)"
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get install -y -qq docker-compose >/dev/null || {
    $sudo apt-get update -qq && $sudo apt-get install -y -qq docker-compose >/dev/null
  }
else
  echo "setup: docker-compose is missing and there is no apt-get: install docker-compose to validate docker-compose.yml" >&2
  exit 1
fi
