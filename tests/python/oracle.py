"""The oracle: every view Strata serves must equal DuckDB computing the same SQL over the
same input, and every malformed record must be in the rejected table exactly once.

Which lines are valid comes from the generator's manifest, not from Strata's decoder, so
a record wrongly accepted or wrongly rejected shows up here. The views checked are those
of strata.example.toml (page_stats: tumbling 1 minute by country; device_5m: hopping 1
minute / 5 minutes by device, with a FILTER); the SQL below is their DuckDB translation.

Usage: oracle.py --endpoint grpc://HOST:PORT --scratch DIR DATA.jsonl [DATA2.jsonl ...]
(each DATA file has DATA.manifest.json next to it)

For the speed layer (events produced to Kafka by produce.py, which records the partition
and offset of every line in a positions file): --lines N compares with the first N lines
only, after waiting until the speed layer has consumed each partition up to the last of them
(--wait-consumed); --positions FILE checks the raw and rejected tables by Kafka position
instead of file line; --check-archive waits until everything consumed is archived and checks
that the raw and rejected tables hold each record exactly once.
"""

import argparse
import json
import math
import os
import sys

import duckdb
import pyarrow as pa

from flight_clients import PyArrowFlightSql, adbc_connect, adbc_query

# Documented accuracy (see core/src/functions.rs): HLL lg_k=12 has a relative standard
# error of 1.04/64 = 1.6%; KLL k=200 a normalized rank error of 1.33% (99% confidence).
HLL_RSE = 1.04 / 64
KLL_RANK_ERROR = 0.0133

failures = []


def fail(msg):
    failures.append(msg)
    if len(failures) <= 20:
        print("MISMATCH:", msg, file=sys.stderr)


def close(a, b, rel=1e-9, abs_=1e-6):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def micros(ts):
    """A timestamp from Arrow (datetime with tz) as microseconds since the epoch."""
    return int(ts.timestamp() * 1_000_000) if not hasattr(ts, "value") else ts.value // 1000


def load_valid(files, scratch, lines=None):
    """Writes the valid lines of every file (of the first `lines` only, if given) to one
    JSONL file; returns it and the manifests restricted to those lines."""
    valid_path = os.path.join(scratch, "oracle-valid.jsonl")
    manifests = []
    with open(valid_path, "wb") as out:
        for path in files:
            with open(path + ".manifest.json") as f:
                manifest = json.load(f)
            if lines is not None:
                manifest["malformed"] = [m for m in manifest["malformed"] if m["line"] <= lines]
                manifest["valid"] = lines - len(manifest["malformed"])
                manifest["lines"] = lines
            manifests.append((path, manifest))
            bad = {m["line"] for m in manifest["malformed"]}
            with open(path, "rb") as f:
                for n, line in enumerate(f, start=1):
                    if lines is not None and n > lines:
                        break
                    if n not in bad and line.strip():
                        out.write(line)
    return valid_path, manifests


def load_positions(path, lines=None):
    """line -> (partition, offset), from produce.py's positions file (the first `lines` only)."""
    out = {}
    with open(path) as f:
        for row in f:
            n, partition, offset = json.loads(row)
            if lines is None or n <= lines:
                out[n] = (partition, offset)
    return out


def targets(positions):
    """partition -> the next offset after the last line produced to it."""
    want = {}
    for partition, offset in positions.values():
        want[partition] = max(want.get(partition, 0), offset + 1)
    return want


def wait_for(endpoint, column, want, timeout=180):
    """Polls system.partitions until every partition's `column` reaches `want` (partition ->
    offset): the speed layer's progress."""
    import time

    client = PyArrowFlightSql(endpoint)
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        try:
            rows = client.query(f"SELECT partition, max({column}) AS n FROM system.partitions GROUP BY partition").to_pylist()
            got = {r["partition"]: r["n"] for r in rows}
        except Exception as e:  # the server may be restarting
            got = f"error: {e}"
        if isinstance(got, dict) and all((got.get(p) or 0) >= o for p, o in want.items()):
            return
        time.sleep(0.05)
    try:
        table = client.query("SELECT * FROM system.partitions").to_pylist()
    except Exception as e:
        table = f"error: {e}"
    raise SystemExit(f"timed out waiting for {column} to reach {want} (last seen: {got}); system.partitions: {table}")


def duck(valid_path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""CREATE TABLE events AS SELECT * FROM read_json('{valid_path}', format = 'newline_delimited',
            columns = {{ts: 'TIMESTAMPTZ', user_id: 'VARCHAR', country: 'VARCHAR', url: 'VARCHAR',
                       device: 'VARCHAR', latency_ms: 'BIGINT', amount: 'DOUBLE'}})"""
    )
    return con


def served(conn, sql, keys):
    table = adbc_query(conn, sql)
    for field in table.schema:
        if pa.types.is_string_view(field.type) or pa.types.is_binary_view(field.type):
            fail(f"{sql}: column {field.name} has view type {field.type}")
    rows = {}
    for r in table.to_pylist():
        key = (micros(r["window_start"]),) + tuple(r[k] for k in keys)
        if key in rows:
            fail(f"{sql}: duplicate row for {key}")
        rows[key] = r
    return rows


def check_window_end(view, rows, size_us):
    for key, r in rows.items():
        if micros(r["window_end"]) - key[0] != size_us:
            fail(f"{view} {key}: window_end is not window_start + {size_us} us")
            return


def check_hll(view, key, got, exact):
    tolerance = max(1.0, 4 * HLL_RSE * exact)
    if abs(got - exact) > tolerance:
        fail(f"{view} {key}: approx_distinct {got} vs exact {exact} (tolerance {tolerance:.1f})")
    return abs(got - exact) / max(exact, 1)


def check_page_stats(conn, con, minutes=1):
    window = minutes * 60_000_000
    rows = served(conn, "SELECT * FROM page_stats", ["country"])
    check_window_end("page_stats", rows, window)
    eps = 2 * KLL_RANK_ERROR
    truth = con.execute(
        f"""SELECT (epoch_us(ts) // {window}) * {window} AS ws, country,
                   count(*) AS views, sum(amount) AS revenue, avg(latency_ms) AS avg_latency,
                   count(DISTINCT user_id) AS users, count(latency_ms) AS n,
                   list_sort(list(latency_ms)) AS latencies, stddev_samp(latency_ms) AS sd_latency
            FROM events GROUP BY ALL"""
    ).fetchall()
    if len(truth) != len(rows):
        fail(f"page_stats: {len(rows)} rows served, {len(truth)} expected")
    max_hll = 0.0
    for ws, country, views, revenue, avg_latency, users, n, latencies, sd_latency in truth:
        r = rows.get((ws, country))
        if r is None:
            fail(f"page_stats: missing row {(ws, country)}")
            continue
        if r["views"] != views:
            fail(f"page_stats {(ws, country)}: views {r['views']} vs {views}")
        if not close(r["revenue"], revenue):
            fail(f"page_stats {(ws, country)}: revenue {r['revenue']} vs {revenue}")
        if not close(r["avg_latency_ms"], avg_latency, rel=1e-12):
            fail(f"page_stats {(ws, country)}: avg {r['avg_latency_ms']} vs {avg_latency}")
        if not close(r["sd_latency_ms"], sd_latency, rel=1e-9, abs_=1e-9):
            fail(f"page_stats {(ws, country)}: stddev {r['sd_latency_ms']} vs {sd_latency}")
        max_hll = max(max_hll, check_hll("page_stats", (ws, country), r["users"], users))
        # The served p95 must lie between the exact quantiles at 0.95 -/+ the rank error.
        p = r["p95_latency_ms"]
        lo = latencies[max(0, math.floor((0.95 - eps) * n) - 1)]
        hi = latencies[min(n - 1, math.ceil((0.95 + eps) * n))]
        if p is None or not (lo <= p <= hi):
            fail(f"page_stats {(ws, country)}: p95 {p} outside [{lo}, {hi}] (n={n})")
    print(f"page_stats: {len(truth)} rows equal (max approx_distinct error {max_hll:.2%})")


def check_device_5m(conn, con):
    rows = served(conn, "SELECT * FROM device_5m", ["device"])
    check_window_end("device_5m", rows, 300_000_000)
    truth = con.execute(
        """WITH w AS (
               SELECT *, unnest(generate_series((epoch_us(ts) // 60000000) * 60000000 - 240000000,
                                                (epoch_us(ts) // 60000000) * 60000000, 60000000)) AS ws
               FROM events WHERE device IS NOT NULL)
           SELECT ws, device, count(*) AS views,
                  count(*) FILTER (WHERE url LIKE '/checkout%') AS checkouts,
                  max(latency_ms) AS max_latency, count(DISTINCT user_id) AS users
           FROM w GROUP BY ALL"""
    ).fetchall()
    if len(truth) != len(rows):
        fail(f"device_5m: {len(rows)} rows served, {len(truth)} expected")
    max_hll = 0.0
    for ws, device, views, checkouts, max_latency, users in truth:
        r = rows.get((ws, device))
        if r is None:
            fail(f"device_5m: missing row {(ws, device)}")
            continue
        for name, want in [("views", views), ("checkouts", checkouts), ("max_latency_ms", max_latency)]:
            if r[name] != want:
                fail(f"device_5m {(ws, device)}: {name} {r[name]} vs {want}")
        max_hll = max(max_hll, check_hll("device_5m", (ws, device), r["users"], users))
    print(f"device_5m: {len(truth)} rows equal (max approx_distinct error {max_hll:.2%})")


def check_raw_and_rejected(endpoint, con, manifests, positions=None):
    client = PyArrowFlightSql(endpoint)
    raw = client.query("SELECT count(*) AS n, count(DISTINCT ts) AS t FROM raw.page_views").to_pylist()[0]
    valid = sum(m["valid"] for _, m in manifests)
    duck_valid = con.execute("SELECT count(*) FROM events").fetchone()[0]
    if not (raw["n"] == valid == duck_valid):
        fail(f"raw.page_views holds {raw['n']} events; manifest says {valid}, DuckDB read {duck_valid}")
    line_at = {position: n for n, position in (positions or {}).items()}
    if positions:
        # Each valid line exactly once, at the Kafka position it was produced to.
        dups = client.query(
            "SELECT count(*) AS n FROM (SELECT _partition, _offset FROM raw.page_views GROUP BY 1, 2 HAVING count(*) > 1)"
        ).to_pylist()[0]["n"]
        if dups:
            fail(f"raw.page_views holds {dups} Kafka positions more than once")
        bad = {m["line"] for _, man in manifests for m in man["malformed"]}
        archived = client.query("SELECT _partition AS p, _offset AS o FROM raw.page_views").to_pylist()
        lines = [line_at.get((r["p"], r["o"])) for r in archived]
        foreign = sum(1 for n in lines if n is None)
        if foreign:
            fail(f"{foreign} archived events are at Kafka positions no produced line has (aborted records?)")
        wrong = [n for n in lines if n in bad]
        if wrong:
            fail(f"malformed lines archived as events: {wrong[:5]}")
    rejected = client.query(
        "SELECT file, line, kafka_partition AS p, kafka_offset AS o, reason, raw FROM rejected.page_views"
    ).to_pylist()
    if positions:
        path = manifests[0][0]
        expected = {(os.path.abspath(path), m["line"]): m["kind"] for m in manifests[0][1]["malformed"]}
        for r in rejected:
            r["file"], r["line"] = path, line_at.get((r["p"], r["o"]), f"no line at {(r['p'], r['o'])}")
    else:
        expected = {(os.path.abspath(path), m["line"]): m["kind"] for path, m in manifests for m in m["malformed"]}
    seen = {}
    for r in rejected:
        key = (os.path.abspath(r["file"]), r["line"])
        if key in seen:
            fail(f"rejected twice: {key}")
        seen[key] = r
        if key not in expected:
            fail(f"rejected but valid: {key} ({r['reason']})")
        if not r["raw"] or not r["reason"]:
            fail(f"rejected {key} without raw bytes or reason")
    for key, kind in expected.items():
        if key not in seen:
            fail(f"malformed ({kind}) but not rejected: {key}")
    kinds = {}
    for key, kind in expected.items():
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"raw: {raw['n']} events; rejected: {len(rejected)} records, each once ({kinds})")
    # Results carry no view types, even for binary and string columns.
    schema = client.query("SELECT raw, reason FROM rejected.page_views LIMIT 1").schema
    if schema.field("raw").type != pa.binary() or schema.field("reason").type != pa.string():
        fail(f"rejected table served with types {schema}")


def check_get_objects(conn):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    tables = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                columns = [c["column_name"] for c in table["table_columns"] or []]
                tables[(catalog["catalog_name"], schema["db_schema_name"], table["table_name"])] = (table["table_type"], columns)
    want = {
        ("strata", "public", "page_stats"): ["window_start", "window_end", "country", "views", "revenue",
                                             "avg_latency_ms", "users", "p95_latency_ms", "sd_latency_ms"],
        ("strata", "public", "device_5m"): ["window_start", "window_end", "device", "views", "checkouts",
                                            "max_latency_ms", "users"],
    }
    for key, columns in want.items():
        got = tables.get(key)
        if got is None or got[1] != columns:
            fail(f"GetObjects: {key} has {got}, expected columns {columns}")
    for key in [("strata", "raw", "page_views"), ("strata", "rejected", "page_views"), ("strata", "system", "view_versions")]:
        if key not in tables:
            fail(f"GetObjects does not list {key}")
    print(f"GetObjects: {len(tables)} tables listed with their columns")


def check_prepared(conn, con):
    got = adbc_query(conn, "SELECT sum(views) AS v FROM page_stats WHERE country = $1", ("DE",)).to_pylist()[0]["v"]
    want = con.execute("SELECT count(*) FROM events WHERE country = 'DE'").fetchone()[0]
    if got != want:
        fail(f"prepared statement with a parameter: {got} vs {want}")
    print("prepared statement with a parameter: equal")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--lines", type=int)
    parser.add_argument("--wait-consumed", action="store_true")
    parser.add_argument("--check-archive", action="store_true")
    parser.add_argument("--positions", help="produce.py's positions file: check by Kafka position")
    parser.add_argument("--views-only", action="store_true")
    parser.add_argument("--page-stats-minutes", type=int, default=1,
                        help="the window of page_stats (a test may change the view's definition)")
    parser.add_argument("data", nargs="+")
    args = parser.parse_args()

    valid_path, manifests = load_valid(args.data, args.scratch, args.lines)
    positions = load_positions(args.positions, args.lines) if args.positions else None
    if args.wait_consumed:
        wait_for(args.endpoint, "consumed_offset", targets(positions))
    con = duck(valid_path)
    conn = adbc_connect(args.endpoint)
    try:
        check_page_stats(conn, con, args.page_stats_minutes)
        check_device_5m(conn, con)
        if args.check_archive:
            wait_for(args.endpoint, "archived_offset", targets(positions))
        if not args.views_only:
            check_raw_and_rejected(args.endpoint, con, manifests, positions)
            check_get_objects(conn)
            check_prepared(conn, con)
    finally:
        conn.close()
    if failures:
        print(f"{len(failures)} mismatches", file=sys.stderr)
        sys.exit(1)
    print("oracle: every view equals DuckDB")


if __name__ == "__main__":
    main()
