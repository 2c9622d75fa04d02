#!/usr/bin/env bash
# Installs what the tests and benchmarks need, skipping what is already there:
# - the Python environment (.venv: DuckDB, ADBC, pyarrow, moto, confluent-kafka, pyspark);
# - tansu, the Kafka broker of the tests (built once, kept in $STRATA_TOOLS, ~8 min);
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
if command -v tansu >/dev/null 2>&1 || [ -x "$tools/bin/tansu" ]; then
  echo "setup: tansu present"
else
  echo "setup: building tansu (the Kafka broker of the tests) into $tools; this takes a few minutes once"
  env -u CARGO_TARGET_DIR cargo install tansu --locked --features dynostore,libsql --root "$tools" --quiet
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
