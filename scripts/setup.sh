#!/usr/bin/env bash
# Installs what the tests and benchmarks need, skipping what is already there:
# - the Python environment (.venv: DuckDB with its Delta extension, ADBC, pyarrow, moto,
#   confluent-kafka, pyspark, SQLAlchemy with the Flight SQL dialect);
# - Apache Kafka, the broker of the tests (its jars, fetched with Maven into
#   $STRATA_TOOLS/kafka-4.4.0/libs; started by scripts/kafka-broker; needs Java 17+);
# - the Arrow Flight SQL JDBC driver ($STRATA_TOOLS/flight-sql-jdbc-18.3.0, Maven);
# - delta-spark, for Spark reading the lake ($STRATA_TOOLS/delta-spark-4.0.0, Maven);
# - Hadoop's MiniDFSCluster, HDFS for the tests ($STRATA_TOOLS/hadoop-minicluster-3.5.0, Maven);
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

# The Arrow Flight SQL JDBC driver (DBeaver's and Tableau's), for the JDBC tests: one shaded
# jar, run by tests/python/jdbc.py with this machine's Java.
jdbc="$tools/flight-sql-jdbc-18.3.0"
if [ -f "$jdbc/.complete" ]; then
  echo "setup: Flight SQL JDBC driver present ($jdbc)"
else
  command -v mvn >/dev/null 2>&1 || { echo "setup: fetching the Flight SQL JDBC driver needs Maven (mvn is not on the PATH)" >&2; exit 1; }
  echo "setup: fetching the Flight SQL JDBC driver 18.3.0 into $jdbc"
  rm -rf "$jdbc"
  mvn -q -f scripts/jdbc/pom.xml dependency:copy-dependencies -DoutputDirectory="$jdbc"
  touch "$jdbc/.complete"
fi

# Delta Lake for Spark (pyspark is in .venv), for the tests where Spark reads the lake.
delta="$tools/delta-spark-4.0.0"
if [ -f "$delta/.complete" ]; then
  echo "setup: delta-spark present ($delta)"
else
  command -v mvn >/dev/null 2>&1 || { echo "setup: fetching delta-spark needs Maven (mvn is not on the PATH)" >&2; exit 1; }
  echo "setup: fetching delta-spark 4.0.0 into $delta"
  rm -rf "$delta"
  mvn -q -f scripts/delta/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
    -DexcludeArtifactIds=scala-library,antlr4-runtime -DoutputDirectory="$delta"
  touch "$delta/.complete"
fi

# Hadoop's MiniDFSCluster (a NameNode and a DataNode), for the tests with the lake on HDFS.
hadoop="$tools/hadoop-minicluster-3.5.0"
if [ -f "$hadoop/.complete" ]; then
  echo "setup: Hadoop minicluster present ($hadoop)"
else
  command -v mvn >/dev/null 2>&1 || { echo "setup: fetching Hadoop's minicluster needs Maven (mvn is not on the PATH)" >&2; exit 1; }
  echo "setup: fetching Hadoop's minicluster 3.5.0 into $hadoop"
  rm -rf "$hadoop"
  mvn -q -f scripts/hdfs/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$hadoop"
  touch "$hadoop/.complete"
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
