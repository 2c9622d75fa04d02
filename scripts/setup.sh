#!/usr/bin/env bash
# Installs what the tests and benchmarks need, skipping what is already there:
# - the Python environment (.venv: DuckDB with its Delta extension, ADBC, pyarrow, moto,
#   confluent-kafka, pyspark, SQLAlchemy with the Flight SQL dialect);
# - Apache Kafka, the broker of the tests (its jars, fetched with Maven into
#   $STRATA_TOOLS/kafka-4.4.0/libs; started by scripts/kafka-broker; needs Java 17+);
# - the Arrow Flight SQL JDBC driver ($STRATA_TOOLS/flight-sql-jdbc-18.2.0, Maven);
# - delta-spark, for Spark reading the lake ($STRATA_TOOLS/delta-spark-4.0.0, Maven);
# - Hadoop's MiniDFSCluster, HDFS for the tests ($STRATA_TOOLS/hadoop-minicluster-3.5.0, Maven);
# - Apache Superset 6.1.0 with the Flight SQL dialect ($STRATA_TOOLS/superset-6.1.0, a venv);
# - docker-compose, to validate docker-compose.yml, and Chromium, for Superset's chart
#   screenshot (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."

# venv_install, maven_fetch, $tools: scripts/tools.sh.
. scripts/tools.sh
venv_install "the Python environment" .venv scripts/requirements.txt

command -v java >/dev/null 2>&1 || { echo "setup: the tests' Java tools need Java 17 or newer (java is not on the PATH)" >&2; exit 1; }

kafka="$tools/kafka-4.4.0"
maven_fetch "Apache Kafka 4.4.0" "$kafka" scripts/kafka/pom.xml -DoutputDirectory="$kafka/libs"
# The Arrow Flight SQL JDBC driver (DBeaver's and Tableau's), for the JDBC tests: one shaded
# jar, run by tests/python/jdbc.py with this machine's Java.
jdbc="$tools/flight-sql-jdbc-18.2.0"
maven_fetch "the Flight SQL JDBC driver 18.2.0" "$jdbc" scripts/jdbc/pom.xml -DoutputDirectory="$jdbc"
# Delta Lake for Spark (pyspark, in .venv, brings Spark, Scala and ANTLR), for Spark reading the lake.
delta="$tools/delta-spark-4.0.0"
maven_fetch "delta-spark 4.0.0" "$delta" scripts/delta/pom.xml -DincludeScope=runtime \
  -DexcludeArtifactIds=scala-library,antlr4-runtime -DoutputDirectory="$delta"
# Hadoop's MiniDFSCluster (a NameNode and a DataNode), for the tests with the lake on HDFS.
hadoop="$tools/hadoop-minicluster-3.5.0"
maven_fetch "Hadoop's minicluster 3.5.0" "$hadoop" scripts/hdfs/pom.xml -DincludeScope=runtime -DoutputDirectory="$hadoop"

# apt_install WHAT COMMAND PACKAGE: installs Debian's PACKAGE unless COMMAND is on the PATH.
apt_install() {
  local what=$1 command=$2 package=$3
  if command -v "$command" >/dev/null 2>&1; then
    echo "setup: $what present"
  elif command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $what (Debian's $package)"
    local sudo
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get install -y -qq "$package" >/dev/null || {
      $sudo apt-get update -qq && $sudo apt-get install -y -qq "$package" >/dev/null
    }
  else
    echo "setup: $what is missing and there is no apt-get: install $package" >&2
    exit 1
  fi
}

# docker-compose validates docker-compose.yml in CI (`docker-compose config`; no engine runs).
apt_install docker-compose docker-compose docker-compose
# Chromium, headless, for the screenshot of a Superset chart (driven by Playwright from .venv).
apt_install Chromium chromium chromium

# Apache Superset, in an environment of its own (its pins differ from .venv's).
venv_install "Apache Superset 6.1.0" "$tools/superset-6.1.0" scripts/superset/requirements.txt
