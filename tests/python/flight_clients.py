"""Small Flight SQL helpers for the tests: ADBC connections and a pyarrow.flight client.

pyarrow.flight speaks plain Arrow Flight; Flight SQL commands are protobuf messages wrapped
in google.protobuf.Any. The few we need are encoded by hand here, so the tests do not
depend on generated protobuf code.
"""

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import adbc_driver_flightsql.dbapi as adbc


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    # wire type 2: length-delimited
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _any(type_name: str, message: bytes) -> bytes:
    url = f"type.googleapis.com/arrow.flight.protocol.sql.{type_name}".encode()
    return _field(1, url) + _field(2, message)


def statement_query(sql: str) -> bytes:
    """A packed CommandStatementQuery."""
    return _any("CommandStatementQuery", _field(1, sql.encode()))


class PyArrowFlightSql:
    """Runs Flight SQL statements with pyarrow.flight."""

    def __init__(self, endpoint: str, token: str | None = None, tls_root_certs: bytes | None = None):
        self.client = flight.FlightClient(endpoint, tls_root_certs=tls_root_certs)
        self.options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {token}".encode())] if token else []
        )

    def query(self, sql: str) -> pa.Table:
        return self.command(statement_query(sql))

    def xdbc_type_info(self) -> pa.Table:
        """The server's answer to CommandGetXdbcTypeInfo (every type)."""
        return self.command(_any("CommandGetXdbcTypeInfo", b""))

    def command(self, command: bytes) -> pa.Table:
        descriptor = flight.FlightDescriptor.for_command(command)
        info = self.client.get_flight_info(descriptor, self.options)
        tables = [self.client.do_get(ep.ticket, self.options).read_all() for ep in info.endpoints]
        if not tables:
            return info.schema.empty_table()
        return pa.concat_tables(tables)


def adbc_connect(endpoint: str, token: str | None = None, user: str | None = None, password: str | None = None,
                 tls_root_certs: str | None = None):
    kwargs = {}
    if tls_root_certs:
        kwargs["adbc.flight.sql.client_option.tls_root_certs"] = tls_root_certs
    if token:
        kwargs["adbc.flight.sql.authorization_header"] = f"Bearer {token}"
    if user:
        kwargs["username"] = user
        kwargs["password"] = password or ""
    return adbc.connect(endpoint, db_kwargs=kwargs, autocommit=True)


def adbc_query(conn, sql: str, params=None) -> pa.Table:
    with conn.cursor() as cur:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, parameters=params)
        return cur.fetch_arrow_table()


def plain_rows(table: pa.Table) -> list[list]:
    """Rows as plain values, comparable across engines and clients: timestamps as
    microseconds since the epoch (whatever their unit and zone), dates as ISO dates, bytes
    as hex."""
    columns = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("us", col.type.tz)), pa.int64())
        values = col.to_pylist()
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_binary_view(col.type):
            values = [None if v is None else v.hex() for v in values]
        elif pa.types.is_date(col.type):
            values = [None if v is None else v.isoformat() for v in values]
        columns.append(values)
    return [list(row) for row in zip(*columns)]
