"""Batch-layer benchmark: Strata against DuckDB and pyspark (local[2]) doing the same work on
the same files, in one run.

  recompute   the two views of strata.example.toml (page_stats: 1-minute tumbling windows by
              country with count, sum, avg, approx_distinct and a percentile; device_5m:
              5-minute windows sliding by 1 minute with a FILTER, max, approx_distinct) from
              the compacted raw Parquet files, results written as Parquet.
  compaction  many small Parquet files (one import commit per 20k events) rewritten into one
              file per event_date partition, sorted by event time: events over two dates,
              then the same number over one date (one partition, as a lake fed by the
              speed layer mostly has).

Run it with scripts/bench.sh batch [EVENTS]. Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import duckdb


def run(cmd, **kw):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    return out.stdout + out.stderr


def active_files(table_dir):
    """The data files of a Delta table's latest version, by replaying its JSON log."""
    active = set()
    for path in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        with open(path) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    active.add(action["add"]["path"])
                elif "remove" in action:
                    active.discard(action["remove"]["path"])
    return sorted(os.path.join(table_dir, p) for p in active)


def size_mb(files):
    return sum(os.path.getsize(f) for f in files) / 1e6


class Results:
    def __init__(self):
        self.rows = []

    def add(self, task, system, rows, seconds, mb=None):
        self.rows.append((task, system, rows, seconds, mb))
        extra = f", {mb / seconds:.1f} MB/s" if mb else ""
        print(f"  {task:<10} {system:<8} {seconds:8.3f} s  {rows / seconds:12,.0f} rows/s{extra}", flush=True)

    def table(self):
        lines = ["| task | system | rows | best of runs (s) | rows/s | MB/s (input) | vs DuckDB | vs pyspark |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        best = {}
        for task, system, rows, seconds, mb in self.rows:
            best[(task, system)] = (rows, seconds, mb)
        for (task, system), (rows, seconds, mb) in best.items():
            def ratio(other):
                o = best.get((task, other))
                return f"{o[1] / seconds:.2f}x" if o and system != other else ""
            mbs = f"{mb / seconds:.1f}" if mb else ""
            lines.append(f"| {task} | {system} | {rows:,} | {seconds:.3f} | {rows / seconds:,.0f} | {mbs} | {ratio('duckdb')} | {ratio('pyspark')} |")
        return "\n".join(lines)


PAGE_STATS = """
SELECT window_start, window_start + INTERVAL 1 MINUTE AS window_end, country,
       count(*) AS views, sum(amount) AS revenue, avg(latency_ms) AS avg_latency_ms,
       {distinct}(user_id) AS users, {quantile} AS p95_latency_ms
FROM (SELECT *, {tumble} AS window_start FROM events)
GROUP BY window_start, country
"""

DEVICE_5M = """
SELECT window_start, window_start + INTERVAL 5 MINUTES AS window_end, device,
       count(*) AS views, count(*) FILTER (WHERE url LIKE '/checkout%') AS checkouts,
       max(latency_ms) AS max_latency_ms, {distinct}(user_id) AS users
FROM (SELECT *, {hop} AS window_start FROM events WHERE device IS NOT NULL)
GROUP BY window_start, device
"""


def duckdb_recompute(files, out_dir):
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET TimeZone = 'UTC'")
    listing = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listing}], hive_partitioning = true)")
    tumble = "time_bucket(INTERVAL 1 MINUTE, ts)"
    hop = ("unnest(generate_series(time_bucket(INTERVAL 1 MINUTE, ts) - INTERVAL 4 MINUTES, "
           "time_bucket(INTERVAL 1 MINUTE, ts), INTERVAL 1 MINUTE))")
    start = time.perf_counter()
    for name, sql in [("page_stats", PAGE_STATS.format(distinct="approx_count_distinct", quantile="approx_quantile(latency_ms, 0.95)", tumble=tumble)),
                      ("device_5m", DEVICE_5M.format(distinct="approx_count_distinct", hop=hop))]:
        con.execute(f"COPY ({sql}) TO '{out_dir}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    return time.perf_counter() - start


def duckdb_compact(files, out_dir):
    con = duckdb.connect()
    con.execute("SET threads = 2")
    listing = ", ".join(f"'{f}'" for f in files)
    start = time.perf_counter()
    con.execute(
        f"""COPY (SELECT * FROM read_parquet([{listing}], hive_partitioning = true) ORDER BY event_date, ts)
            TO '{out_dir}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)"""
    )
    return time.perf_counter() - start


class Spark:
    def __init__(self):
        os.environ.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
        from pyspark.sql import SparkSession
        self.spark = (SparkSession.builder.master("local[2]").appName("strata-bench")
                      .config("spark.sql.session.timeZone", "UTC")
                      .config("spark.ui.enabled", "false")
                      .config("spark.sql.shuffle.partitions", "2")
                      .config("spark.driver.memory", "4g")
                      .getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")
        self.spark.range(1000).count()  # warm up the JVM

    def recompute(self, files, base, out_dir):
        events = self.spark.read.option("basePath", base).parquet(*files)
        events.createOrReplaceTempView("events")
        tumble = "window(ts, '1 minute').start"
        hop = "window(ts, '5 minutes', '1 minute').start"
        start = time.perf_counter()
        for name, sql in [("page_stats", PAGE_STATS.format(distinct="approx_count_distinct", quantile="percentile_approx(latency_ms, 0.95)", tumble=tumble)),
                          ("device_5m", DEVICE_5M.format(distinct="approx_count_distinct", hop=hop))]:
            sql = sql.replace("INTERVAL 1 MINUTE", "INTERVAL '1' MINUTE").replace("INTERVAL 5 MINUTES", "INTERVAL '5' MINUTE")
            self.spark.sql(sql).write.mode("overwrite").parquet(f"{out_dir}/{name}")
        return time.perf_counter() - start

    def compact(self, files, base, out_dir):
        start = time.perf_counter()
        (self.spark.read.option("basePath", base).parquet(*files)
         .repartition("event_date").sortWithinPartitions("ts")
         .write.mode("overwrite").partitionBy("event_date").option("compression", "zstd").parquet(out_dir))
        return time.perf_counter() - start


def small_files(a, work, generate_args):
    """Generates the events into `work`, imports them in chunks of 20,000 (the small files)
    and keeps a copy of the raw table to start each compaction from. Returns the raw table's
    directory and the events imported."""
    config = os.path.join(work, "strata.toml")
    shutil.copy(os.path.join(a.repo, "strata.example.toml"), config)
    env = dict(os.environ, STRATA_LOG="warn")
    data = os.path.join(work, "events.jsonl")
    print(f"generating {a.events:,} events {' '.join(generate_args)}", flush=True)
    run([a.strata, "--config", config, "generate", "--events", str(a.events), "--out", data, *generate_args], env=env)
    started = time.perf_counter()
    out = run([a.strata, "--config", config, "import", "page_views", data, "--chunk-rows", "20000"], env=env)
    imported = int(re.search(r"imported (\d+) events", out).group(1))
    print(f"imported {imported:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    raw = os.path.join(work, "lake", "raw", "page_views")
    shutil.copytree(raw, os.path.join(work, "raw-small"))
    return raw, imported


def compaction(a, task, raw, imported, results, spark):
    """Compacts the small files `a.repeat` times with each system, from the same copy."""
    work = os.path.dirname(os.path.dirname(os.path.dirname(raw)))
    config = os.path.join(work, "strata.toml")
    env = dict(os.environ, STRATA_LOG="warn")
    template = os.path.join(work, "raw-small")
    small = active_files(template)
    small_mb = size_mb(small)
    partitions = len({os.path.basename(os.path.dirname(f)) for f in small})
    print(f"{task}: {len(small)} small files in {partitions} partitions, {small_mb:.1f} MB", flush=True)
    for _ in range(a.repeat):
        shutil.rmtree(raw)
        shutil.copytree(template, raw)
        shutil.rmtree(os.path.join(work, "lake", "views"), ignore_errors=True)
        # The copy's dirty pages written back now, not while the next system runs.
        os.sync()
        out = run([a.strata, "--config", config, "batch", "run"], env=env)
        m = re.search(r"compacted raw.page_views: (\d+) files into (\d+) \((\d+) rows.*\) in ([\d.]+)s", out)
        assert m and int(m.group(3)) == imported, out
        results.add(task, "strata", imported, float(m.group(4)), small_mb)
        d = os.path.join(work, "duck-compacted")
        shutil.rmtree(d, ignore_errors=True)
        os.sync()
        results.add(task, "duckdb", imported, duckdb_compact(small, d), small_mb)
        if spark:
            os.sync()
            results.add(task, "pyspark", imported, spark.compact(small, template, os.path.join(work, "spark-compacted")), small_mb)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strata", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-spark", action="store_true")
    a = p.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    results = Results()
    spark = None if a.skip_spark else Spark()

    # Two event dates (the generator's default span), then one: a lake fed by the speed
    # layer mostly compacts today's partition alone.
    raw, imported = small_files(a, a.work, [])
    compaction(a, "compaction", raw, imported, results, spark)
    one = os.path.join(a.work, "one-partition")
    os.makedirs(one)
    raw_one, imported_one = small_files(a, one, ["--start", "2026-11-20T02:00:00Z", "--span", "20h"])
    compaction(a, "compaction, one partition", raw_one, imported_one, results, spark)
    # Today's partition beside two small ones (late events, the next day's first hour): the
    # bins of one compaction differ in size, the large one still running when the others end.
    skewed = os.path.join(a.work, "skewed")
    os.makedirs(skewed)
    raw_skewed, imported_skewed = small_files(a, skewed, ["--start", "2026-11-20T01:00:00Z", "--span", "24h"])
    compaction(a, "compaction, one large partition", raw_skewed, imported_skewed, results, spark)

    config = os.path.join(a.work, "strata.toml")
    env = dict(os.environ, STRATA_LOG="warn")
    strata = lambda *args: run([a.strata, "--config", config, *args], env=env)
    compacted = active_files(raw)
    print(f"recompute over {len(compacted)} compacted files ({size_mb(compacted):.1f} MB):", flush=True)
    for _ in range(a.repeat):
        out = strata("batch", "run", "--force")
        seconds = sum(float(t) for t in re.findall(r"published view \S+ version \d+: \d+ state rows from \d+ events .* in ([\d.]+)s", out))
        assert out.count("published view") == 2, out
        results.add("recompute", "strata", imported, seconds)
        results.add("recompute", "duckdb", imported, duckdb_recompute(compacted, a.work))
        if spark:
            results.add("recompute", "pyspark", imported, spark.recompute(compacted, raw, os.path.join(a.work, "spark-views")))

    # Best run of each.
    best = {}
    for task, system, rows, seconds, mb in results.rows:
        key = (task, system)
        if key not in best or seconds < best[key][3]:
            best[key] = (task, system, rows, seconds, mb)
    results.rows = list(best.values())
    print()
    print(f"{a.events:,} generated events ({imported:,} valid), {os.cpu_count()} cores")
    print(results.table())


if __name__ == "__main__":
    sys.exit(main())
