"""BI tools' way in: SQLAlchemy with the Flight SQL dialect (flightsql-dbapi), as Superset
reaches a database.

Usage: bi_sqlalchemy.py --endpoint grpc://HOST:PORT --token T --scratch DIR DATA.jsonl

SQLAlchemy's inspector reflects Strata's schemas, tables and columns; they are compared
with ADBC's (names, and a SQLAlchemy type of the right kind for each Arrow type). Then the
query a time-series chart runs (a time bucket, a filter on time and on a dimension, a
metric, grouped and ordered, as Superset writes it) goes through SQLAlchemy Core, and its
rows are compared with DuckDB computing the same chart from the input events
(the generator's valid lines).
"""

import argparse
import sys
from datetime import timezone
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import types as sat

import flightsql.sqlalchemy  # noqa: F401 - registers the datafusion+flightsql dialect

from flight_clients import adbc_connect
from oracle import duck, load_valid


def utc_micros(t) -> int:
    """A timestamp the dialect returned (pandas or datetime, naive meaning UTC) in microseconds."""
    if hasattr(t, "value"):
        return t.value // 1000
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1_000_000)

# The SQLAlchemy type the dialect must give each Arrow type Strata serves.
KINDS = [
    (pa.types.is_boolean, sat.Boolean),
    (pa.types.is_integer, sat.Integer),
    (pa.types.is_floating, sat.Float),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), sat.String),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), sat._Binary),
    (pa.types.is_timestamp, sat.DateTime),
    (pa.types.is_date, sat.Date),
]


def kind(t: pa.DataType):
    for test, k in KINDS:
        if test(t):
            return k
    sys.exit(f"no SQLAlchemy type expected for the Arrow type {t}: add it to KINDS")


def check_reflection(engine, conn):
    inspector = sa.inspect(engine)
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = {
        s["db_schema_name"]: sorted(t["table_name"] for t in s["db_schema_tables"])
        for c in objects
        for s in c["catalog_db_schemas"]
    }
    schemas = inspector.get_schema_names()
    if sorted(schemas) != sorted(tables):
        sys.exit(f"schemas: SQLAlchemy {schemas}, ADBC {sorted(tables)}")
    columns = 0
    for schema in schemas:
        names = inspector.get_table_names(schema=schema)
        if sorted(names) != tables[schema]:
            sys.exit(f"tables of {schema}: SQLAlchemy {names}, ADBC {tables[schema]}")
        for table in names:
            arrow = conn.adbc_get_table_schema(table, db_schema_filter=schema)
            reflected = inspector.get_columns(table, schema=schema)
            if [c["name"] for c in reflected] != arrow.names:
                sys.exit(f"{schema}.{table}: columns {[c['name'] for c in reflected]}, ADBC {arrow.names}")
            for c, f in zip(reflected, arrow):
                want = kind(f.type)
                if not isinstance(c["type"], want):
                    sys.exit(f"{schema}.{table}.{c['name']}: SQLAlchemy type {c['type']!r} for {f.type}, "
                             f"expected a {want.__name__}")
            columns += len(reflected)
    print(f"sqlalchemy: reflected {len(schemas)} schemas, {sum(map(len, tables.values()))} tables, "
          f"{columns} columns, as ADBC sees them")


def chart_truth(con):
    """The chart of views per 5-minute bucket for the two busiest countries, over the middle
    half of the data's time range (to the second), as DuckDB computes it from the input
    events: (start, end, countries, [(bucket in epoch microseconds, country, views)] ordered
    by views descending, bucket, country). A window's start is its events' minute; the
    chart buckets those."""
    lo, hi = con.execute("SELECT min(ts), max(ts) FROM events").fetchone()
    start = (lo + (hi - lo) / 4).replace(microsecond=0)
    end = (hi - (hi - lo) / 4).replace(microsecond=0)
    countries = [r[0] for r in con.execute(
        "SELECT country FROM events WHERE country IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2"
    ).fetchall()]
    rows = con.execute(
        """SELECT epoch_us(time_bucket(INTERVAL '5 minutes', date_trunc('minute', ts), TIMESTAMPTZ '1970-01-01 00:00:00+00')) AS b,
                  country, count(*) AS views
           FROM events
           WHERE date_trunc('minute', ts) >= ? AND date_trunc('minute', ts) < ? AND country IN (?, ?)
           GROUP BY ALL ORDER BY views DESC, b, country""",
        [start, end, *countries],
    ).fetchall()
    return start, end, countries, [tuple(r) for r in rows]


def chart(engine, con):
    """The chart's query as Superset's query builder writes it, through SQLAlchemy Core."""
    start, end, countries, want = chart_truth(con)
    page_stats = sa.Table("page_stats", sa.MetaData(), autoload_with=engine, schema="public")
    bucket = sa.func.date_bin(sa.literal_column("INTERVAL '5 minutes'"), page_stats.c.window_start)
    ts = lambda t: sa.literal_column(f"TIMESTAMP '{t.strftime('%Y-%m-%d %H:%M:%S')}'")  # noqa: E731
    query = (
        sa.select(bucket.label("__timestamp"), page_stats.c.country, sa.func.sum(page_stats.c.views).label("SUM(views)"))
        .where(page_stats.c.window_start >= ts(start))
        .where(page_stats.c.window_start < ts(end))
        .where(page_stats.c.country.in_(countries))
        .group_by(bucket, page_stats.c.country)
        .order_by(sa.desc("SUM(views)"), "__timestamp", page_stats.c.country)
        .limit(10000)
    )
    with engine.connect() as c:
        got = [(utc_micros(r[0]), r[1], r[2]) for r in c.execute(query).fetchall()]
    if got != want:
        sys.exit(f"the chart's query differs from DuckDB:\n  Strata {got[:10]}...\n  DuckDB {want[:10]}...")
    if len(got) < 4:
        sys.exit(f"the chart has {len(got)} bars: too few to prove anything")
    print(f"sqlalchemy: the chart's query ({len(got)} bars, countries {countries}) equals DuckDB")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("data", nargs="+")
    a = p.parse_args()
    host_port = a.endpoint.split("://", 1)[1]
    engine = sa.create_engine(f"datafusion+flightsql://{host_port}?insecure=true&token={quote(a.token)}")
    conn = adbc_connect(a.endpoint, token=a.token)
    check_reflection(engine, conn)
    valid, _ = load_valid(a.data, a.scratch)
    chart(engine, duck(valid))
    print("sqlalchemy: reflection and the chart's query answer as they should")


if __name__ == "__main__":
    main()
