"""Serving-layer benchmark: queries over a long history, through Flight SQL on a warm server,
beside DuckDB reading the view table's Parquet files directly.

  history    DAYS days (30) of events for GROUPS countries (300), PER_MINUTE events (2) per
             country and minute, written as Parquet here and loaded with `strata import`;
             `strata batch run` computes the example config's page_stats view (1-minute
             tumbling windows by country; count, sum, avg, approx_distinct, a percentile,
             stddev): DAYS * 1440 * GROUPS state rows (13M).
  live       then `strata run` (speed and serving in one process) consumes SPEED_EVENTS
             recent events from Apache Kafka (scripts/kafka-broker), so every view query
             merges the batch states with live speed states (--serve-only: `strata serve`,
             batch states alone).
  queries    p50/p99 over RUNS runs each, after warm-up, through Flight SQL with two clients:
             pyarrow.flight (GetFlightInfo + DoGet, the thinnest client there is) and ADBC
             (the Go Flight SQL driver, what BI tools and SQLAlchemy use); for each client
             `SELECT 1` is its floor, the round trips with no data to read:
               point      one country, the last hour: SELECT * ... WHERE country = ? AND window_start >= ?
               dashboard  every country, the last 24 hours, by hour: sum(views) GROUP BY hour, country
               scan       count(*), sum(views) over every window
             DuckDB runs the same queries on the view table's active Parquet files, from the
             stored state columns (views__count etc.; the sketch columns come back as their
             bytes, DuckDB cannot finalize them). The files hold one state row per window and
             country, so DuckDB needs no merge; Strata finalizes the batch rows as they are
             and merges only the windows the live speed states reach back to.

Run it with scripts/bench.sh history [DAYS]. Prints Markdown tables for BENCHMARKS.md.
--reuse keeps the work directory's lake from an earlier run of the same shape (and --rebatch
recomputes its view with this build's `strata batch run --force`), to measure the queries
again without generating and importing the history. The server's log goes to
WORK/server.log, at the level STRATA_LOG gives (warn): STRATA_LOG=strata_serving=debug logs
how long each view took to resolve, phase by phase.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "tests", "python")]
from batch import active_files, run, size_mb  # noqa: E402
from flight_clients import PyArrowFlightSql, adbc_connect, adbc_query  # noqa: E402
from speed import TOPIC, create_topics, free_port, metric, produce_file, start_kafka, stop, wait_port  # noqa: E402


def start(cmd, port, what, env=None, log=None):
    """Starts a server process and waits until it listens on `port`; its output goes to the
    file `log` (else nowhere)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if log:
        out.close()
    try:
        wait_port(port, proc, what)
    except BaseException:
        stop(proc)
        raise
    return proc


def config_text(repo, views=("page_stats",)):
    """strata.example.toml with only the named views and no batch schedule (a `strata run`
    must not recompute while it is measured)."""
    text = open(os.path.join(repo, "strata.example.toml")).read().replace('interval = "5m"\n', "")
    for name in re.findall(r'\[\[views\]\]\nname = "(\w+)"', text):
        if name not in views:
            text, n = re.subn(rf'\[\[views\]\]\nname = "{name}"\nsql = """.*?"""\n\n?', "", text, flags=re.S)
            assert n == 1, name
    return text


def quantiles(seconds):
    s = sorted(seconds)
    return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]


def write_history(path, start_s, days, groups, per_minute, seed=7):
    """Events for every country and minute of `days` days from `start_s`, one row group per
    day, in the source's schema. Returns the number of events."""
    rng = np.random.default_rng(seed)
    countries = pa.array([f"C{g:03d}" for g in range(groups)])
    users = pa.array([f"u{u}" for u in range(10_000)])
    per_day = 1440 * groups * per_minute
    minute = np.repeat(np.arange(1440, dtype=np.int64), groups * per_minute)
    group = np.tile(np.repeat(np.arange(groups, dtype=np.int32), per_minute), 1440)
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("user_id", pa.string()), ("country", pa.string()),
                        ("url", pa.string()), ("device", pa.string()), ("latency_ms", pa.int64()),
                        ("amount", pa.float64())])
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for d in range(days):
            ts = (start_s + d * 86400 + minute * 60) * 1_000_000 + rng.integers(0, 60_000_000, per_day)
            w.write_table(pa.table({
                "ts": pa.array(ts, pa.timestamp("us", "UTC")),
                "user_id": pa.DictionaryArray.from_arrays(rng.integers(0, 10_000, per_day).astype(np.int32), users).cast(pa.string()),
                "country": pa.DictionaryArray.from_arrays(group, countries).cast(pa.string()),
                "url": pa.DictionaryArray.from_arrays(rng.integers(0, 3, per_day).astype(np.int32),
                                                      pa.array(["/p/1", "/p/2", "/checkout/3"])).cast(pa.string()),
                "device": pa.DictionaryArray.from_arrays(rng.integers(0, 3, per_day).astype(np.int32),
                                                         pa.array(["mobile", "desktop", "tablet"])).cast(pa.string()),
                "latency_ms": rng.integers(5, 2000, per_day),
                "amount": pa.array(rng.random(per_day) * 500, mask=rng.random(per_day) > 0.1),
            }, schema=schema))
    return days * per_day


def write_live(path, events, groups, seed=8):
    """`events` JSON records of now, for the speed layer."""
    rng = np.random.default_rng(seed)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(path, "w") as f:
        for g, u, lat in zip(rng.integers(0, groups, events), rng.integers(0, 10_000, events),
                             rng.integers(5, 2000, events)):
            f.write(json.dumps({"ts": now, "user_id": f"u{u}", "country": f"C{g:03d}", "url": "/p/1",
                                "device": "mobile", "latency_ms": int(lat), "amount": None}) + "\n")


def queries(end_s, group):
    """(name, Strata SQL, DuckDB SQL over `states`, the view table's state rows)."""
    ts = lambda s: time.strftime("TIMESTAMP '%Y-%m-%d %H:%M:%S'", time.gmtime(s))
    hour, day = ts(end_s - 3600), ts(end_s - 86400)
    return [
        ("point: one country, last hour",
         f"SELECT * FROM page_stats WHERE country = '{group}' AND window_start >= {hour}",
         "SELECT window_start, window_start + INTERVAL 1 MINUTE AS window_end, country, views__count AS views, "
         "revenue__sum AS revenue, avg_latency_ms__sum / avg_latency_ms__count AS avg_latency_ms, users__hll, "
         f"p95_latency_ms__kll, sd_latency_ms__moments FROM states WHERE country = '{group}' AND window_start >= {hour}"),
        ("dashboard: all countries, last 24 h by hour",
         f"SELECT date_trunc('hour', window_start) AS h, country, sum(views) AS views FROM page_stats "
         f"WHERE window_start >= {day} GROUP BY 1, 2",
         f"SELECT date_trunc('hour', window_start) AS h, country, sum(views__count) AS views FROM states "
         f"WHERE window_start >= {day} GROUP BY 1, 2"),
        ("scan: count(*), sum(views)",
         "SELECT count(*) AS n, sum(views) AS views FROM page_stats",
         "SELECT count(*) AS n, sum(views__count) AS views FROM states"),
    ]


def measure(label, execute, runs, warmup=3):
    """Runs `execute` warm-up + `runs` times; returns the answer, p50 and p99 in seconds."""
    for _ in range(warmup):
        answer = execute()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = execute()
        times.append(time.perf_counter() - started)
    p50, p99 = quantiles(times)
    print(f"  {label}: {answer.num_rows:,} rows, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms", flush=True)
    return answer, p50, p99


def view_layout(files):
    """Rows, row groups and how many days of window_start a row group spans (median)."""
    rows, spans, groups = 0, [], 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        rows += md.num_rows
        col = md.schema.to_arrow_schema().get_field_index("window_start")
        for i in range(md.num_row_groups):
            groups += 1
            st = md.row_group(i).column(col).statistics
            spans.append((st.max - st.min).total_seconds() / 86400)
    return rows, groups, sorted(spans)[len(spans) // 2] if spans else 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strata", required=True)
    p.add_argument("--kafka-broker", help="scripts/kafka-broker (required unless --serve-only)")
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--groups", type=int, default=300)
    p.add_argument("--per-minute", type=int, default=2)
    p.add_argument("--speed-events", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--serve-only", action="store_true", help="`strata serve` without Kafka and speed states")
    p.add_argument("--reuse", action="store_true", help="keep the lake of an earlier run with the same shape")
    p.add_argument("--rebatch", action="store_true", help="with --reuse: `strata batch run --force` first")
    a = p.parse_args()
    if not a.serve_only and not a.kafka_broker:
        p.error("--kafka-broker is required unless --serve-only")

    config = os.path.join(a.work, "strata.toml")
    shape_file = os.path.join(a.work, "shape.json")
    shape = {"days": a.days, "groups": a.groups, "per_minute": a.per_minute}
    reused = a.reuse and os.path.exists(shape_file) and json.load(open(shape_file))["shape"] == shape
    env = dict(os.environ, STRATA_LOG=os.environ.get("STRATA_LOG", "warn"))
    strata = lambda *args: run([a.strata, "--config", config, *args], env=env)
    lake, pristine = os.path.join(a.work, "lake"), os.path.join(a.work, "lake.history")
    if reused:
        end_s, events = (json.load(open(shape_file))[k] for k in ("end_s", "events"))
        print(f"reusing the lake in {a.work} ({events:,} events)", flush=True)
        # As it was after the history's batch run: without the live events a run archived.
        shutil.rmtree(lake)
        shutil.rmtree(os.path.join(a.work, "kafka"), ignore_errors=True)
        subprocess.run(["cp", "-al", pristine, lake], check=True)
        if a.rebatch:
            out = strata("batch", "run", "--force")
            print(f"batch run: {out.strip()}", flush=True)
            shutil.rmtree(pristine)
            subprocess.run(["cp", "-al", lake, pristine], check=True)
    else:
        shutil.rmtree(a.work, ignore_errors=True)
        os.makedirs(a.work)
        open(config, "w").write(config_text(a.repo))
        end_s = int(time.time()) // 60 * 60
        history = os.path.join(a.work, "history.parquet")
        started = time.perf_counter()
        events = write_history(history, end_s - a.days * 86400, a.days, a.groups, a.per_minute)
        print(f"wrote {events:,} events ({a.days} days, {a.groups} countries, {a.per_minute} per country and minute) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        out = strata("import", "page_views", history)
        assert f"imported {events} events" in out, out
        print(f"imported in {time.perf_counter() - started:.1f} s", flush=True)
        out = strata("batch", "run")
        print(f"batch run: {out.strip()}", flush=True)
        if a.reuse:
            # Hard links: the lake's files are never rewritten in place.
            subprocess.run(["cp", "-al", lake, pristine], check=True)
            json.dump({"shape": shape, "end_s": end_s, "events": events}, open(shape_file, "w"))
    files = active_files(os.path.join(a.work, "lake", "views", "page_stats"))
    state_rows, row_groups, span = view_layout(files)
    assert state_rows == a.days * 1440 * a.groups, state_rows

    procs = []
    log = os.path.join(a.work, "server.log")
    try:
        serve_port = free_port()
        if a.serve_only:
            procs.append(start([a.strata, "--config", config, "serve", "--address", f"127.0.0.1:{serve_port}"],
                               serve_port, "strata serve", env, log))
            live = 0
        else:
            kafka, brokers = start_kafka(a.kafka_broker, a.work)
            procs.append(kafka)
            create_topics(brokers, [TOPIC])
            data = os.path.join(a.work, "live.jsonl")
            write_live(data, a.speed_events, a.groups)
            live = produce_file(brokers, data)
            metrics_port = free_port()
            run_env = dict(env, STRATA_KAFKA_BROKERS=brokers)
            procs.append(start([a.strata, "--config", config, "run", "--address", f"127.0.0.1:{serve_port}",
                                "--metrics-address", f"127.0.0.1:{metrics_port}"], serve_port, "strata run", run_env, log))
            deadline = time.monotonic() + 300
            while metric(metrics_port, "strata_events_consumed_total") < live:
                if time.monotonic() > deadline:
                    raise SystemExit("strata run did not consume the live events within 300 s")
                time.sleep(0.1)
            print(f"strata run consumed {live:,} live events", flush=True)
        conn = adbc_connect(f"grpc://127.0.0.1:{serve_port}")
        thin = PyArrowFlightSql(f"grpc://127.0.0.1:{serve_port}")
        clients = [("pyarrow.flight", thin.query), ("ADBC", lambda sql: adbc_query(conn, sql))]
        duck = duckdb.connect()
        duck.execute("SET threads = 2")
        duck.execute("SET TimeZone = 'UTC'")
        duck.execute(f"CREATE VIEW states AS SELECT * FROM read_parquet({files!r})")
        print("floor: SELECT 1", flush=True)
        floors = {client: measure(f"strata, {client}", lambda q=q: q("SELECT 1"), a.runs)[1:] for client, q in clients}
        rows = []
        for name, sql, duck_sql in queries(end_s, "C042"):
            print(name, flush=True)
            ours = {}
            for client, q in clients:
                answer, s50, s99 = measure(f"strata, {client}", lambda q=q: q(sql), a.runs)
                ours[client] = (s50, s99)
            theirs, d50, d99 = measure("duckdb", lambda: duck.execute(duck_sql).to_arrow_table(), a.runs)
            if name.startswith("scan"):
                # Every event counted once: the batch states' and the live ones.
                assert answer["views"][0].as_py() == theirs["views"][0].as_py() + live, (answer, theirs, live)
            rows.append((name, answer.num_rows, ours, (d50, d99)))
        conn.close()
    finally:
        stop(*reversed(procs))

    print()
    print(f"{events:,} events over {a.days} days, {a.groups} countries; {live:,} live events in speed states"
          f"{' (none: strata serve)' if a.serve_only else ''}; {os.cpu_count()} cores, {a.runs} runs per query")
    print()
    print("| view table page_stats | state rows | files | MB | row groups | days of window_start per row group (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| batch states | {state_rows:,} | {len(files)} | {size_mb(files):.1f} | {row_groups} | {span:.1f} |")
    print()
    ms = lambda t: f"{t[0] * 1000:.1f} / {t[1] * 1000:.1f} ms"
    print("p50 / p99 of each query; a client's floor is its `SELECT 1`, the round trips alone.")
    print()
    print("| query | rows | strata, pyarrow.flight | strata, ADBC | duckdb | strata (pyarrow.flight) / duckdb, p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| floor: SELECT 1 | 1 | {ms(floors['pyarrow.flight'])} | {ms(floors['ADBC'])} | | |")
    for name, n, ours, theirs in rows:
        print(f"| {name} | {n:,} | {ms(ours['pyarrow.flight'])} | {ms(ours['ADBC'])} | {ms(theirs)} | "
              f"{ours['pyarrow.flight'][0] / theirs[0]:.1f}x |")

if __name__ == "__main__":
    sys.exit(main())
