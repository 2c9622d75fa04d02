"""Speed-layer benchmark, in one run on one machine (ingest on Apache Kafka, freshness on
   Apache Kafka and on librdkafka's mock broker):

  ingest     events/s (and per core) of `strata speed` consuming the generated clickstream
             (JSON records of 100-200 bytes) with the example config's two views, a tumbling
             and a hopping one, both with approx_distinct, the archive to the lake on; beside
             librdkafka's raw consume rate (speed-layer/examples/raw_consume.rs) as ceiling.
  freshness  p50/p99 from the produce call to visible through Flight SQL, under a steady
             load at half the measured ingest rate, and under a light load; on Apache Kafka and on
             librdkafka's mock cluster run as a broker process (speed-layer/examples/
             mock_broker.rs). Each load goes to topics of its own, so no load pays for the
             records an earlier one left on the broker. Probe records, produced alone every
             PROBE_EVERY s, are timed, not the load. Beside each figure, the broker's own
             floor: bare librdkafka consuming the same load and timing the same kind of
             probes from their produce to their consumption (raw_consume follow). And what
             explains each figure: Strata's own consumed -> visible time (its metric
             strata_speed_visible_seconds, by bucket bound), the probe's query time, and the
             queries a probe took (the first, sent as it is produced, misses it). Strata is
             measured twice: as configured by default, and with serve.real_time_recency (a
             query first waits until the speed layer has consumed what Kafka held of its
             partitions when the query arrived).
  cost       events consumed per CPU-second of the consuming process alone (its own user +
             system time, so the broker and the load generator sharing the cores do not blur
             it): `strata speed` catching up on the produced records and under a steady load,
             on Apache Kafka and on the mock broker; beside it bare librdkafka consuming and
             touching every payload. With --profile, where `strata speed`'s CPU goes while it
             catches up (perf, by component).
  memory     bytes per live (window, group) state, from system.freshness.

Run it with scripts/bench.sh speed [EVENTS]. Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from flight_clients import PyArrowFlightSql  # noqa: E402

TOPIC = "page_views"
POLL_PAUSE = 0.005
# A probe record every PROBE_EVERY seconds, produced alone (linger.ms = 0) with the key
# "probe"; the load's records have no key.
PROBE_EVERY = 0.05
# The load batches as high-rate producers do (librdkafka's linger.ms; its default is 5). The
# probes, not the load, are timed.
LOAD_LINGER_MS = 20


def probe_record(country, who="probe"):
    """A valid event of its own `country`, now, marked as `who`'s."""
    return json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user_id": who,
                       "country": country, "url": f"/{who}", "device": who, "latency_ms": 1}).encode()


_HANDED_OUT = set()


def free_port():
    """A port free now, never one this process handed out before: the kernel may give the
    same ephemeral port to two binds in a row once the first socket is closed, and two
    servers of a run would then race for it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port, proc, what):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited")
            time.sleep(0.02)
    raise SystemExit(f"{what} did not listen on {port}")


def start_kafka(kafka_broker, work):
    """Starts Apache Kafka (scripts/kafka-broker) on a free port of 127.0.0.1, its data under
    `work`, and waits until it listens. Returns the process and its bootstrap address."""
    port = free_port()
    kafka = subprocess.Popen([kafka_broker, os.path.join(work, "kafka"), str(port), str(free_port())],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, kafka, "Apache Kafka")
    except BaseException:
        kafka.kill()
        kafka.wait()
        raise
    return kafka, f"127.0.0.1:{port}"


def stop(*procs):
    """Stops each process (by its pid: SIGTERM, then SIGKILL after 30 s)."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def create_topics(brokers, topics, partitions=4):
    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.monotonic() + 60
    while True:
        try:
            for future in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
                future.result(30)
            return
        except Exception as e:  # the broker may still be starting
            if "TOPIC_ALREADY_EXISTS" in str(e):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cpu_seconds(pid):
    """User + system CPU time of a running process (all its threads) so far."""
    return sum(cpu_split(pid)[:2])


def cpu_split(pid):
    """User and system CPU seconds of a running process (all its threads) so far, and its
    minor page faults."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])


def reap(proc):
    """Waits for `proc` to exit; returns its CPU seconds (user + system, all threads)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def metrics_text(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric(port, name):
    text = metrics_text(port)
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def histogram(port, name):
    """The cumulative bucket counts of a Prometheus histogram (summed over its labels), by
    upper bound."""
    text = metrics_text(port)
    buckets = {}
    for le, count in re.findall(rf'^{name}_bucket{{(?:[^}}]*,)?le="([^"]+)"}} (\S+)$', text, re.M):
        buckets[float(le)] = buckets.get(float(le), 0) + float(count)
    return buckets


def bucket_quantile(before, after, q):
    """The upper bound of the bucket holding quantile `q` of what a histogram observed
    between two readings (see histogram)."""
    delta = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = delta[-1][1] if delta else 0
    return next((le for le, count in delta if total and count >= q * total), None)


def consumed_count(metrics_port):
    """Records Strata has consumed, valid or rejected."""
    return metric(metrics_port, "strata_events_consumed_total") + metric(metrics_port, "strata_events_rejected_total")


def produce_file(brokers, path, partitions=4):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 2000000})
    n = 0
    with open(path, "rb") as f:
        for line in f:
            while True:
                try:
                    p.produce(TOPIC, value=line.rstrip(b"\n"), partition=n % partitions)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
    p.flush(120)
    return n


def probe_freshness(brokers, topic, client, metrics_port, produce_load, data, rate, probes):
    """Produces the records of `data` to `topic` at `rate` in the background (with
    speed-layer/examples/produce_load.rs: a Python producer would take a core); meanwhile
    sends `probes` records of their own country, one every 50 ms, timing each from its
    produce call to its first appearance in page_stats over Flight SQL. Returns p50 and p99
    in ms, how far the consumer was behind the producer when the probes ended, and what
    explains the figures: the p50 and p99 of Strata's own consumed -> visible time
    (`strata_speed_visible_seconds`, bucket bounds in ms), the probe's queries' p50 in ms,
    and the queries a probe took on average (the first is sent as it is produced, and
    misses it); and every probe's latency in ms, in the order they were sent."""
    sent = [0]
    load = subprocess.Popen([produce_load, brokers, topic, "4", data, str(int(rate)), str(LOAD_LINGER_MS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def count():
        for line in load.stdout:
            sent[0] = int(line)

    counter = threading.Thread(target=count)
    consumed_before = consumed_count(metrics_port)
    counter.start()
    probe = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
    latencies = []
    # Steady state first: the consumer keeps pace with the load for a second.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        consumed = consumed_count(metrics_port)
        if sent[0] > rate and consumed - consumed_before >= sent[0] - rate * 0.05:
            break
        time.sleep(0.05)
    probing = time.monotonic()
    visible_before = histogram(metrics_port, "strata_speed_visible_seconds")
    query_times = []
    for k in range(probes):
        if time.monotonic() - probing > 15 and latencies:
            break  # enough: the load keeps growing the broker's memory
        country = f"Z{int(rate)}-{k:05d}"
        record = probe_record(country)
        started = time.perf_counter()
        probe.produce(topic, key=b"probe", value=record, partition=k % 4)
        probe.poll(0)
        while True:
            probe.poll(0)
            queried = time.perf_counter()
            found = client.query(f"SELECT views FROM page_stats WHERE country = '{country}'").num_rows
            query_times.append(time.perf_counter() - queried)
            if found:
                latencies.append(time.perf_counter() - started)
                break
            if time.perf_counter() - started > 60:
                raise SystemExit(f"probe {country} never became visible")
            # Queries back to back would take a core from the system measured; a pause of
            # POLL_PAUSE adds at most that to a measure.
            time.sleep(POLL_PAUSE)
        time.sleep(max(0.0, PROBE_EVERY - (time.perf_counter() - started)))
    probe.flush(30)  # delivery reports served: every probe was seen already
    consumed = consumed_count(metrics_port)
    behind = max(0, sent[0] + len(latencies) - (consumed - consumed_before))
    visible_after = histogram(metrics_port, "strata_speed_visible_seconds")
    load.stdin.close()
    counter.join()
    if load.wait(60) != 0:
        raise SystemExit("the load generator failed")
    # Let the consumer drain before the next load.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        consumed = consumed_count(metrics_port)
        if consumed - consumed_before >= sent[0] + len(latencies):
            break
        time.sleep(0.1)
    if not latencies:
        raise SystemExit("no probe was timed")
    in_order = [t * 1000 for t in latencies]
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    visible = [bucket_quantile(visible_before, visible_after, q) for q in (0.5, 0.99)]
    if None in visible:
        raise SystemExit("strata_speed_visible_seconds observed no micro-batch during the probes")
    queries = len(query_times)
    query_times.sort()
    explained = (visible[0] * 1000, visible[1] * 1000, query_times[queries // 2] * 1000, queries / len(latencies))
    return p50, p99, behind, explained, in_order


def floor_delay(brokers, topic, raw_consume, produce_load, data, rate, seconds):
    """The broker's floor at `rate`: bare librdkafka (raw_consume follow, fetch.wait.max.ms
    as Strata's) consuming the same steady load, and timing probe records produced as
    Strata's probes are (one every PROBE_EVERY s, alone, keyed "probe") from their produce
    to their consumption. Returns p50 and p99 in ms, and the records the consumer consumed
    per CPU-second of its own."""
    consumer = subprocess.Popen([raw_consume, brokers, topic, "follow", "fetch.wait.max.ms=5"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    load = subprocess.Popen([produce_load, brokers, topic, "4", data, str(int(rate)), str(LOAD_LINGER_MS)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    probe = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
    started = time.monotonic()
    k = 0
    while time.monotonic() - started < seconds:  # a measuring window, not a readiness wait
        probe.produce(topic, key=b"probe", value=probe_record("floor"), partition=k % 4)
        probe.poll(0)
        k += 1
        time.sleep(PROBE_EVERY)
    probe.flush(30)
    load.stdin.close()
    if load.wait(60) != 0:
        raise SystemExit("the load generator failed")
    consumer.stdin.close()
    out = consumer.stdout.read()
    cpu = reap(consumer)
    messages, p50, p99, _, total = (int(x) for x in out.split())
    if messages == 0:
        raise SystemExit(f"raw_consume follow saw no probe records on {topic}")
    return float(p50), float(p99), total / cpu


def steady_cost(brokers, topic, args, text, data, rate, env, name, seconds=10):
    """Records `strata speed` consumes per CPU-second of its own under a steady load at
    `rate` on `topic` (measured over `seconds` once it keeps pace), with the example config's
    views and the archive on."""
    config = os.path.join(args.work, f"cost-{name}.toml")
    open(config, "w").write(text.replace('topics = ["page_views"]', f'topics = ["{topic}"]')
                            .replace('url = "./lake"', f'url = "./cost-lake-{name}"'))
    metrics_port = free_port()
    speed = subprocess.Popen([args.strata, "--config", config, "speed", "--address", f"127.0.0.1:{free_port()}",
                              "--metrics-address", f"127.0.0.1:{metrics_port}"],
                             env=dict(env, STRATA_KAFKA_BROKERS=brokers), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    load = None
    try:
        wait_port(metrics_port, speed, "strata speed")
        wait_assigned(brokers, [topic], metrics_port)
        load = subprocess.Popen([args.produce_load, brokers, topic, "4", data, str(int(rate)), str(LOAD_LINGER_MS)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        before = consumed_count(metrics_port)
        deadline = time.monotonic() + 30
        while consumed_count(metrics_port) - before < rate:  # the first second of the load consumed
            if time.monotonic() > deadline:
                raise SystemExit(f"strata speed consumed nothing of the load on {topic}")
            time.sleep(0.05)
        events, cpu = consumed_count(metrics_port), cpu_seconds(speed.pid)
        time.sleep(seconds)  # a measuring window, not a readiness wait
        events, cpu = consumed_count(metrics_port) - events, cpu_seconds(speed.pid) - cpu
    finally:
        if load:
            load.stdin.close()
            load.wait(60)
        speed.terminate()
        speed.wait(60)
    return events / cpu


def wait_assigned(brokers, topics, metrics_port):
    """Produces a record to each of the topics' 4 partitions and waits until Strata has
    consumed them: its partitions are assigned before a load starts (librdkafka's mock
    broker keeps only ~5 MB per partition, so a consumer that joins late finds records gone)."""
    before = consumed_count(metrics_port)
    p = Producer({"bootstrap.servers": brokers})
    record = probe_record("warm", who="warm")
    for topic in topics:
        for partition in range(4):
            p.produce(topic, value=record, partition=partition)
    p.flush(30)
    deadline = time.monotonic() + 60
    while consumed_count(metrics_port) < before + 4 * len(topics):
        if time.monotonic() > deadline:
            raise SystemExit("strata was not assigned its partitions within 60 s")
        time.sleep(0.05)


def phase_topics(rates):
    """Per load: a topic for the broker's floor, one for Strata and one for Strata with
    real-time recency, each load on topics of its own (no load pays for the records an
    earlier one left on the broker)."""
    return [(f"floor_{i}", f"fresh_{i}", f"recent_{i}") for i in range(len(rates))]


# Strata's freshness is measured twice: as configured by default, and with
# serve.real_time_recency (a query waits until the speed layer has consumed what Kafka held).
RECENCY_MODES = (("default", False), ("real_time_recency", True))


# The topic of the steady-load cost measure (steady_cost).
COST_TOPIC = "cost"


def freshness_on(broker, brokers, args, text, data, rates, env):
    """Freshness on one broker: the broker's floor, then `strata run` (speed + serving in
    one process) under each steady load, each on topics of its own (phase_topics). The
    load generator and the broker share the machine's cores with Strata."""
    rows = []
    topics = phase_topics(rates)
    floors = {rate: floor_delay(brokers, floor, args.raw_consume, args.produce_load, data, rate, 15)
              for rate, (floor, *_) in zip(rates, topics)}
    for rate, (p50, p99, per_cpu) in floors.items():
        print(f"{broker}: floor (bare librdkafka) at {rate:,.0f} events/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms; "
              f"{per_cpu:,.0f} records per CPU-second", flush=True)
    cost = steady_cost(brokers, COST_TOPIC, args, text, data, rates[-1], env, broker)
    print(f"{broker}: strata speed under {rates[-1]:,.0f} events/s: {cost:,.0f} records per CPU-second", flush=True)
    memory = None
    for m, (mode, recency) in enumerate(RECENCY_MODES):
        mode_topics = [t[1 + m] for t in topics]
        config = os.path.join(args.work, f"fresh-{broker}-{mode}.toml")
        open(config, "w").write(text.replace('topics = ["page_views"]', f"topics = {json.dumps(mode_topics)}")
                                .replace('url = "./lake"', f'url = "./fresh-lake-{broker}-{mode}"')
                                .replace("real_time_recency = false", f"real_time_recency = {str(recency).lower()}"))
        serve_port, metrics_port = free_port(), free_port()
        run = subprocess.Popen([args.strata, "--config", config, "run", "--address", f"127.0.0.1:{serve_port}",
                                "--metrics-address", f"127.0.0.1:{metrics_port}"],
                               env=dict(env, STRATA_KAFKA_BROKERS=brokers), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            wait_port(serve_port, run, "strata run")
            wait_assigned(brokers, mode_topics, metrics_port)
            client = PyArrowFlightSql(f"grpc://127.0.0.1:{serve_port}")
            for rate, topic in zip(rates, mode_topics):
                p50, p99, behind, explained, _ = probe_freshness(brokers, topic, client, metrics_port,
                                                              args.produce_load, data, rate, args.probes)
                print(f"{broker} ({mode}): freshness at {rate:,.0f} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
                      f"consumer behind the producer by {behind:,.0f} events at the end; consumed -> visible "
                      f"p50 <= {explained[0]:g} ms, p99 <= {explained[1]:g} ms; the probe's queries p50 "
                      f"{explained[2]:.1f} ms, {explained[3]:.1f} per probe", flush=True)
                rows.append((broker, mode, rate, p50, p99, behind, *floors[rate][:2], explained))
            if memory is None:
                memory = client.query("SELECT view, speed_states, speed_state_bytes, bytes_per_state "
                                      "FROM system.freshness ORDER BY view").to_pylist()
            if recency:
                missed = metric(metrics_port, "strata_speed_recency_missed_total")
                print(f"{broker} ({mode}): queries that waited out serve.real_time_recency_timeout: {missed:.0f}",
                      flush=True)
        finally:
            run.terminate()
            run.wait(60)
    return rows, memory, (rates[-1], cost, floors[rates[-1]][2])


# Where a sampled function belongs, by the first pattern its name matches.
COMPONENTS = [
    ("librdkafka (fetch, protocol, queues)", r"rd_kafka|rd_buf|rd_slice|rd_crc|crc32|rdkafka|zstd|lz4|snappy"),
    ("decode (JSON to Arrow)", r"strata_core::decode|serde_json|simd_json|arrow_json|chrono|parse_time"),
    ("aggregate (window states, sketches)", r"aggregate|hyperloglog|kll|hll|sketch|datafusion|hash_|ahash|hashbrown"),
    ("archive (Parquet encode, Delta commit)", r"parquet|deltalake|delta_kernel|archive|object_store|flate|brotli"),
    ("Arrow kernels (concat, take, casts)", r"arrow"),
    ("memory (allocation, copies)", r"malloc|free|realloc|memcpy|memmove|memset|alloc::|_int_"),
    ("kernel (system calls, scheduling)", r"\[k\]|^0x|kernel|syscall|futex|epoll"),
]


def profile_table(data):
    """A Markdown table of where the sampled CPU went, by component, from perf's flat report."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym",
                          "--percent-limit", "0"], capture_output=True, text=True).stdout
    shares = {name: 0.0 for name, _ in COMPONENTS}
    other, top = 0.0, []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\[.\])\s+(.*)", line)
        if not m:
            continue
        share, symbol = float(m.group(1)), f"{m.group(2)} {m.group(3).strip()}"
        top.append((share, symbol))
        for name, pattern in COMPONENTS:
            if re.search(pattern, symbol, re.I):
                shares[name] += share
                break
        else:
            other += share
    lines = ["| where strata speed's CPU went while catching up (perf, 499 Hz) | share |", "|---|---:|"]
    lines += [f"| {name} | {share:.1f}% |" for name, share in sorted(shares.items(), key=lambda kv: -kv[1])]
    lines.append(f"| other | {other:.1f}% |")
    lines += ["", "| hottest functions | share |", "|---|---:|"]
    lines += [f"| `{symbol[:110]}` | {share:.1f}% |" for share, symbol in sorted(top, reverse=True)[:20]]
    return "\n".join(lines)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--strata", required=True)
    a.add_argument("--raw-consume", required=True)
    a.add_argument("--produce-load", required=True)
    a.add_argument("--mock-broker", required=True)
    a.add_argument("--kafka-broker", required=True, help="scripts/kafka-broker")
    a.add_argument("--repo", required=True)
    a.add_argument("--work", required=True)
    a.add_argument("--events", type=int, default=2_000_000)
    a.add_argument("--probes", type=int, default=200)
    a.add_argument("--light-rate", type=float, default=10_000)
    a.add_argument("--profile", action="store_true", help="where strata speed's CPU goes (perf; PERF_EXTRA adds perf record options, e.g. --call-graph dwarf)")
    a.add_argument("--ingest-only", action="store_true", help="stop after the catch-up measure (and its profile)")
    args = a.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    kafka, brokers = start_kafka(args.kafka_broker, args.work)
    procs = [kafka]
    try:
        create_topics(brokers, [TOPIC])
        config = os.path.join(args.work, "strata.toml")
        text = (open(os.path.join(args.repo, "strata.example.toml")).read().replace('interval = "5m"\n', "")
                .replace('"auto.offset.reset" = "earliest"', '"auto.offset.reset" = "earliest"\n"fetch.wait.max.ms" = "5"'))
        if "real_time_recency = false" not in text:
            raise SystemExit("strata.example.toml no longer sets serve.real_time_recency: update bench/speed.py")
        open(config, "w").write(text)
        env = dict(os.environ, STRATA_LOG="warn", STRATA_KAFKA_BROKERS=brokers)
        data = os.path.join(args.work, "events.jsonl")
        subprocess.run([args.strata, "--config", config, "generate", "--events", str(args.events), "--out", data,
                        "--start", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600)), "--span", "1h"],
                       check=True, capture_output=True)
        sizes = [len(l) for l in open(data, "rb")]
        print(f"{len(sizes):,} records, {statistics.mean(sizes):.0f} bytes on average "
              f"(p5 {sorted(sizes)[len(sizes) // 20]}, p95 {sorted(sizes)[len(sizes) * 19 // 20]})", flush=True)
        started = time.perf_counter()
        n = produce_file(brokers, data)
        print(f"produced {n:,} in {time.perf_counter() - started:.1f} s", flush=True)

        # The ceiling: librdkafka alone.
        raw = subprocess.Popen([args.raw_consume, brokers, TOPIC, str(n)], stdout=subprocess.PIPE, text=True)
        out = raw.stdout.read()
        raw_cpu = reap(raw)
        messages, seconds, _, _ = out.split()
        ceiling = int(messages) / float(seconds)
        raw_per_cpu = int(messages) / raw_cpu
        print(f"librdkafka raw consume: {ceiling:,.0f} messages/s, {raw_per_cpu:,.0f} per CPU-second", flush=True)

        # Strata's speed layer: consume, compute both views' states, archive.
        metrics_port = free_port()
        speed = subprocess.Popen([args.strata, "--config", config, "speed", "--address", f"127.0.0.1:{free_port()}",
                                  "--metrics-address", f"127.0.0.1:{metrics_port}"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(speed)
        wait_port(metrics_port, speed, "strata speed")
        first = None
        profiler = None
        while True:
            done = consumed_count(metrics_port)
            if done > 0 and first is None:
                first = (time.perf_counter(), done, cpu_split(speed.pid))
                if args.profile:
                    profiler = subprocess.Popen(["perf", "record", "-F", "499", *os.environ.get("PERF_EXTRA", "").split(), "-p", str(speed.pid), "-o",
                                                 os.path.join(args.work, "perf.data")],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if done >= n:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - first[0]
        ingest = (n - first[1]) / seconds
        user, system, faults = (b - a for a, b in zip(first[2], cpu_split(speed.pid)))
        per_cpu = (n - first[1]) / (user + system)
        cores = os.cpu_count()
        print(f"strata speed: {ingest:,.0f} events/s ({ingest / cores:,.0f} per core), {per_cpu:,.0f} per CPU-second "
              f"({system / (user + system):.0%} of it in the kernel; {faults * 1000 / (n - first[1]):.0f} minor page "
              f"faults per 1,000 records)", flush=True)
        if profiler:
            profiler.send_signal(2)
            profiler.wait(120)
        speed.terminate()
        speed.wait(60)
        procs.remove(speed)
        if args.ingest_only:
            if args.profile:
                print(profile_table(os.path.join(args.work, "perf.data")))
            return

        # Freshness on Apache Kafka, then on librdkafka's mock broker.
        rates = (args.light_rate, ingest / 2)
        create_topics(brokers, [COST_TOPIC, *(t for pair in phase_topics(rates) for t in pair)])
        freshness, memory, kafka_cost = freshness_on("kafka", brokers, args, text, data, rates, env)
        kafka.terminate()
        kafka.wait(30)
        mock = subprocess.Popen([args.mock_broker, f"{COST_TOPIC}:4",
                                 *(f"{t}:4" for pair in phase_topics(rates) for t in pair)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_brokers = mock.stdout.readline().strip()
        rows, memory, mock_cost = freshness_on("mock", mock_brokers, args, text, data, rates, env)
        freshness += rows
        mock.stdin.close()

        print()
        print(f"{n:,} records of {statistics.mean(sizes):.0f} bytes on average, 4 partitions, {cores} cores")
        print("| measure | strata | librdkafka raw consume (ceiling) | ratio | goal |")
        print("|---|---:|---:|---:|---|")
        print(f"| ingest, events/s | {ingest:,.0f} | {ceiling:,.0f} | {ingest / ceiling:.2f} | >= 0.5 |")
        print(f"| ingest, events/s per core | {ingest / cores:,.0f} | {ceiling / cores:,.0f} | | |")
        print()
        print("| freshness, produce -> visible in Flight SQL | strata p50 | strata p99 | broker floor p50 | "
              "broker floor p99 | p99 / floor p99 (goal <= 2) | strata's consumed -> visible p50 / p99 | "
              "probe query p50, queries per probe |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for broker, mode, rate, p50, p99, behind, f50, f99, (v50, v99, q50, per_probe) in freshness:
            print(f"| {broker}, {mode}, {rate:,.0f} events/s (strata behind at the end: {behind:,.0f}) | {p50:.1f} ms | "
                  f"{p99:.1f} ms | {f50:.0f} ms | {f99:.0f} ms | {p99 / max(f99, 1):.1f} | <= {v50:g} / <= {v99:g} ms | "
                  f"{q50:.1f} ms, {per_probe:.1f} |")
        print()
        print("| records per CPU-second of the consumer's own process | strata speed | bare librdkafka | ratio | goal |")
        print("|---|---:|---:|---:|---|")
        print(f"| kafka, catching up on {n:,} records | {per_cpu:,.0f} | {raw_per_cpu:,.0f} | "
              f"{per_cpu / raw_per_cpu:.2f} | >= 500,000 |")
        for broker, (rate, strata_cost, raw_cost) in (("kafka", kafka_cost), ("mock", mock_cost)):
            print(f"| {broker}, steady load at {rate:,.0f} events/s | {strata_cost:,.0f} | {raw_cost:,.0f} | "
                  f"{strata_cost / raw_cost:.2f} | >= 500,000 |")
        print()
        if args.profile:
            print(profile_table(os.path.join(args.work, "perf.data")))
            print()
        print("| memory (mock broker run) | bytes per live state |")
        print("|---|---:|")
        for m in memory:
            print(f"| {m['view']}: {m['speed_states']:,} live states | {m['bytes_per_state'] or 0:.0f} |")
    finally:
        stop(*procs)


if __name__ == "__main__":
    main()
