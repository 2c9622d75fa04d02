"""Apache Superset over Strata: SQL Lab, a chart made through the REST API, and its picture.

Usage: superset.py --endpoint grpc://HOST:PORT --token T --scratch DIR --superset-venv DIR DATA.jsonl

A Superset (the --superset-venv: apache-superset with flightsql-dbapi) gets a fresh sqlite
metadata database in --scratch and runs on a free port. Strata is added as a database
(`datafusion://HOST:PORT?insecure=True&token=T`: the dialect's entry-point name; Superset
refuses `datafusion+flightsql://`). SQL Lab runs the query of bi_sqlalchemy.py's chart (views
per 5-minute bucket for the two busiest countries, over the middle half of the time range);
its rows must equal DuckDB computing the same chart from the input events. Then a dataset
on public.page_stats and a bar chart over it are made through the REST API, the chart's
data is fetched as the frontend fetches it and compared with DuckDB the same way, and
headless Chromium (Playwright, /usr/bin/chromium) opens the chart and saves a screenshot,
which must be a real picture, not a blank page.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from urllib.parse import quote

import requests

from bi_sqlalchemy import chart_truth
from oracle import duck, load_valid

# Debian's Chromium, which scripts/setup.sh installs.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Superset has no engine spec for `datafusion`, so it uses BaseEngineSpec, which knows no
# time grain: asking for one (e.g. time_grain_sqla "PT5M") fails in Superset before any SQL
# reaches Strata ("NotImplementedError: No grain spec for PT5M for database base", HTTP 500
# from /api/v1/chart/data). The chart's x axis is therefore a custom SQL column doing the
# bucketing itself, with no time grain; Superset's SQL parser rewrites it to
# DATE_BIN(INTERVAL '5' MINUTES, window_start), which Strata (DataFusion) accepts.
BUCKET = "date_bin(INTERVAL '5 minutes', window_start)"
METRIC = {"expressionType": "SIMPLE", "column": {"column_name": "views"}, "aggregate": "SUM", "label": "SUM(views)"}


def utc_micros(value) -> int:
    """A timestamp Superset returned (ISO string, naive meaning UTC) in microseconds."""
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1_000_000)


def setup(venv, scratch):
    """A config and a metadata database of its own in scratch; returns the environment."""
    config = os.path.join(scratch, "superset_config.py")
    with open(config, "w") as f:
        f.write(f'SQLALCHEMY_DATABASE_URI = "sqlite:///{os.path.join(scratch, "superset.db")}"\n'
                f'SECRET_KEY = "{secrets.token_hex(32)}"\n'
                "WTF_CSRF_ENABLED = False  # the API and the login form are used without a CSRF token\n")
    env = dict(os.environ, SUPERSET_CONFIG_PATH=config)
    started = time.monotonic()
    for args in (["db", "upgrade"],
                 ["fab", "create-admin", "--username", "admin", "--password", "admin",
                  "--firstname", "Strata", "--lastname", "Test", "--email", "admin@example.com"],
                 ["init"]):
        r = subprocess.run([os.path.join(venv, "bin", "superset"), *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"superset {' '.join(args[:2])} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    print(f"superset: metadata database set up in {time.monotonic() - started:.1f} s")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base, server, log_path, deadline=180):
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        if server.poll() is not None:
            break
        try:
            if requests.get(f"{base}/health", timeout=5).ok:
                print(f"superset: serving at {base} after {time.monotonic() - started:.1f} s")
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    with open(log_path) as f:
        tail = f.read()[-3000:]
    sys.exit(f"superset did not answer /health within {deadline} s (exit code {server.poll()}); its log ends:\n{tail}")


def call(session, method, url, **kwargs):
    r = session.request(method, url, timeout=300, **kwargs)
    if not r.ok:
        sys.exit(f"superset: {method} {url} answered {r.status_code}: {r.text[:3000]}")
    return r.json()


def sql_lab(s, base, db, start, end, countries, want):
    ts = lambda t: f"TIMESTAMP '{t.strftime('%Y-%m-%d %H:%M:%S')}'"  # noqa: E731
    sql = (f'SELECT {BUCKET} AS __timestamp, country, sum(views) AS "SUM(views)"\n'
           f"FROM public.page_stats\n"
           f"WHERE window_start >= {ts(start)} AND window_start < {ts(end)} "
           f"AND country IN ({', '.join(repr(c) for c in countries)})\n"
           f"GROUP BY {BUCKET}, country\n"
           f'ORDER BY "SUM(views)" DESC, __timestamp, country\nLIMIT 10000')
    out = call(s, "POST", f"{base}/api/v1/sqllab/execute/", json={
        "database_id": db, "sql": sql, "schema": "public", "runAsync": False,
        "client_id": secrets.token_hex(5), "queryLimit": 10000, "tab": "strata test"})
    if out.get("status") != "success":
        sys.exit(f"SQL Lab: status {out.get('status')}: {json.dumps(out)[:3000]}")
    got = [(utc_micros(r["__timestamp"]), r["country"], r["SUM(views)"]) for r in out["data"]]
    if got != want:
        sys.exit(f"SQL Lab's rows differ from DuckDB (SQL run: {out['query']['executedSql']}):\n"
                 f"  Superset {got[:10]}...\n  DuckDB   {want[:10]}...")
    if len(got) < 4:
        sys.exit(f"SQL Lab answered {len(got)} rows: too few to prove anything")
    print(f"superset: SQL Lab answered {len(got)} rows, equal to DuckDB")


def chart(s, base, db, start, end, countries, want):
    """A dataset on public.page_stats and a bar chart over it; returns the chart's id."""
    ds = call(s, "POST", f"{base}/api/v1/dataset/", json={"database": db, "schema": "public", "table_name": "page_stats"})["id"]
    time_range = f"{start.strftime('%Y-%m-%dT%H:%M:%S')} : {end.strftime('%Y-%m-%dT%H:%M:%S')}"
    form_data = {
        "datasource": f"{ds}__table", "viz_type": "echarts_timeseries_bar",
        "x_axis": {"expressionType": "SQL", "sqlExpression": BUCKET, "label": "bucket"},
        "time_grain_sqla": None, "metrics": [METRIC], "groupby": ["country"],
        "adhoc_filters": [
            {"expressionType": "SIMPLE", "clause": "WHERE", "subject": "window_start",
             "operator": "TEMPORAL_RANGE", "comparator": time_range},
            {"expressionType": "SIMPLE", "clause": "WHERE", "subject": "country", "operator": "IN", "comparator": countries}],
        "row_limit": 10000, "order_desc": True, "x_axis_sort_asc": True, "show_legend": True,
    }
    # The query context the frontend saves with a chart (buildQuery of the timeseries plugin):
    # one row per bucket, a column per country (pivot, flatten).
    query = {
        "filters": [{"col": "window_start", "op": "TEMPORAL_RANGE", "val": time_range},
                    {"col": "country", "op": "IN", "val": countries}],
        "extras": {"having": "", "where": ""},
        "columns": [{"columnType": "BASE_AXIS", "expressionType": "SQL", "sqlExpression": BUCKET, "label": "bucket"}, "country"],
        "metrics": [METRIC], "orderby": [[METRIC, False]], "row_limit": 10000, "series_columns": ["country"],
        "series_limit": 0, "order_desc": True,
        "post_processing": [
            {"operation": "pivot", "options": {"index": ["bucket"], "columns": ["country"], "drop_missing_columns": False,
                                               "aggregates": {"SUM(views)": {"operator": "mean"}}}},
            {"operation": "flatten"}],
    }
    query_context = {"datasource": {"id": ds, "type": "table"}, "force": True, "queries": [query],
                     "form_data": form_data, "result_format": "json", "result_type": "full"}
    chart_id = call(s, "POST", f"{base}/api/v1/chart/", json={
        "slice_name": "Strata: views per 5 minutes", "viz_type": form_data["viz_type"], "datasource_id": ds,
        "datasource_type": "table", "params": json.dumps(form_data), "query_context": json.dumps(query_context)})["id"]

    result = call(s, "GET", f"{base}/api/v1/chart/{chart_id}/data/?format=json&force=true")["result"][0]
    got = []
    for row in result["data"]:
        for column, value in row.items():
            if column != "bucket" and value is not None:  # no bar: no views in that bucket
                country = result["label_map"][column][1]  # "SUM(views), DE" -> ["SUM(views)", "DE"]
                got.append((round(row["bucket"]) * 1000, country, value))
    if sorted(got) != sorted(want):
        sys.exit(f"the chart's data differs from DuckDB (SQL: {result['query']}):\n"
                 f"  Superset {sorted(got)[:10]}...\n  DuckDB   {sorted(want)[:10]}...")
    print(f"superset: the chart's SQL: {' '.join(result['query'].split())}")
    print(f"superset: the chart's data equals DuckDB ({len(got)} bars in {len(result['data'])} buckets, "
          f"{round(sum(v for _, _, v in got))} views)")
    return chart_id


def png_colours(data):
    """Width, height and the number of distinct colours of a PNG (8-bit RGB or RGBA, not
    interlaced, as Chromium writes them)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"the screenshot is not a PNG: {data[:16]!r}")
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if depth != 8 or ctype not in (2, 6) or interlace:
        sys.exit(f"the screenshot is a PNG of bit depth {depth}, colour type {ctype}, interlace {interlace}: not decoded here")
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    prev, colours = bytearray(stride), set()
    for y in range(h):  # undo each row's filter (PNG spec, section 9)
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 2:
            line = bytearray((x + b) & 255 for x, b in zip(line, prev))
        elif f:
            for i in range(stride):
                a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
                if f == 1:
                    line[i] = (line[i] + a) & 255
                elif f == 3:
                    line[i] = (line[i] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp))
        prev = line
    return w, h, len(colours)


def screenshot(base, chart_id, path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 700})
            # The login form, posted in the browser's context: its session cookie is the browser's.
            r = context.request.post(f"{base}/login/", form={"username": "admin", "password": "admin"})
            if not r.ok or "/login" in r.url:
                sys.exit(f"logging in through the login form failed: {r.status} at {r.url}")
            page = context.new_page()
            page.goto(f"{base}/explore/?slice_id={chart_id}&standalone=true", wait_until="networkidle", timeout=120_000)
            try:
                page.wait_for_selector(".chart-container canvas", timeout=60_000)
            except Exception:
                page.screenshot(path=path)
                sys.exit(f"the chart did not render (page saved to {path}); the page says: {page.inner_text('body')[:2000]}")
            page.wait_for_timeout(2000)  # ECharts animates the bars in for a second
            png = page.locator(".chart-container").screenshot(path=path)
        finally:
            browser.close()
    w, h, colours = png_colours(png)
    if w <= 200 or h <= 200 or colours < 10:
        sys.exit(f"the screenshot {path} is {w}x{h} with {colours} distinct colours: not a chart")
    print(f"superset: chart screenshot {path} ({w}x{h})")


def main():
    started = time.monotonic()
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("--superset-venv", required=True)
    p.add_argument("data", nargs="+")
    a = p.parse_args()
    scratch = os.path.abspath(a.scratch)
    valid, _ = load_valid(a.data, scratch)
    start, end, countries, want = chart_truth(duck(valid))

    env = setup(a.superset_venv, scratch)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(scratch, "superset.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen([os.path.join(a.superset_venv, "bin", "superset"), "run", "-h", "127.0.0.1", "-p", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, server, log_path)
        s = requests.Session()
        login = call(s, "POST", f"{base}/api/v1/security/login",
                     json={"username": "admin", "password": "admin", "provider": "db", "refresh": True})
        s.headers["Authorization"] = f"Bearer {login['access_token']}"
        host_port = a.endpoint.split("://", 1)[1]
        db = call(s, "POST", f"{base}/api/v1/database/", json={
            "database_name": "strata", "sqlalchemy_uri": f"datafusion://{host_port}?insecure=True&token={quote(a.token)}",
            "expose_in_sqllab": True, "allow_run_async": False})["id"]
        sql_lab(s, base, db, start, end, countries, want)
        chart_id = chart(s, base, db, start, end, countries, want)
        screenshot(base, chart_id, os.path.join(scratch, "superset-chart.png"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"superset: SQL Lab, the chart and its screenshot answer as they should ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
