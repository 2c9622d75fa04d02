"""The Arrow Flight SQL JDBC driver (what DBeaver and Tableau load) against ADBC.

Usage: jdbc.py --endpoint grpc[+tls]://127.0.0.1:PORT --token T [--ca ca.pem --scratch DIR]

Runs tests/java/FlightSqlJdbc.java with the driver scripts/setup.sh fetched: it connects with
the token in the JDBC URL and browses as DBeaver does (catalogs, schemas, tables of every
type, columns with their types, primary keys, type info, keywords), then runs Statements and
PreparedStatements with parameters over a view, the raw table and a system table. Every
answer is compared with ADBC's: the same catalog, schemas, tables, column names and types,
and the same rows, value for value. With --ca the endpoint is TLS: the driver connects with
useEncryption=true and a trust store holding the CA (made with keytool in --scratch). A wrong
token, and (over TLS) a driver that does not trust the CA, are refused.

Prints "jdbc: raw rows N" (the raw table's count, for the caller to check against the events
it imported) and "jdbc: every answer equals ADBC".
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from flight_clients import PyArrowFlightSql, adbc_connect, adbc_query, plain_rows

REPO = Path(__file__).resolve().parents[2]
DRIVER_VERSION = "18.2.0"

# The java.sql.Types code the driver gives each Arrow type Strata serves.
JDBC_TYPES = [
    (pa.types.is_boolean, 16, "BOOLEAN"),
    (pa.types.is_int8, -6, "TINYINT"),
    (pa.types.is_int16, 5, "SMALLINT"),
    (pa.types.is_int32, 4, "INTEGER"),
    (pa.types.is_int64, -5, "BIGINT"),
    (pa.types.is_uint64, -5, "BIGINT"),
    (pa.types.is_float32, 6, "FLOAT"),
    (pa.types.is_float64, 8, "DOUBLE"),
    (pa.types.is_string, 12, "VARCHAR"),
    (pa.types.is_large_string, -1, "LONGVARCHAR"),
    (pa.types.is_binary, -3, "VARBINARY"),
    (pa.types.is_large_binary, -4, "LONGVARBINARY"),
    (pa.types.is_timestamp, 93, "TIMESTAMP"),
    (pa.types.is_date32, 91, "DATE"),
]


def jdbc_type(t: pa.DataType) -> int:
    for test, code, _ in JDBC_TYPES:
        if test(t):
            return code
    sys.exit(f"no JDBC type known for the Arrow type {t}: add it to JDBC_TYPES")


def driver_jar() -> Path:
    tools = Path(os.environ.get("STRATA_TOOLS", Path.home() / ".cache" / "strata-tools"))
    jar = tools / f"flight-sql-jdbc-{DRIVER_VERSION}" / f"flight-sql-jdbc-driver-{DRIVER_VERSION}.jar"
    if not jar.is_file():
        sys.exit(f"the Flight SQL JDBC driver is not at {jar}: run scripts/setup.sh")
    return jar


def run_driver(url: str, queries: list[list[str]]) -> tuple[dict | None, str]:
    """Runs the Java program; (its JSON, "") on success, (None, its stderr) on failure."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "jdbc.json"
        cmd = [
            "java",
            "-Xmx512m",
            "--add-opens=java.base/java.nio=ALL-UNNAMED",
            "-Duser.timezone=UTC",
            "-cp",
            str(driver_jar()),
            str(REPO / "tests" / "java" / "FlightSqlJdbc.java"),
            url,
            str(out),
            *["\t".join(q) for q in queries],
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None, done.stderr
        return json.loads(out.read_text()), ""


def same_rows(name: str, jdbc: list[list], adbc: list[list]):
    if len(jdbc) != len(adbc):
        sys.exit(f"{name}: JDBC returned {len(jdbc)} rows, ADBC {len(adbc)}")
    for i, (j, a) in enumerate(zip(jdbc, adbc)):
        # JSON numbers read back to the same double (Java prints doubles round-trippably):
        # equality here is exact.
        if j != a:
            sys.exit(f"{name}: row {i} differs\n  JDBC {j}\n  ADBC {a}")


def param_value(p: str):
    kind, value = p[0], p[2:]
    return {
        "s": lambda: value,
        "l": lambda: int(value),
        "d": lambda: float(value),
        # A naive timestamp: the views' windows are in UTC without a zone.
        "t": lambda: datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None),
    }[kind]()


def check_browse(seen: dict, conn, flight: PyArrowFlightSql):
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    catalogs = [c["catalog_name"] for c in objects]
    if [c[0] for c in seen["catalogs"]] != catalogs:
        sys.exit(f"catalogs: JDBC {seen['catalogs']}, ADBC {catalogs}")
    schemas = sorted((c["catalog_name"], s["db_schema_name"]) for c in objects for s in c["catalog_db_schemas"])
    if sorted(map(tuple, seen["schemas"])) != schemas:
        sys.exit(f"schemas: JDBC {seen['schemas']}, ADBC {schemas}")
    tables = sorted(
        (c["catalog_name"], s["db_schema_name"], t["table_name"], t["table_type"])
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    )
    if sorted(map(tuple, seen["tables"])) != tables:
        sys.exit(f"tables: JDBC {seen['tables']}, ADBC {tables}")
    types = conn.adbc_get_table_types()
    if sorted(seen["tableTypes"]) != sorted(types):
        sys.exit(f"table types: JDBC {seen['tableTypes']}, ADBC {types}")
    for t in types:
        want = sorted((s, n) for _, s, n, tt in tables if tt == t)
        got = sorted(map(tuple, seen["tablesByType"][t]))
        if got != want or not got:
            sys.exit(f"tables of type {t}: JDBC {got}, ADBC {want}")
    print(f"jdbc: {len(tables)} tables of {len(types)} types in schemas {sorted({s for _, s in schemas})}")
    typed = set()
    for catalog, schema, table, _ in tables:
        arrow = conn.adbc_get_table_schema(table, catalog_filter=catalog, db_schema_filter=schema)
        want = [[f.name, jdbc_type(f.type), i + 1] for i, f in enumerate(arrow)]
        got = [[c[0], c[1], c[3]] for c in seen["columns"][f"{schema}.{table}"]]
        if got != want:
            sys.exit(f"columns of {schema}.{table}: JDBC {got}, ADBC {want}")
        typed.update(c[1] for c in got)
        if seen["primaryKeys"][f"{schema}.{table}"]:
            sys.exit(f"{schema}.{table} has no primary key, JDBC says {seen['primaryKeys'][f'{schema}.{table}']}")
    # The driver answers getTypeInfo itself, without asking the server: an empty result set
    # (Avatica's default; DBeaver copes). What it would ask, the server's GetXdbcTypeInfo,
    # must cover every column type (ODBC codes: BOOLEAN is BIT there).
    if seen["typeInfo"]:
        sys.exit(f"getTypeInfo: the driver now answers it ({seen['typeInfo']}): check it against the server's")
    xdbc = flight.xdbc_type_info().to_pylist()
    info = {t["data_type"] for t in xdbc}
    odbc = {16: -7}
    if not {odbc.get(code, code) for code in typed} <= info:
        sys.exit(f"GetXdbcTypeInfo lacks the types {({odbc.get(c, c) for c in typed}) - info} that columns have: {xdbc}")
    if sorted(k.strip() for k in seen["keywords"].split(",")) != ["WINDOW_END", "WINDOW_START"]:
        sys.exit(f"keywords: {seen['keywords']}")
    if seen["product"] != "Strata" or not seen["readOnly"] or seen["identifierQuote"] != '"':
        sys.exit(f"database: {seen['product']} {seen['productVersion']}, read-only {seen['readOnly']}")
    print(f"jdbc: columns of every table typed as ADBC's schema says; {len(info)} types in GetXdbcTypeInfo")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ca", help="the CA's PEM certificate: the endpoint is TLS")
    p.add_argument("--scratch", help="where the trust store goes (with --ca)")
    a = p.parse_args()
    host_port = a.endpoint.split("://", 1)[1]
    ca = open(a.ca).read() if a.ca else None
    conn = adbc_connect(a.endpoint, token=a.token, tls_root_certs=ca)

    base = f"jdbc:arrow-flight-sql://{host_port}/?"
    if a.ca:
        store = Path(a.scratch) / "truststore.jks"
        store.unlink(missing_ok=True)
        subprocess.run(
            ["keytool", "-importcert", "-noprompt", "-alias", "strata-test-ca", "-file", a.ca,
             "-keystore", str(store), "-storepass", "changeit"],
            check=True, capture_output=True,
        )
        tls = f"useEncryption=true&useSystemTrustStore=false&trustStore={store}&trustStorePassword=changeit"
        refused_tls = "useEncryption=true"
    else:
        tls = "useEncryption=false"

    # Parameters taken from the data: a country with rows, a window start in the middle.
    windows = adbc_query(conn, "SELECT window_start, country FROM page_stats WHERE country IS NOT NULL "
                               "ORDER BY window_start, country")
    middle = windows.slice(windows.num_rows // 2, 1).to_pylist()[0]
    country, start = middle["country"], middle["window_start"]
    if start.tzinfo is not None:
        start = start.astimezone(timezone.utc).replace(tzinfo=None)
    device = adbc_query(conn, "SELECT device FROM raw.page_views WHERE device IS NOT NULL LIMIT 1").column(0)[0].as_py()
    queries = [
        ["view", "SELECT * FROM page_stats ORDER BY window_start, country NULLS FIRST"],
        ["raw", "SELECT * FROM raw.page_views ORDER BY _topic, _partition, _offset"],
        ["raw_count", "SELECT count(*) AS n FROM raw.page_views"],
        ["system", "SELECT * FROM system.views ORDER BY 1"],
        ["view_prepared",
         "SELECT window_start, country, views, revenue, sd_latency_ms FROM page_stats "
         "WHERE country = ? AND views >= ? AND window_start >= ? ORDER BY window_start",
         f"s:{country}", "l:1", f"t:{start.isoformat()}Z"],
        ["raw_prepared", "SELECT count(*) AS n, max(latency_ms) AS slowest FROM raw.page_views WHERE device = ?",
         f"s:{device}"],
        ["system_prepared", "SELECT view FROM system.views WHERE view = ?", "s:device_5m"],
    ]
    seen, err = run_driver(f"{base}token={a.token}&{tls}", queries)
    if seen is None:
        sys.exit(f"the JDBC driver failed:\n{err}")

    check_browse(seen, conn, PyArrowFlightSql(a.endpoint, token=a.token, tls_root_certs=ca.encode() if ca else None))
    for name, sql, *params in queries:
        answer = adbc_query(conn, sql, [param_value(v) for v in params] if params else None)
        got = seen["queries"][name]
        want_columns = [[f.name, jdbc_type(f.type)] for f in answer.schema]
        if [c[:2] for c in got["columns"]] != want_columns:
            sys.exit(f"{name}: columns JDBC {got['columns']}, ADBC {want_columns}")
        if params and got["parameterCount"] != len(params):
            sys.exit(f"{name}: the driver sees {got['parameterCount']} parameters, not {len(params)}")
        same_rows(name, got["rows"], plain_rows(answer))
        if not got["rows"]:
            sys.exit(f"{name}: no rows: the query proves nothing")
        print(f"jdbc: {name}: {len(got['rows'])} rows equal")
    print(f"jdbc: raw rows {seen['queries']['raw_count']['rows'][0][0]}")

    # A wrong token is refused when the driver connects; over TLS, so is a driver that does
    # not trust the CA.
    _, err = run_driver(f"{base}token=not-{a.token}&{tls}", [])
    if "UNAUTHENTICATED" not in err.upper():
        sys.exit(f"a wrong token must be refused as unauthenticated; the driver said:\n{err[-2000:]}")
    print("jdbc: a wrong token is refused")
    if a.ca:
        seen, err = run_driver(f"{base}token={a.token}&{refused_tls}", [])
        if seen is not None or not any(m in err for m in ("PKIX", "certificate", "SSLHandshake")):
            sys.exit(f"a driver that does not trust the CA must be refused at the handshake; it said:\n{err[-2000:]}")
        print("jdbc: a driver without the CA in its trust store is refused")
    print("jdbc: every answer equals ADBC")


if __name__ == "__main__":
    main()
