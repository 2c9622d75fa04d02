"""Flight SQL over TLS with Python clients: ADBC and pyarrow.flight, trusting the test's CA.

Usage: tls.py --endpoint grpc+tls://127.0.0.1:PORT --ca ca.pem --token T --sql SQL

Prints the first column of the answer of each client ("adbc: [...]", "pyarrow: [...]"), and
checks that a client trusting only the system's roots, and a plaintext one, are refused.
"""

import argparse
import sys

from flight_clients import PyArrowFlightSql, adbc_connect, adbc_query


def refused(what, call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any refusal will do; what matters is that it fails
        print(f"{what}: refused ({type(e).__name__})")
        return
    sys.exit(f"{what}: answered, but must be refused")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--sql", required=True)
    a = p.parse_args()
    ca = open(a.ca, "rb").read()

    conn = adbc_connect(a.endpoint, token=a.token, tls_root_certs=ca.decode())
    adbc = adbc_query(conn, a.sql).column(0).to_pylist()
    print(f"adbc: {adbc}")
    arrow = PyArrowFlightSql(a.endpoint, token=a.token, tls_root_certs=ca).query(a.sql).column(0).to_pylist()
    print(f"pyarrow: {arrow}")
    if adbc != arrow:
        sys.exit(f"the clients disagree: {adbc} != {arrow}")

    refused("ADBC without the CA", lambda: adbc_query(adbc_connect(a.endpoint, token=a.token), a.sql))
    plaintext = a.endpoint.replace("grpc+tls://", "grpc://")
    refused("ADBC in plaintext", lambda: adbc_query(adbc_connect(plaintext, token=a.token), a.sql))
    print("tls: both clients answered over TLS")


if __name__ == "__main__":
    main()
