#!/usr/bin/env bash
# Strata's historical half on embedded defaults, in one command: generate a clickstream,
# import it into a lake in a local directory, run the batch layer, serve Flight SQL on
# 127.0.0.1:50051 and query it. Leaves the server running until Ctrl-C.
#
#   scripts/quickstart.sh [DIR]      (DIR defaults to ./quickstart)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/quickstart}"
mkdir -p "$dir"
cd "$dir"

cargo build --quiet --manifest-path "$root/Cargo.toml" -p strata
strata="${CARGO_TARGET_DIR:-$root/target}/debug/strata"

cp "$root/strata.example.toml" strata.toml
"$strata" generate --events 200000 --out events.jsonl
"$strata" import page_views events.jsonl
"$strata" batch run
"$strata" serve &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 200); do
  "$strata" query "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.05
done
"$strata" query "SELECT window_start, country, views, users, p95_latency_ms FROM page_stats ORDER BY views DESC LIMIT 5"
echo
echo "Flight SQL is on 127.0.0.1:50051 (lake in $dir/lake). Try:"
echo "  $strata query \"SELECT * FROM system.view_versions\""
echo "Ctrl-C stops the server."
wait $server
