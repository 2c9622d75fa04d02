"""The speed layer's job on the streaming engines people run instead: Flink SQL (PyFlink, a local
cluster in one JVM) and Spark Structured Streaming (pyspark, local[2]), each consuming the
generated clickstream from Apache Kafka and maintaining the two views of strata.example.toml.

The job, the same on both engines, written in each one's SQL or DataFrame API:
  page_stats  1-minute tumbling windows by country: count(*), sum(amount), avg(latency_ms),
              distinct users, the 95th percentile of latency_ms, its sample stddev;
  device_5m   5-minute windows sliding by 1 minute by device, WHERE device IS NOT NULL:
              count(*), count(*) FILTER (url LIKE '/checkout%'), max(latency_ms), distinct users.
Malformed records (1% of the generated ones) are skipped: Flink's json format with
'json.ignore-parse-errors', Spark's from_json with a corrupt-record column; records without an
event time or with one before year 1 (which Strata rejects) are filtered out by both.

Both engines keep every window open and update it with each event, late ones included, as
Strata does (it never drops a late event and shows each one within milliseconds):
  Flink  non-windowed updating GROUP BY (window start computed from ts, FLOOR for the tumbling
         view, a correlated UNNEST of the 5 window starts for the hopping one), mini-batches of
         10 ms (Strata's batch_interval: the longest a micro-batch of Strata's grows while
         records keep coming; it cuts one sooner once caught up), local-global aggregation;
         no watermark. Window TVFs (TUMBLE/HOP with an event-time watermark) emit a window
         only once the watermark passes its end: a minute or more, and they drop late events.
         Distinct users are COUNT(DISTINCT user_id), exact: Flink 2.2's APPROX_COUNT_DISTINCT
         is for batch mode only. The percentile is PERCENTILE (exact). No checkpoints
         (Flink's cheapest setting, no fault tolerance).
  Spark  groupBy(window(ts, ...), key) with approx_count_distinct and percentile_approx (their
         default precision, as bench/batch.py), stddev (sample), no watermark, update output
         mode, the default trigger (a micro-batch as soon as the last one ended), 2 shuffle
         partitions, a checkpoint directory (Spark requires one: offsets and state are written
         each micro-batch). The two views are two streaming queries, each reading the topic
         itself: Structured Streaming runs one sink per query.
Each view goes to a Kafka topic of its own (Flink: upsert-kafka keyed by window and group;
Spark: the kafka sink, the same key), the producer's linger.ms 0: the result a client reads.

Measures:
  cost       EVENTS records are produced to a 4-partition topic first, then one end marker per
             partition (a valid event of its own country and device). The engine starts and
             consumes from the earliest offset; it has consumed everything when its output
             topics hold the rows of all 4 markers in both views (records of a partition are
             consumed in order, so a marker's row means the records before it were consumed).
             The CPU time (user + system) of the engine's whole process tree (the Python driver
             and its JVM, reaped children included) is summed from /proc then, before it is
             stopped. The same job run on a topic holding only the 4 markers gives the fixed
             cost of starting (JVM, planning, first fetch, first output): the table shows events
             per CPU-second with and without it, and events/s of wall time with it deducted.
             What the engine wrote is checked: page_stats read back from its topic (the newest
             row of each key) against count(*) per (window, country) computed here from the
             generated file and its manifest. Strata's row (unless --skip-strata): `strata
             speed` (the archive to the lake on) consuming the same topics, its one process,
             done when its consumed + rejected metric reaches the records produced.
  freshness  the engine runs on a topic of its own under a steady load from
             speed-layer/examples/produce_load.rs, a light one (--light-rate events/s) and a
             heavier one (--rate events/s, or half the rate the slowest engine consumed, start-up
             deducted, if that is lower: a load an engine cannot keep pace with has no
             freshness), each with a job of its own; after --warmup seconds a probe record of its own
             country and the current time is produced alone every PROBE_EVERY s for
             --probe-seconds, and timed from its produce call until a consumer of the page_stats
             output topic (librdkafka, fetch.wait.max.ms 5) receives the row of the probe's
             country. p50/p99 over the probes, and the p50 of the first and of the last tenth
             of them: one growing over the measure means the engine fell behind the load.
             Strata's rows (unless --skip-strata), under the same loads: `strata run` (speed
             and serving in one process) on a topic of its own, timed as bench/speed.py times
             it: from the probe's produce call until a Flight SQL query of page_stats returns
             its row (queries 5 ms apart; each probe's first query, sent as it is produced,
             misses it), probes for up to 15 s once Strata keeps pace with the load.

Run it with scripts/bench.sh engines [EVENTS]. Prints Markdown tables for BENCHMARKS.md.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

# `engines.py flink-job|spark-job ...` runs one engine's job: under PyFlink's own Python (which
# has neither confluent_kafka nor the project's modules), or .venv's for pyspark.
JOB = len(sys.argv) > 1 and sys.argv[1] in ("flink-job", "spark-job")
if not JOB:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

    from speed import (PROBE_EVERY, LOAD_LINGER_MS, TOPIC, PyArrowFlightSql, create_topics, free_port, metric,  # bench/speed.py
                       probe_freshness, probe_record, produce_file, start_kafka, stop, wait_assigned, wait_port)

VIEWS = ("page_stats", "device_5m")
PARTITIONS = 4

# --- the job on Flink SQL ---------------------------------------------------------------------

FLINK_SOURCE = """
CREATE TABLE page_views (
  ts STRING, user_id STRING, country STRING, url STRING, device STRING, latency_ms STRING, amount STRING
) WITH (
  'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{brokers}',
  'properties.group.id' = 'flink-{topic}', 'scan.startup.mode' = 'earliest-offset',
  'properties.fetch.max.wait.ms' = '5', 'format' = 'json', 'json.ignore-parse-errors' = 'true'
)"""
# upsert-kafka's key columns are NOT NULL: the null country's group is keyed ''.
FLINK_SINKS = """
CREATE TABLE page_stats (
  window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), country STRING, `views` BIGINT,
  revenue DOUBLE, avg_latency_ms DOUBLE, `users` BIGINT, p95_latency_ms DOUBLE, sd_latency_ms DOUBLE,
  PRIMARY KEY (window_start, country) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{out}page_stats', 'properties.bootstrap.servers' = '{brokers}',
  'key.format' = 'json', 'value.format' = 'json', 'properties.linger.ms' = '0'
);
CREATE TABLE device_5m (
  window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), device STRING, `views` BIGINT,
  checkouts BIGINT, max_latency_ms BIGINT, `users` BIGINT,
  PRIMARY KEY (window_start, device) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{out}device_5m', 'properties.bootstrap.servers' = '{brokers}',
  'key.format' = 'json', 'value.format' = 'json', 'properties.linger.ms' = '0'
)"""
# Valid events: an event time, from year 1 on, and numbers where numbers are due (Strata rejects
# the others). The json format reads a TIMESTAMP_LTZ only as ...Z (the generator writes a few
# event times with an offset, +02:00, and microseconds), and TO_TIMESTAMP_LTZ with an offset
# pattern ignores the offset: the offset is applied here; year 0 does not parse (NULL). With
# 'json.ignore-parse-errors' a field of the wrong type is NULL, its row kept: the numbers are
# read as text (a JSON number's text) and cast here, a row whose cast fails is dropped.
FLINK_EVENTS = """
CREATE TEMPORARY VIEW events AS
SELECT * FROM (
  SELECT TIMESTAMPADD(MINUTE, off, TO_TIMESTAMP_LTZ(local_ts, 'yyyy-MM-dd''T''HH:mm:ss[.SSSSSSSSS][.SSSSSS][.SSS]', 'UTC')) AS ts,
         user_id, country, url, device, latency AS latency_ms, amount_value AS amount,
         (latency_ms IS NULL OR latency IS NOT NULL) AND (amount IS NULL OR amount_value IS NOT NULL) AS typed
  FROM (
    SELECT *,
      CASE WHEN ts LIKE '%Z' THEN SUBSTRING(ts FROM 1 FOR CHAR_LENGTH(ts) - 1)
           WHEN REGEXP(ts, '[-+][0-9]{2}:[0-9]{2}$') THEN SUBSTRING(ts FROM 1 FOR CHAR_LENGTH(ts) - 6) END AS local_ts,
      TRY_CAST(latency_ms AS BIGINT) AS latency, TRY_CAST(amount AS DOUBLE) AS amount_value,
      CASE WHEN ts LIKE '%Z' THEN 0
           WHEN REGEXP(ts, '[-+][0-9]{2}:[0-9]{2}$') THEN
             (CASE WHEN SUBSTRING(ts FROM CHAR_LENGTH(ts) - 5 FOR 1) = '+' THEN -1 ELSE 1 END)
             * (CAST(SUBSTRING(ts FROM CHAR_LENGTH(ts) - 4 FOR 2) AS INT) * 60
                + CAST(SUBSTRING(ts FROM CHAR_LENGTH(ts) - 1 FOR 2) AS INT)) END AS off
    FROM page_views))
WHERE ts IS NOT NULL AND typed"""
FLINK_PAGE_STATS = """
INSERT INTO page_stats
SELECT FLOOR(ts TO MINUTE), FLOOR(ts TO MINUTE) + INTERVAL '1' MINUTE, COALESCE(country, ''),
       COUNT(*), SUM(amount), AVG(CAST(latency_ms AS DOUBLE)), COUNT(DISTINCT user_id),
       PERCENTILE(latency_ms, 0.95), STDDEV_SAMP(CAST(latency_ms AS DOUBLE))
FROM events
GROUP BY FLOOR(ts TO MINUTE), COALESCE(country, '')"""
# The 5 windows an event falls in, by a correlated UNNEST (a constant array would be planned
# as a join keeping every event in its state).
FLINK_DEVICE_5M = """
INSERT INTO device_5m
SELECT window_start, window_start + INTERVAL '5' MINUTE, device,
       COUNT(*), COUNT(*) FILTER (WHERE url LIKE '/checkout%'), MAX(latency_ms), COUNT(DISTINCT user_id)
FROM (SELECT h.window_start, device, url, latency_ms, user_id
      FROM events CROSS JOIN UNNEST(ARRAY[
        FLOOR(ts TO MINUTE), FLOOR(ts TO MINUTE) - INTERVAL '1' MINUTE, FLOOR(ts TO MINUTE) - INTERVAL '2' MINUTE,
        FLOOR(ts TO MINUTE) - INTERVAL '3' MINUTE, FLOOR(ts TO MINUTE) - INTERVAL '4' MINUTE]) AS h(window_start)
      WHERE device IS NOT NULL)
GROUP BY window_start, device"""


def flink_job(a):
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    for key, value in {
        "pipeline.jars": ";".join(f"file://{j}" for j in a.jars),
        "parallelism.default": "2",
        "table.local-time-zone": "UTC",
        "table.exec.mini-batch.enabled": "true",
        "table.exec.mini-batch.allow-latency": "10 ms",
        "table.exec.mini-batch.size": "5000",
    }.items():
        config.set(key, value)
    env.execute_sql(FLINK_SOURCE.format(topic=a.topic, brokers=a.brokers))
    for ddl in FLINK_SINKS.format(out=a.out, brokers=a.brokers).split(";"):
        env.execute_sql(ddl)
    env.execute_sql(FLINK_EVENTS)
    statements = env.create_statement_set()
    statements.add_insert_sql(FLINK_PAGE_STATS)
    statements.add_insert_sql(FLINK_DEVICE_5M)
    statements.execute().wait()


# --- the job on Spark Structured Streaming ---------------------------------------------------


def spark_job(a):
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

    spark = (SparkSession.builder.master("local[2]").appName("strata-engines")
             .config("spark.jars", ",".join(a.jars))
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "4g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = StructType([StructField("ts", TimestampType()), StructField("user_id", StringType()),
                         StructField("country", StringType()), StructField("url", StringType()),
                         StructField("device", StringType()), StructField("latency_ms", LongType()),
                         StructField("amount", DoubleType()), StructField("_corrupt", StringType())])

    def events():
        raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", a.brokers)
               .option("subscribe", a.topic).option("startingOffsets", "earliest").load())
        parsed = raw.select(F.from_json(F.col("value").cast("string"), schema,
                                        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}).alias("e"))
        return parsed.select("e.*").where("_corrupt IS NULL AND ts IS NOT NULL AND ts >= TIMESTAMP'0001-01-01 00:00:00'")

    page_stats = (events().groupBy(F.window("ts", "1 minute"), "country")
                  .agg(F.count("*").alias("views"), F.sum("amount").alias("revenue"),
                       F.avg("latency_ms").alias("avg_latency_ms"), F.approx_count_distinct("user_id").alias("users"),
                       F.percentile_approx("latency_ms", 0.95).alias("p95_latency_ms"),
                       F.stddev("latency_ms").alias("sd_latency_ms")))
    device_5m = (events().where("device IS NOT NULL").groupBy(F.window("ts", "5 minutes", "1 minute"), "device")
                 .agg(F.count("*").alias("views"),
                      F.count(F.when(F.col("url").like("/checkout%"), 1)).alias("checkouts"),
                      F.max("latency_ms").alias("max_latency_ms"), F.approx_count_distinct("user_id").alias("users")))
    queries = []
    for name, df, group in (("page_stats", page_stats, "country"), ("device_5m", device_5m, "device")):
        columns = [c for c in df.columns if c != "window"]
        out = df.select(F.to_json(F.struct(F.col("window.start").alias("window_start"), group)).alias("key"),
                        F.to_json(F.struct(F.col("window.start").alias("window_start"),
                                           F.col("window.end").alias("window_end"), *columns)).alias("value"))
        queries.append(out.writeStream.format("kafka").outputMode("update")
                       .option("kafka.bootstrap.servers", a.brokers).option("topic", f"{a.out}{name}")
                       .option("kafka.linger.ms", "0")
                       .option("checkpointLocation", os.path.join(a.checkpoint, name)).start())
    spark.streams.awaitAnyTermination()


def job_main():
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=("flink-job", "spark-job"))
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True, help="prefix of the output topics")
    p.add_argument("--jars", nargs="+", required=True)
    p.add_argument("--checkpoint")
    a = p.parse_args()
    (flink_job if a.engine == "flink-job" else spark_job)(a)


# --- the benchmark ----------------------------------------------------------------------------


def tree_cpu(root):
    """CPU seconds (user + system) of process `root` and its descendants, the children they
    have already reaped included; and the pids of the tree."""
    parent, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK"), tree


class Engine:
    """One engine's job as a process group of its own (the driver and the JVM it starts)."""

    def __init__(self, name, a, brokers, topic, out, work):
        self.name, self.out, self.pids = name, out, set()
        log = open(os.path.join(work, f"{out}job.log"), "w")
        here = os.path.abspath(__file__)
        if name == "flink":
            cmd = [a.pyflink, here, "flink-job", "--jars", *a.flink_jars]
        elif name == "spark":
            cmd = [sys.executable, here, "spark-job", "--jars", *a.spark_jars,
                   "--checkpoint", os.path.join(work, f"{out}checkpoint")]
        else:
            raise ValueError(name)
        cmd += ["--brokers", brokers, "--topic", topic, "--out", out]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def cpu(self):
        seconds, tree = tree_cpu(self.proc.pid)
        self.pids |= tree
        return seconds

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM to the job's process group, SIGKILL after 20 s; then SIGKILL to any process
        of its tree seen while it ran that is still there (a JVM that left the group)."""
        self.cpu()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)
        for pid in self.pids - {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Reader(threading.Thread):
    """Reads the output topics of a job as a client would (librdkafka, fetch.wait.max.ms 5):
    keeps the newest row of each key per view, and when each watched group (a country or a
    device) first shows up in a view."""

    def __init__(self, brokers, out, start):
        super().__init__(daemon=True)
        self.topics = {f"{out}{v}": v for v in VIEWS}
        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"reader-{out}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        self.consumer.assign([TopicPartition(t, 0, start) for t in self.topics])
        self.latest = {v: {} for v in VIEWS}
        self.seen = {v: {} for v in VIEWS}  # group -> perf_counter when its first row arrived
        self.messages = 0
        self.stopped = threading.Event()
        self.start()

    def run(self):
        while not self.stopped.is_set():
            for m in self.consumer.consume(10000, 0.05):
                if m.error() or m.key() is None:
                    continue
                now = time.perf_counter()
                view = self.topics[m.topic()]
                self.messages += 1
                self.latest[view][m.key()] = m.value()
                key = json.loads(m.key())
                group = key.get("country" if view == "page_stats" else "device")
                self.seen[view].setdefault(group, now)
        self.consumer.close()

    def has(self, view, groups):
        return all(g in self.seen[view] for g in groups)

    def stop(self):
        self.stopped.set()
        self.join(30)

    def page_views(self, exclude):
        """page_stats as read: {(window start 'YYYY-MM-DD HH:MM', country or ''): views}, the
        newest row of each key, but those of the groups in `exclude`."""
        views = {}
        for value in self.latest["page_stats"].values():
            if value:  # a tombstone deletes its key
                row = json.loads(value)
                if row.get("country") not in exclude:
                    views[(row["window_start"][:16].replace("T", " "), row.get("country") or "")] = row["views"]
        return views


def expected_page_views(data):
    """The oracle: page_stats' count(*) per (window start, country) over the valid records of
    `data` (its manifest lists the malformed ones), event times read as Strata reads them."""
    malformed = {m["line"] for m in json.load(open(data + ".manifest.json"))["malformed"]}
    views = {}
    with open(data, "rb") as f:
        for number, line in enumerate(f, 1):
            if number not in malformed:
                event = json.loads(line)
                ts = datetime.fromisoformat(event["ts"]).astimezone(timezone.utc)
                key = (ts.strftime("%Y-%m-%d %H:%M"), event.get("country") or "")
                views[key] = views.get(key, 0) + 1
    return views


def produce_markers(brokers, topic, tag):
    """One valid event per partition, of its own country and device `{tag}-{partition}`."""
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
    names = [f"{tag}-{k}" for k in range(PARTITIONS)]
    for k, name in enumerate(names):
        p.produce(topic, value=probe_record(name, who=name), partition=k)
    p.flush(30)
    return names


def wait_for(what, done, deadline, alive=lambda: True):
    while not done():
        if not alive():
            raise RuntimeError(f"{what}: the job exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within the deadline")
        time.sleep(0.05)


def engine_consume(name, a, brokers, topic, out, markers):
    """Runs `name`'s job on `topic` (already holding its records and end markers) until both
    views show every marker; returns (CPU seconds of its process tree, wall seconds since its
    start, page_stats' views per key but the markers' (Reader.page_views), output messages)."""
    reader = Reader(brokers, out, OFFSET_BEGINNING)
    engine = Engine(name, a, brokers, topic, out, a.work)
    try:
        wait_for(f"{name} on {topic}", lambda: all(reader.has(v, markers) for v in VIEWS),
                 time.monotonic() + a.deadline, engine.alive)
        cpu, wall = engine.cpu(), time.perf_counter() - engine.started
        time.sleep(2)  # rows of the other aggregating task still in flight, for the count only
        return cpu, wall, reader.page_views(set(markers)), reader.messages
    finally:
        engine.stop()
        reader.stop()


def strata_config(a, topic):
    """The example config (its views, the archive on; no batch schedule) on `topic`, a lake of
    its own, fetches waited for at most 5 ms as the other engines' (bench/speed.py's too)."""
    config = os.path.join(a.work, f"strata-{topic}.toml")
    text = (open(os.path.join(a.repo, "strata.example.toml")).read().replace('interval = "5m"\n', "")
            .replace('"auto.offset.reset" = "earliest"', '"auto.offset.reset" = "earliest"\n"fetch.wait.max.ms" = "5"')
            .replace('topics = ["page_views"]', f'topics = ["{topic}"]').replace('url = "./lake"', f'url = "./lake-{topic}"'))
    open(config, "w").write(text)
    return config


def strata_consume(a, brokers, topic, records):
    """`strata speed` (the example config's views, the archive on) consuming `topic` from the
    start: (CPU seconds of its process, wall seconds since its start) once it has consumed
    `records` (valid and rejected)."""
    config = strata_config(a, topic)
    metrics_port = free_port()
    started = time.perf_counter()
    speed = subprocess.Popen([a.strata, "--config", config, "speed", "--address", f"127.0.0.1:{free_port()}",
                              "--metrics-address", f"127.0.0.1:{metrics_port}"],
                             env=dict(os.environ, STRATA_LOG="warn", STRATA_KAFKA_BROKERS=brokers),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(metrics_port, speed, "strata speed")
        consumed = lambda: (metric(metrics_port, "strata_events_consumed_total")
                            + metric(metrics_port, "strata_events_rejected_total"))
        wait_for("strata speed", lambda: consumed() >= records, time.monotonic() + a.deadline,
                 lambda: speed.poll() is None)
        cpu, _ = tree_cpu(speed.pid)
        return cpu, time.perf_counter() - started
    finally:
        speed.terminate()
        speed.wait(60)


def freshness(name, a, brokers, data, rate, k):
    """`name`'s job on a topic of its own (the k-th) under a steady load of `rate` events/s;
    probes timed from their produce call to their row in the page_stats output topic. Returns
    the latencies in ms, in the order the probes were sent, and the number of probes sent."""
    topic, out = f"fresh{k}_{name}", f"{name}_fresh{k}_"
    create_topics(brokers, [topic])
    create_topics(brokers, [f"{out}{v}" for v in VIEWS], partitions=1)
    reader = Reader(brokers, out, OFFSET_END)
    engine = Engine(name, a, brokers, topic, out, a.work)
    load = None
    try:
        # Running: one record per partition shows in the output.
        warm = produce_markers(brokers, topic, f"warm{k}")
        wait_for(f"{name} starting", lambda: reader.has("page_stats", warm), time.monotonic() + a.deadline, engine.alive)
        load = subprocess.Popen([a.produce_load, brokers, topic, str(PARTITIONS), data, str(int(rate)),
                                 str(LOAD_LINGER_MS)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        time.sleep(a.warmup)  # steady state, a wait of the measure's definition
        probe = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
        sent = {}
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < a.probe_seconds:  # a measuring window
            country = f"P{k}-{n:05d}"
            record = probe_record(country)
            sent[country] = time.perf_counter()
            probe.produce(topic, key=b"probe", value=record, partition=n % PARTITIONS)
            probe.poll(0)
            n += 1
            time.sleep(PROBE_EVERY)
        probe.flush(30)
        try:
            wait_for(f"{name}'s probes", lambda: reader.has("page_stats", sent), time.monotonic() + 60, engine.alive)
        except RuntimeError as e:
            print(f"{name}: {e}", flush=True)
        latencies = [(reader.seen["page_stats"][c] - t) * 1000 for c, t in sent.items() if c in reader.seen["page_stats"]]
        return latencies, len(sent)
    finally:
        if load:
            load.stdin.close()
            load.wait(60)
        engine.stop()
        reader.stop()


def strata_freshness(a, brokers, data, rate, k):
    """Strata's freshness as bench/speed.py times it, under the same load as the other engines:
    `strata run` (speed and serving in one process) on a topic of its own; once it keeps pace
    with the load, a probe record every PROBE_EVERY s for up to 15 s, each timed from its
    produce call until a Flight SQL query of page_stats (pyarrow.flight) returns its row: a
    query, a pause of 5 ms, again. Returns the latencies in ms, in the order the probes were
    sent, and the number of probes sent."""
    topic = f"fresh{k}_strata"
    create_topics(brokers, [topic])
    serve_port, metrics_port = free_port(), free_port()
    run = subprocess.Popen([a.strata, "--config", strata_config(a, topic), "run", "--address", f"127.0.0.1:{serve_port}",
                            "--metrics-address", f"127.0.0.1:{metrics_port}"],
                           env=dict(os.environ, STRATA_LOG="warn", STRATA_KAFKA_BROKERS=brokers), cwd=a.work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(serve_port, run, "strata run")
        wait_assigned(brokers, [topic], metrics_port)
        client = PyArrowFlightSql(f"grpc://127.0.0.1:{serve_port}")
        probes = int(a.probe_seconds / PROBE_EVERY)
        *_, latencies = probe_freshness(brokers, topic, client, metrics_port, a.produce_load, data, rate, probes)
        return latencies, len(latencies)
    finally:
        stop(run)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def trend(latencies):
    """p50 of the first and of the last tenth of the probes, in the order they were sent: a
    latency that grows over the measure means the engine falls behind the load."""
    tenth = max(1, len(latencies) // 10)
    return f"{percentile(latencies[:tenth], 0.5):.0f} -> {percentile(latencies[-tenth:], 0.5):.0f} ms"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strata", required=True, help="to generate the events; and Strata's row unless --skip-strata")
    p.add_argument("--skip-strata", action="store_true")
    p.add_argument("--produce-load", required=True)
    p.add_argument("--kafka-broker", required=True, help="scripts/kafka-broker")
    p.add_argument("--pyflink", required=True, help="the Python of PyFlink's environment")
    p.add_argument("--flink-jars", nargs="+", required=True)
    p.add_argument("--spark-jars", nargs="+", required=True)
    p.add_argument("--engines", nargs="*", default=["flink", "spark"], choices=["flink", "spark"])
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--rate", type=float, default=10_000,
                   help="the heavier steady load of the freshness measure, events/s (at most half the slowest engine's rate)")
    p.add_argument("--light-rate", type=float, default=1_000, help="the light steady load of the freshness measure")
    p.add_argument("--warmup", type=float, default=10)
    p.add_argument("--probe-seconds", type=float, default=15)
    p.add_argument("--deadline", type=float, default=900, help="seconds an engine run may take")
    a = p.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    kafka, brokers = start_kafka(a.kafka_broker, a.work)
    try:
        create_topics(brokers, [TOPIC, "idle"])
        data = os.path.join(a.work, "events.jsonl")
        subprocess.run([a.strata, "--config", os.path.join(a.repo, "strata.example.toml"), "generate", "--events", str(a.events), "--out", data,
                        "--start", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600)), "--span", "1h"],
                       check=True, capture_output=True)
        valid = json.load(open(data + ".manifest.json"))["valid"]
        expected = expected_page_views(data)
        sizes = [len(line) for line in open(data, "rb")]
        started = time.perf_counter()
        n = produce_file(brokers, data)
        markers = produce_markers(brokers, TOPIC, "END")
        idle = produce_markers(brokers, "idle", "END")
        print(f"produced {n:,} records ({valid:,} valid, {statistics.mean(sizes):.0f} bytes on average) "
              f"and {len(markers)} end markers in {time.perf_counter() - started:.1f} s", flush=True)

        cost = []
        if not a.skip_strata:
            fixed_cpu, fixed_wall = strata_consume(a, brokers, "idle", len(idle))
            print(f"strata, start-up (markers only): {fixed_cpu:.1f} CPU-s, {fixed_wall:.1f} s", flush=True)
            cpu, wall = strata_consume(a, brokers, TOPIC, n + len(markers))
            print(f"strata: {cpu:.1f} CPU-s, {wall:.1f} s", flush=True)
            cost.append(("strata", cpu, wall, fixed_cpu, fixed_wall, "(not read: Flight SQL)"))
        for name in a.engines:
            outs = [f"{name}_idle_", f"{name}_"]
            create_topics(brokers, [f"{o}{v}" for o in outs for v in VIEWS], partitions=1)
            fixed_cpu, fixed_wall, _, _ = engine_consume(name, a, brokers, "idle", outs[0], idle)
            print(f"{name}, start-up (markers only): {fixed_cpu:.1f} CPU-s, {fixed_wall:.1f} s", flush=True)
            cpu, wall, views, messages = engine_consume(name, a, brokers, TOPIC, outs[1], markers)
            right = sum(1 for key, count in expected.items() if views.get(key) == count)
            counted = f"{sum(views.values()):,} events; {right:,} of {len(expected):,} rows right"
            print(f"{name}: {cpu:.1f} CPU-s, {wall:.1f} s, page_stats: {counted} ({len(views):,} rows), "
                  f"{messages:,} output messages", flush=True)
            cost.append((name, cpu, wall, fixed_cpu, fixed_wall, counted))

        # Two steady loads, the same for every engine: a light one, and --rate or half what the
        # slowest engine consumed per second (start-up deducted) if that is lower: a load an
        # engine cannot keep pace with has no freshness.
        rate = min([a.rate] + [n / max(wall - fixed_wall, 1e-9) / 2 for name, cpu, wall, fixed_cpu, fixed_wall, _ in cost
                               if name != "strata"])
        fresh = []
        for load_rate in sorted({min(a.light_rate, rate), rate}):
            for name in ([] if a.skip_strata else ["strata"]) + a.engines:
                latencies, sent = (strata_freshness(a, brokers, data, load_rate, len(fresh)) if name == "strata"
                                   else freshness(name, a, brokers, data, load_rate, len(fresh)))
                if latencies:
                    print(f"{name}: freshness at {load_rate:,.0f} events/s: p50 {percentile(latencies, 0.5):.0f} ms, "
                          f"p99 {percentile(latencies, 0.99):.0f} ms, first -> last tenth {trend(latencies)} "
                          f"({len(latencies)} of {sent} probes seen)", flush=True)
                fresh.append((name, load_rate, latencies, sent))

        cores = os.cpu_count()
        print()
        print(f"{n:,} records ({valid:,} valid) of {statistics.mean(sizes):.0f} bytes on average, "
              f"{PARTITIONS} partitions, {cores} cores")
        print()
        print("| consume EVENTS from the earliest offset | CPU-s (process tree) | wall s (start to all consumed) "
              "| events / CPU-s | start-up CPU-s / wall s (markers only) | events / CPU-s, start-up deducted "
              "| events/s, start-up deducted | page_stats read from its output topic: views, rows equal to the oracle's count(*) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, cpu, wall, fixed_cpu, fixed_wall, counted in cost:
            per = lambda seconds: f"{n / seconds:,.0f}" if seconds > 0 else "n/a"
            print(f"| {name} | {cpu:.1f} | {wall:.1f} | {per(cpu)} | {fixed_cpu:.1f} / {fixed_wall:.1f} | "
                  f"{per(cpu - fixed_cpu)} | {per(wall - fixed_wall)} | {counted} |")
        print()
        print("| freshness: probe produced -> its row in page_stats as a client reads it (Flink, Spark: from the output "
              "topic; Strata: a Flight SQL query) | p50 | p99 | max "
              "| p50, first -> last tenth of the probes | probes seen |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, load_rate, latencies, sent in fresh:
            if latencies:
                print(f"| {name}, {load_rate:,.0f} events/s | {percentile(latencies, 0.5):.0f} ms | "
                      f"{percentile(latencies, 0.99):.0f} ms | {max(latencies):.0f} ms | {trend(latencies)} | "
                      f"{len(latencies)} of {sent} |")
            else:
                print(f"| {name}, {load_rate:,.0f} events/s | | | | | 0 of {sent} |")
    finally:
        stop(kafka)


if __name__ == "__main__":
    job_main() if JOB else main()
