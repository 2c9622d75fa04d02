"""Serving-layer benchmark: bulk transfer of a raw table through Flight SQL, beside a plain
pyarrow.flight server streaming the same Parquet files.

  strata    `SELECT * FROM raw.page_views` (EVENTS generated events, 5M: `strata import`,
            then `strata batch run` compacts them) through Flight SQL: GetFlightInfo, then
            DoGet of its endpoint, every batch read by pyarrow.flight; also through ADBC.
  pyarrow   a pyarrow.flight server (this script, run with --serve-pyarrow in a process of
            its own) whose DoGet yields the record batches of the raw table's active files
            read with pyarrow.dataset (event_date from the Hive partition), read by the same
            client code.

Rows/s and MB/s of the Arrow data received (the batches' buffers), best of REPEAT runs each,
from the GetFlightInfo call to the last batch. Run it with scripts/bench.sh transfer [EVENTS].
Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.flight as flight

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batch import active_files, run, size_mb  # noqa: E402
from history import config_text, start, stop  # noqa: E402
from speed import free_port  # noqa: E402
from flight_clients import adbc_connect, statement_query  # noqa: E402

SQL = "SELECT * FROM raw.page_views"


class ParquetFlight(flight.FlightServerBase):
    """One stream: the batches of a Delta table's files, as pyarrow.dataset reads them."""

    def __init__(self, location, table_dir, files):
        super().__init__(location)
        self.dataset = ds.dataset(files, format="parquet", partition_base_dir=table_dir,
                                  partitioning=ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive"))

    def get_flight_info(self, context, descriptor):
        return flight.FlightInfo(self.dataset.schema, descriptor, [flight.FlightEndpoint(b"raw", [])], -1, -1)

    def do_get(self, context, ticket):
        return flight.GeneratorStream(self.dataset.schema, self.dataset.to_batches())


def fetch(client, descriptor):
    """GetFlightInfo, then DoGet of each endpoint, reading every batch: rows, bytes, seconds."""
    started = time.perf_counter()
    rows = nbytes = 0
    for endpoint in client.get_flight_info(descriptor).endpoints:
        for chunk in client.do_get(endpoint.ticket):
            rows += chunk.data.num_rows
            nbytes += chunk.data.nbytes
    return rows, nbytes, time.perf_counter() - started


def fetch_adbc(conn):
    started = time.perf_counter()
    rows = nbytes = 0
    with conn.cursor() as cur:
        cur.execute(SQL)
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
            nbytes += batch.nbytes
    return rows, nbytes, time.perf_counter() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strata")
    p.add_argument("--repo")
    p.add_argument("--work")
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--serve-pyarrow", nargs=3, metavar=("PORT", "TABLE_DIR", "FILES_JSON"),
                   help="(internal) serve the files listed in FILES_JSON with pyarrow.flight")
    a = p.parse_args()
    if a.serve_pyarrow:
        port, table_dir, listing = a.serve_pyarrow
        ParquetFlight(f"grpc://127.0.0.1:{port}", table_dir, json.load(open(listing))).serve()
        return

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    config = os.path.join(a.work, "strata.toml")
    open(config, "w").write(config_text(a.repo, views=()))
    env = dict(os.environ, STRATA_LOG="warn")
    strata = lambda *args: run([a.strata, "--config", config, *args], env=env)
    data = os.path.join(a.work, "events.jsonl")
    strata("generate", "--events", str(a.events), "--out", data)
    started = time.perf_counter()
    out = strata("import", "page_views", data)
    imported = int(re.search(r"imported (\d+) events", out).group(1))
    print(f"imported {imported:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    print(strata("batch", "run").strip(), flush=True)
    raw = os.path.join(a.work, "lake", "raw", "page_views")
    files = active_files(raw)
    listing = os.path.join(a.work, "files.json")
    json.dump(files, open(listing, "w"))

    procs = []
    try:
        strata_port, pyarrow_port = free_port(), free_port()
        procs.append(start([a.strata, "--config", config, "serve", "--address", f"127.0.0.1:{strata_port}"],
                           strata_port, "strata serve", env))
        procs.append(start([sys.executable, os.path.abspath(__file__), "--serve-pyarrow", str(pyarrow_port), raw, listing],
                           pyarrow_port, "the pyarrow.flight server"))
        clients = [
            ("strata, Flight SQL (pyarrow.flight client)", flight.FlightClient(f"grpc://127.0.0.1:{strata_port}"),
             flight.FlightDescriptor.for_command(statement_query(SQL))),
            ("pyarrow.flight server (pyarrow.flight client)", flight.FlightClient(f"grpc://127.0.0.1:{pyarrow_port}"),
             flight.FlightDescriptor.for_command(b"raw")),
        ]
        conn = adbc_connect(f"grpc://127.0.0.1:{strata_port}")
        systems = [(name, lambda c=c, d=d: fetch(c, d)) for name, c, d in clients]
        systems.append(("strata, Flight SQL (ADBC client)", lambda: fetch_adbc(conn)))
        best = {}
        for _ in range(a.repeat):
            for name, go in systems:
                rows, nbytes, seconds = go()
                assert rows == imported, (name, rows, imported)
                print(f"  {name}: {rows:,} rows, {nbytes / 1e6:.1f} MB in {seconds:.3f} s", flush=True)
                if name not in best or seconds < best[name][2]:
                    best[name] = (rows, nbytes, seconds)
        conn.close()
    finally:
        stop(*procs)

    base = best[clients[1][0]][2]
    print()
    print(f"SELECT * FROM raw.page_views: {imported:,} rows, {len(files)} Parquet files ({size_mb(files):.1f} MB), "
          f"{os.cpu_count()} cores, best of {a.repeat}")
    print("| system | rows | Arrow MB | best (s) | rows/s | MB/s | vs pyarrow.flight |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (rows, nbytes, seconds) in best.items():
        print(f"| {name} | {rows:,} | {nbytes / 1e6:.1f} | {seconds:.3f} | {rows / seconds:,.0f} | "
              f"{nbytes / 1e6 / seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
