// Drives the Arrow Flight SQL JDBC driver the way DBeaver does when it connects and browses,
// then runs statements, and writes everything it saw as one JSON document. Run as a
// single-file program (tests/python/jdbc.py does):
//
//   java --add-opens=java.base/java.nio=ALL-UNNAMED -Duser.timezone=UTC \
//        -cp flight-sql-jdbc-driver.jar tests/java/FlightSqlJdbc.java URL OUT.json [QUERY...]
//
// Each QUERY is NAME<TAB>SQL, then one <TAB>KIND:VALUE per parameter (KIND s: string,
// l: long, d: double, t: timestamp as an ISO instant). A query without parameters runs as
// a Statement, one with them as a PreparedStatement. Values are written as JSON: numbers as
// numbers (doubles as Java prints them, which reads back to the same double), timestamps
// as microseconds since the epoch, dates as ISO dates, bytes as hex. Any failure (a refused token, say) ends
// the program with the driver's exception and a non-zero exit status.

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;

public class FlightSqlJdbc {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: FlightSqlJdbc URL OUT.json [NAME<TAB>SQL<TAB>KIND:VALUE...]...");
            System.exit(2);
        }
        StringBuilder out = new StringBuilder("{");
        try (Connection conn = DriverManager.getConnection(args[0])) {
            browse(conn.getMetaData(), out);
            out.append(",\"queries\":{");
            for (int i = 2; i < args.length; i++) {
                String[] parts = args[i].split("\t", -1);
                if (i > 2) out.append(',');
                string(out, parts[0]).append(':');
                query(conn, parts, out);
            }
            out.append('}');
        }
        out.append('}');
        Files.writeString(Path.of(args[1]), out.toString(), StandardCharsets.UTF_8);
    }

    /** What DBeaver asks on connect and when a user opens the tree of the database. */
    static void browse(DatabaseMetaData md, StringBuilder out) throws SQLException {
        out.append("\"product\":");
        string(out, md.getDatabaseProductName());
        out.append(",\"productVersion\":");
        string(out, md.getDatabaseProductVersion());
        out.append(",\"keywords\":");
        string(out, md.getSQLKeywords());
        out.append(",\"identifierQuote\":");
        string(out, md.getIdentifierQuoteString());
        out.append(",\"readOnly\":").append(md.isReadOnly());
        out.append(",\"catalogs\":");
        rows(md.getCatalogs(), out, "TABLE_CAT");
        out.append(",\"schemas\":");
        rows(md.getSchemas(), out, "TABLE_CATALOG", "TABLE_SCHEM");
        out.append(",\"tableTypes\":");
        List<String> types = new ArrayList<>();
        try (ResultSet rs = md.getTableTypes()) {
            while (rs.next()) types.add(rs.getString("TABLE_TYPE"));
        }
        list(out, types);
        out.append(",\"tables\":");
        List<String[]> tables = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, null, "%", null)) {
            while (rs.next()) {
                tables.add(new String[] {
                    rs.getString("TABLE_CAT"), rs.getString("TABLE_SCHEM"), rs.getString("TABLE_NAME"),
                    rs.getString("TABLE_TYPE")
                });
            }
        }
        out.append('[');
        for (int i = 0; i < tables.size(); i++) {
            if (i > 0) out.append(',');
            list(out, List.of(tables.get(i)));
        }
        out.append(']');
        out.append(",\"tablesByType\":{");
        for (int i = 0; i < types.size(); i++) {
            if (i > 0) out.append(',');
            string(out, types.get(i)).append(':');
            rows(md.getTables(null, null, "%", new String[] {types.get(i)}), out, "TABLE_SCHEM", "TABLE_NAME");
        }
        out.append('}');
        // Per table, as the tree opens it: the columns with their types, and the keys.
        out.append(",\"columns\":{");
        for (int i = 0; i < tables.size(); i++) {
            String[] t = tables.get(i);
            if (i > 0) out.append(',');
            string(out, t[1] + "." + t[2]).append(':');
            rows(md.getColumns(t[0], t[1], t[2], "%"), out, "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME",
                "ORDINAL_POSITION", "IS_NULLABLE");
        }
        out.append("},\"primaryKeys\":{");
        for (int i = 0; i < tables.size(); i++) {
            String[] t = tables.get(i);
            if (i > 0) out.append(',');
            string(out, t[1] + "." + t[2]).append(':');
            rows(md.getPrimaryKeys(t[0], t[1], t[2]), out, "COLUMN_NAME");
        }
        out.append("},\"typeInfo\":");
        rows(md.getTypeInfo(), out, "TYPE_NAME", "DATA_TYPE");
    }

    /** One query: its columns (name, java.sql.Types code, type name) and its rows. */
    static void query(Connection conn, String[] spec, StringBuilder out) throws SQLException {
        String sql = spec[1];
        ResultSet rs;
        Statement statement;
        int parameters = spec.length - 2;
        if (parameters == 0) {
            statement = conn.createStatement();
            rs = statement.executeQuery(sql);
        } else {
            PreparedStatement ps = conn.prepareStatement(sql);
            statement = ps;
            for (int p = 0; p < parameters; p++) {
                String value = spec[p + 2].substring(2);
                switch (spec[p + 2].charAt(0)) {
                    case 's' -> ps.setString(p + 1, value);
                    case 'l' -> ps.setLong(p + 1, Long.parseLong(value));
                    case 'd' -> ps.setDouble(p + 1, Double.parseDouble(value));
                    case 't' -> ps.setTimestamp(p + 1, Timestamp.from(Instant.parse(value)));
                    default -> throw new IllegalArgumentException("parameter kind: " + spec[p + 2]);
                }
            }
            out.append("{\"parameterCount\":").append(ps.getParameterMetaData().getParameterCount()).append(',');
            rs = ps.executeQuery();
        }
        if (parameters == 0) out.append('{');
        try (statement; rs) {
            ResultSetMetaData meta = rs.getMetaData();
            out.append("\"columns\":[");
            for (int c = 1; c <= meta.getColumnCount(); c++) {
                if (c > 1) out.append(',');
                out.append('[');
                string(out, meta.getColumnLabel(c)).append(',').append(meta.getColumnType(c)).append(',');
                string(out, meta.getColumnTypeName(c)).append(']');
            }
            out.append("],\"rows\":[");
            boolean first = true;
            while (rs.next()) {
                if (!first) out.append(',');
                first = false;
                out.append('[');
                for (int c = 1; c <= meta.getColumnCount(); c++) {
                    if (c > 1) out.append(',');
                    value(out, rs.getObject(c));
                }
                out.append(']');
            }
            out.append("]}");
        }
    }

    static void rows(ResultSet rs, StringBuilder out, String... columns) throws SQLException {
        out.append('[');
        try (rs) {
            boolean first = true;
            while (rs.next()) {
                if (!first) out.append(',');
                first = false;
                out.append('[');
                for (int c = 0; c < columns.length; c++) {
                    if (c > 0) out.append(',');
                    value(out, rs.getObject(columns[c]));
                }
                out.append(']');
            }
        }
        out.append(']');
    }

    static void list(StringBuilder out, List<String> values) {
        out.append('[');
        for (int i = 0; i < values.size(); i++) {
            if (i > 0) out.append(',');
            string(out, values.get(i));
        }
        out.append(']');
    }

    static void value(StringBuilder out, Object v) {
        if (v == null) {
            out.append("null");
        } else if (v instanceof Boolean b) {
            out.append(b);
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isFinite(d)) out.append(Double.toString(d));
            else string(out, Double.toString(d));
        } else if (v instanceof BigDecimal d) {
            out.append(d.toPlainString());
        } else if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte
            || v instanceof BigInteger) {
            out.append(v);
        } else if (v instanceof java.sql.Date d) {
            string(out, d.toLocalDate().toString());
        } else if (v instanceof LocalDate d) {
            string(out, d.toString());
        } else if (v instanceof Timestamp t) {
            micros(out, t.toInstant());
        } else if (v instanceof LocalDateTime t) {
            micros(out, t.toInstant(ZoneOffset.UTC));
        } else if (v instanceof OffsetDateTime t) {
            micros(out, t.toInstant());
        } else if (v instanceof Instant t) {
            micros(out, t);
        } else if (v instanceof byte[] bytes) {
            StringBuilder hex = new StringBuilder();
            for (byte b : bytes) hex.append(String.format("%02x", b));
            string(out, hex.toString());
        } else if (v instanceof String s) {
            string(out, s);
        } else {
            // A type this program does not know: marked, so that the comparison fails naming it.
            string(out, "<" + v.getClass().getName() + "> " + v);
        }
    }

    static void micros(StringBuilder out, Instant t) {
        out.append(Math.addExact(Math.multiplyExact(t.getEpochSecond(), 1_000_000L), t.getNano() / 1_000));
    }

    static StringBuilder string(StringBuilder out, String s) {
        if (s == null) return out.append("null");
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
                    else out.append(c);
                }
            }
        }
        return out.append('"');
    }
}
