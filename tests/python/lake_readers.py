"""Other engines read Strata's lake: DuckDB (its Delta extension) and Spark (delta-spark).

Usage: lake_readers.py --lake DIR --endpoint grpc://HOST:PORT [--views]

(delta-spark's jars are where scripts/setup.sh put them, under $STRATA_TOOLS.)

Each engine reads raw.page_views and rejected.page_views straight from the lake's Delta
tables, and with --views each view's table of state rows. What they read is compared with
what Strata serves over Flight SQL (ADBC):
- raw and rejected: the same rows, value for value (timestamps to the microsecond, bytes
  exactly), whatever the order;
- views: DuckDB and Spark read the same state rows; page_stats' `views` summed from the
  state column `views__count` per window and country equals the served `views`.
Prints, per table, its rows and a digest of its sorted rows ("lake: raw.page_views 4950 rows
digest ..."), so that a caller can check that compaction or a new view version between two
runs changed nothing an engine reads. A view's digest covers its keys and its integer
states (counts): floating-point sums and sketch bytes depend on the order a recompute's
threads merged them in, and so may differ between two versions computed from the same
events.
"""

import argparse
import glob
import hashlib
import os
import sys

import duckdb
import duckdb_extension_delta
import pyarrow as pa

from flight_clients import adbc_connect, adbc_query, plain_rows

SOURCE = "page_views"
VIEWS = ["page_stats", "device_5m"]
DELTA_SPARK = "delta-spark-4.0.0"


def duckdb_reader():
    extension = os.path.join(
        os.path.dirname(duckdb_extension_delta.__file__), "extensions", f"v{duckdb.__version__}", "delta.duckdb_extension"
    )
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    # The package ships the extension; LOAD by path (LOAD delta would try a download).
    con.execute(f"LOAD '{extension}'")
    return lambda path: con.sql(f"SELECT * FROM delta_scan('{path}')").to_arrow_table()


def spark_reader():
    from pyspark.sql import SparkSession

    tools = os.environ.get("STRATA_TOOLS", os.path.join(os.path.expanduser("~"), ".cache", "strata-tools"))
    jars_dir = os.path.join(tools, DELTA_SPARK)
    jars = sorted(glob.glob(os.path.join(jars_dir, "*.jar")))
    if not jars:
        sys.exit(f"no delta-spark jars in {jars_dir}: run scripts/setup.sh")
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("strata-lake-readers")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
        # Delta replays its log in this many tasks (50 by default): small lakes need one.
        .config("spark.databricks.delta.snapshotPartitions", "1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return lambda path: spark.read.format("delta").load(path).toArrow()


def sorted_rows(table: pa.Table, columns: list[str]) -> list[list]:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        sys.exit(f"columns {missing} are missing; the engine read {table.column_names}")
    rows = plain_rows(table.select(columns))
    return sorted(rows, key=lambda r: [(v is None, repr(v)) for v in r])


def digest(rows) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def same(what: str, a: list, b: list, names=("engine", "Strata")):
    if len(a) != len(b):
        sys.exit(f"{what}: {names[0]} read {len(a)} rows, {names[1]} {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            sys.exit(f"{what}: row {i} differs\n  {names[0]} {x}\n  {names[1]} {y}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lake", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--views", action="store_true")
    a = p.parse_args()
    conn = adbc_connect(a.endpoint)
    engines = {"duckdb": duckdb_reader(), "spark": spark_reader()}

    for schema in ["raw", "rejected"]:
        served = adbc_query(conn, f"SELECT * FROM {schema}.{SOURCE}")
        want = sorted_rows(served, served.column_names)
        for engine, read in engines.items():
            got = sorted_rows(read(os.path.join(a.lake, schema, SOURCE)), served.column_names)
            same(f"{engine}: {schema}.{SOURCE}", got, want, (engine, "Strata"))
            print(f"lake: {engine} reads {schema}.{SOURCE} as Strata serves it")
        print(f"lake: {schema}.{SOURCE} {len(want)} rows digest {digest(want)}")

    if a.views:
        read_states = {}
        for view in VIEWS:
            path = os.path.join(a.lake, "views", view)
            states = read_states[view] = {engine: read(path) for engine, read in engines.items()}
            columns = states["duckdb"].column_names
            rows = {engine: sorted_rows(t, columns) for engine, t in states.items()}
            same(f"views/{view}", rows["spark"], rows["duckdb"], ("Spark", "DuckDB"))
            if not rows["duckdb"]:
                sys.exit(f"views/{view} has no state rows: the comparison proves nothing")
            inexact = (pa.types.is_floating, pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
            exact = [f.name for f in states["duckdb"].schema if not any(t(f.type) for t in inexact)]
            print(f"lake: views/{view} {len(rows['duckdb'])} state rows digest "
                  f"{digest(sorted_rows(states['duckdb'], exact))}, the same for DuckDB and Spark")
        # The served page_stats from the state rows an engine reads: views summed per key.
        served = adbc_query(conn, "SELECT window_start, country, views FROM page_stats")
        for engine, t in read_states["page_stats"].items():
            keys = ["window_start", "country"]
            summed = t.group_by(keys, use_threads=False).aggregate([("views__count", "sum")])
            summed = summed.rename_columns(keys + ["views"])
            same(f"{engine}: page_stats from its state rows", sorted_rows(summed, keys + ["views"]),
                 sorted_rows(served, keys + ["views"]), (engine, "Strata"))
            print(f"lake: {engine} sums page_stats' state rows to the views Strata serves")
    print("lake: every engine reads what Strata serves")


if __name__ == "__main__":
    main()
