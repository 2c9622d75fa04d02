"""Refusals: a wrong token or password, and SQL that is not read-only, over ADBC and
pyarrow.flight. Exits non-zero if anything that should be refused is not."""

import argparse
import sys

import pyarrow.flight as flight

from flight_clients import PyArrowFlightSql, adbc_connect, adbc_query

FORBIDDEN = {
    "CREATE TABLE t (a INT)": "CREATE TABLE is not allowed",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'": "CREATE EXTERNAL TABLE is not allowed",
    "COPY (SELECT 1) TO '/tmp/strata-copy-test.parquet'": "COPY is not allowed",
    "INSERT INTO page_stats VALUES (1)": "INSERT is not allowed",
    "DELETE FROM page_stats": "DELETE is not allowed",
    "UPDATE page_stats SET views = 0": "UPDATE is not allowed",
    "DROP TABLE page_stats": "DROP is not allowed",
    "CREATE VIEW v AS SELECT 1": "CREATE VIEW is not allowed",
}

failures = []


def expect_error(what, fn, fragment):
    try:
        fn()
    except Exception as e:  # the clients raise their own error types
        if fragment.lower() not in str(e).lower():
            failures.append(f"{what}: error without {fragment!r}: {e}")
        return
    failures.append(f"{what}: was not refused")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    a = p.parse_args()

    # Tokens.
    expect_error("no credentials (pyarrow)", lambda: PyArrowFlightSql(a.endpoint).query("SELECT 1"), "authentication required")
    expect_error("wrong token (pyarrow)", lambda: PyArrowFlightSql(a.endpoint, "wrong").query("SELECT 1"), "invalid or expired")
    expect_error("wrong token (ADBC)", lambda: adbc_query(adbc_connect(a.endpoint, token="wrong"), "SELECT 1"), "invalid or expired")
    if PyArrowFlightSql(a.endpoint, a.token).query("SELECT 1 AS one").to_pylist() != [{"one": 1}]:
        failures.append("the right token does not work")

    # Handshake: user and password -> bearer token.
    conn = adbc_connect(a.endpoint, user=a.user, password=a.password)
    if adbc_query(conn, "SELECT 2 AS two").to_pylist() != [{"two": 2}]:
        failures.append("login with user and password does not work")
    conn.close()
    expect_error("wrong password (ADBC)", lambda: adbc_query(adbc_connect(a.endpoint, user=a.user, password="wrong"), "SELECT 1"), "invalid user name or password")
    client = flight.FlightClient(a.endpoint)
    token_pair = client.authenticate_basic_token(a.user, a.password)
    if not token_pair or b"Bearer" not in token_pair[1]:
        failures.append(f"pyarrow basic auth returned {token_pair}")

    # Read-only SQL, over both clients.
    conn = adbc_connect(a.endpoint, token=a.token)
    pyarrow_client = PyArrowFlightSql(a.endpoint, a.token)
    for sql, fragment in FORBIDDEN.items():
        expect_error(f"ADBC {sql}", lambda: adbc_query(conn, sql), fragment)
        expect_error(f"pyarrow {sql}", lambda: pyarrow_client.query(sql), fragment)
    expect_error("bad SQL", lambda: adbc_query(conn, "SELEC 1"), "expected")
    expect_error("unknown table", lambda: adbc_query(conn, "SELECT * FROM nosuch"), "nosuch")
    conn.close()

    if failures:
        for f in failures:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)
    print("security: all refusals as expected")


if __name__ == "__main__":
    main()
