"""Queries a Strata server all along a test and checks that the events visible in a view
never fall below the events archived before the query: whatever happens to the speed
processes (rebalances, kills, restarts), an answer counts at least everything the lake
holds.

Each round: a = count(*) of raw.<source>, then v = sum(<count column>) of the view. Since
the lake only grows, a is a lower bound of what the view must count at the moment of v.

Usage: monitor.py --endpoint grpc://HOST:PORT --out FILE [--view page_stats --count views
                  --source page_views]
Runs until the file FILE.stop exists; writes a JSON summary to FILE: rounds, failed
queries, and every violation.
"""

import argparse
import json
import os
import time

from flight_clients import PyArrowFlightSql


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--view", default="page_stats")
    p.add_argument("--count", default="views")
    p.add_argument("--source", default="page_views")
    a = p.parse_args()

    client = PyArrowFlightSql(a.endpoint)
    rounds, errors, violations, last_error = 0, 0, [], None
    highest = 0
    started = time.monotonic()
    while not os.path.exists(a.out + ".stop"):
        try:
            archived = client.query(f"SELECT count(*) AS n FROM raw.{a.source}").to_pylist()[0]["n"]
            visible = client.query(f"SELECT coalesce(sum({a.count}), 0) AS n FROM {a.view}").to_pylist()[0]["n"]
        except Exception as e:  # a server restarting, a timeout: counted, not a violation
            errors += 1
            last_error = str(e)[:300]
            time.sleep(0.05)
            continue
        rounds += 1
        highest = max(highest, visible)
        if visible < archived:
            violations.append({"at": round(time.monotonic() - started, 3), "archived": archived, "visible": visible})
    with open(a.out, "w") as f:
        json.dump({"rounds": rounds, "errors": errors, "last_error": last_error, "highest": highest,
                   "violations": violations}, f)


if __name__ == "__main__":
    main()
