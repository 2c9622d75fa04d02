"""The batch layer's recompute on Ballista against the local engine, side by side in one run.

  local        `strata batch run --force` with the default config (engine local): DataFusion in
               the batch process, on every core.
  ballista x1  the same command with STRATA_BATCH_ENGINE=ballista: a `strata scheduler` and one
               `strata executor` of 2 task slots (the machine's 2 cores).
  ballista x2  the same with two executors of 1 task slot each.

Each run recomputes the two views of strata.example.toml from the same compacted snapshot of
the benchmark lake (EVENTS generated events, imported, compacted once by a local
`strata batch run` before the timed runs; --force makes every run recompute). A run's time is
the sum of the `published view ... in X s` lines `strata batch run` prints per view
(strata/src/cmd/batch.rs), as in bench/batch.py; the whole command's wall time is shown too.
Best of --repeat runs each, the systems taking turns.

How a Ballista run's time divides comes from the processes' logs (STRATA_LOG, timestamps of
one machine's clock), parsed per job (one job per view):

  batch process  ballista-core distributed_query.rs:528/711 "Connecting to Ballista scheduler
                 at" (the job's submission), :639/:823 "Job J finished executing in D" (the
                 client sees it done); strata_batch's debug "view" event after each view's
                 publication (batch-layer/src/lib.rs).
  scheduler      ballista-scheduler query_stage_scheduler.rs:302 "Job queued", state/mod.rs:429
                 "Job [J] planning took D", query_stage_scheduler.rs:379 "Job submitted", :422
                 "Job finished successfully"; display.rs:63 (debug) "=== [J/S] Stage finished,
                 physical plan with metrics ===", each operator's metrics summed over the
                 stage's tasks: the shuffle writer's write_time, the shuffle reader's fetch_time
                 (partitions of other executors, over Flight, fetched and buffered) and
                 local_read_time (only the opening of local shuffle files: their decoding is
                 in the consuming stream, timed by nothing of its own).
  executors      ballista-executor executor_server.rs:446 "Execute task  : [TID J/S.a/T.a]"
                 and :453 "Finished task : [TID J/S.a/T.a] in D".

What none of them logs is said so in the output: the end of the client's Flight fetch of the
results (its start is the client seeing the job done) and the start of the Delta publication,
so those two are one figure.

Run it with scripts/bench.sh ballista [EVENTS]. Prints Markdown tables for BENCHMARKS.md; the
logs stay in WORK/logs and WORK/ballista-*/.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone

from batch import active_files, run  # bench/batch.py, beside this script
from speed import free_port  # bench/speed.py

VIEWS = ("page_stats", "device_5m")

# strata/src/cmd/batch.rs, print_report.
PUBLISHED = re.compile(r"published view (\S+) version \d+: (\d+) state rows from (\d+) events .* in ([\d.]+)s")

# Log filters (tracing EnvFilter syntax, strata/src/main.rs). The batch process: its views'
# ends (strata_batch debug) and the Ballista client's job lines; the scheduler: its job lines
# at info, the stages' plans with metrics at debug; the executors: their task lines.
BATCH_LOG = "warn,strata_batch=debug,ballista_core::execution_plans::distributed_query=info"
SCHEDULER_LOG = "warn,ballista_scheduler=info,ballista_scheduler::display=debug"
EXECUTOR_LOG = "warn,ballista_executor=info"

NOT_LOGGED = "not logged"


# --- logs -----------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# tracing-subscriber's default format: `2026-12-02T10:11:12.123456Z  INFO target: message`;
# a message of several lines continues on lines without that prefix.
RECORD = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z?\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(.*)$")
DURATION = re.compile(r"\s*([\d.]+)\s*(ns|µs|μs|us|ms|s)\s*")
UNIT = {"ns": 1e-9, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
TID = r"\[TID ([^/\]\s]+)/(\d+)\.\d+/(\d+)\.\d+\]"


class Record:
    def __init__(self, t, level, head):
        self.t, self.level, self.head, self.text = t, level, head, head


def timestamp(text):
    whole, _, fraction = text.partition(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return t + (float("0." + fraction) if fraction else 0.0)


def records(text):
    """A log's records, in order: time (s since the epoch), level, first line, whole text."""
    out = []
    for line in ANSI.sub("", text).splitlines():
        m = RECORD.match(line)
        if m:
            out.append(Record(timestamp(m.group(1)), m.group(2), m.group(3)))
        elif out:
            out[-1].text += "\n" + line
    return out


def duration(text):
    """Seconds of a Rust Duration's Debug (`1.234567s`, `12.3ms`) or a DataFusion metric's
    time (`12.34ms`); None for anything else (counts, sizes, `NOT RECORDED`)."""
    m = DURATION.fullmatch(text)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


METRICS = re.compile(r"metrics=\[(.*)\]\s*$")
METRIC = re.compile(r"(\w+)(?:\{[^}]*\})?=([^,\]]*)")


def plan_times(text):
    """{(operator, metric): seconds} of the time metrics in a plan printed with metrics."""
    out = defaultdict(float)
    for line in text.splitlines():
        m = METRICS.search(line)
        op = re.match(r"\s*(\w+)", line)
        if not m or not op:
            continue
        for name, value in METRIC.findall(m.group(1)):
            s = duration(value)
            if s is not None:
                out[(op.group(1), name)] += s
    return out


def busy(intervals):
    """How long at least one of the intervals was running."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


class Job:
    def __init__(self, job_id):
        self.id = job_id
        self.view = None
        # batch process
        self.connect = self.notice = self.view_end = self.view_seconds = None
        self.client_execution = None  # the scheduler's started..ended, as the client reports it
        # scheduler
        self.queued = self.submitted = self.finished = self.planning = None
        self.stages = {}  # stage -> {(operator, metric): seconds}
        # executors: (stage, task) -> [executor, start, end, seconds]
        self.tasks = {}

    def segments(self):
        """The job's time, divided: (name, seconds or None) in order."""
        def diff(a, b):
            return b - a if a is not None and b is not None else None
        starts = [t[1] for t in self.tasks.values() if t[1] is not None]
        ends = [t[2] for t in self.tasks.values() if t[2] is not None]
        first, last = (min(starts) if starts else None), (max(ends) if ends else None)
        view_start = self.view_end - self.view_seconds if None not in (self.view_end, self.view_seconds) else None
        planning = self.planning if self.planning is not None else diff(self.queued, self.submitted)
        return [
            ("before submit", diff(view_start, self.connect)),
            ("submit", diff(self.connect, self.queued)),
            ("planning", planning),
            ("task launch", diff(self.submitted, first)),
            ("executing", diff(first, last)),
            ("status report", diff(last, self.finished)),
            ("client sees it", diff(self.finished, self.notice)),
            ("fetch + publish", diff(self.notice, self.view_end)),
        ]

    def total(self):
        return self.finished - self.queued if None not in (self.queued, self.finished) else None

    def task_seconds(self):
        s = [t[3] for t in self.tasks.values() if t[3] is not None]
        return sum(s) if s else None

    def idle(self):
        """Within `executing`, the time no task ran on any executor (the scheduler between
        stages, status round trips)."""
        spans = [(t[1], t[2]) for t in self.tasks.values() if t[1] is not None and t[2] is not None]
        if not spans:
            return None
        return max(b for _, b in spans) - min(a for a, _ in spans) - busy(spans)

    def shuffle(self):
        """Seconds summed over the job's stages and tasks: shuffle write, remote fetch, local
        read; None for what no stage logged."""
        def total(reader, metric):
            values = [s for stage in self.stages.values() for (op, m), s in stage.items()
                      if "Shuffle" in op and reader in op and m == metric]
            return sum(values) if values else None
        return total("Writer", "write_time"), total("Reader", "fetch_time"), total("Reader", "local_read_time")

    def stage_rows(self):
        """Per stage: tasks, task time summed, first start to last end, shuffle write, fetch,
        local read."""
        rows = []
        for stage in sorted({s for s, _ in self.tasks} | set(self.stages)):
            tasks = [t for (s, _), t in self.tasks.items() if s == stage]
            seconds = [t[3] for t in tasks if t[3] is not None]
            starts = [t[1] for t in tasks if t[1] is not None]
            ends = [t[2] for t in tasks if t[2] is not None]
            metrics = self.stages.get(stage)

            def metric(reader, name):
                if metrics is None:
                    return None
                values = [s for (op, m), s in metrics.items() if "Shuffle" in op and reader in op and m == name]
                return sum(values) if values else None
            by_executor = defaultdict(int)
            for t in tasks:
                by_executor[t[0]] += 1
            rows.append((stage, len(tasks), sum(seconds) if seconds else None,
                         max(ends) - min(starts) if starts and ends else None,
                         metric("Writer", "write_time"), metric("Reader", "fetch_time"),
                         metric("Reader", "local_read_time"), dict(by_executor)))
        return rows


def parse_jobs(batch_log, view_seconds, scheduler_log, executor_logs):
    """The Ballista jobs of one `strata batch run`, from its log and the scheduler's and
    executors' logs of the same time."""
    jobs = []
    last_connect = None
    for r in records(batch_log):
        if "Connecting to Ballista scheduler at" in r.text and "distributed_query" in r.head:
            last_connect = r.t
            continue
        m = re.search(r"Job (\S+) finished executing in (\S+)", r.text)
        if m:
            job = Job(m.group(1))
            job.connect, job.notice, job.client_execution = last_connect, r.t, duration(m.group(2))
            jobs.append(job)
            last_connect = None
            continue
        m = re.search(r"\bview view=(\w+)", r.text)
        if m:
            for job in jobs:
                if job.view is None:
                    job.view, job.view_end = m.group(1), r.t
                    job.view_seconds = view_seconds.get(job.view)
    sched = records(scheduler_log)
    if not jobs:
        # The client's lines are missing: the scheduler's jobs in order, a view each.
        ids = [m.group(1) for r in sched for m in [re.search(r"Job queued: \[([^\]]+)\]", r.text)] if m]
        for job_id, view in zip(ids, VIEWS if len(ids) == len(VIEWS) else [None] * len(ids)):
            job = Job(job_id)
            job.view, job.view_seconds = view, view_seconds.get(view)
            jobs.append(job)
    by_id = {j.id: j for j in jobs}
    for r in sched:
        for pattern, field in [(r"Job queued: \[([^\]]+)\]", "queued"),
                               (r"Job submitted: \[([^\]]+)\]", "submitted"),
                               (r"Job finished successfully: \[([^\]]+)\]", "finished")]:
            m = re.search(pattern, r.text)
            if m and m.group(1) in by_id and getattr(by_id[m.group(1)], field) is None:
                setattr(by_id[m.group(1)], field, r.t)
        m = re.search(r"Job \[([^\]]+)\] planning took (\S+)", r.text)
        if m and m.group(1) in by_id:
            by_id[m.group(1)].planning = duration(m.group(2))
        m = re.search(r"=== \[([^/\]]+)/(\d+)\] Stage finished", r.text)
        if m and m.group(1) in by_id:
            by_id[m.group(1)].stages[int(m.group(2))] = plan_times(r.text)
    for name, text in executor_logs.items():
        for r in records(text):
            m = re.search(r"Execute task\s*:\s*" + TID, r.text)
            if m and m.group(1) in by_id:
                task = by_id[m.group(1)].tasks.setdefault((int(m.group(2)), int(m.group(3))), [name, None, None, None])
                task[1] = r.t
                continue
            m = re.search(r"Finished task\s*:\s*" + TID + r" in (\S+)", r.text)
            if m and m.group(1) in by_id:
                task = by_id[m.group(1)].tasks.setdefault((int(m.group(2)), int(m.group(3))), [name, None, None, None])
                task[2], task[3] = r.t, duration(m.group(4))
    return jobs


# --- processes ------------------------------------------------------------------------------

def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_until(what, ready, proc, log, timeout=60):
    """Polls `ready` until it holds; fails if `proc` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; its log: {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} was not ready within {timeout} s; its log: {log}")
        time.sleep(0.02)


def read(path, offset=0):
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read()


class Process:
    def __init__(self, name, cmd, env, stdout, stderr):
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)

    def stop(self, grace=30):
        """SIGTERM, then SIGKILL after `grace` seconds; by this process's id only."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"{self.name} (pid {self.proc.pid}) did not stop on SIGTERM: killed", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """A `strata scheduler` on a free port and `executors` executors of `slots` task slots,
    their logs in `dir`."""

    def __init__(self, a, config, name, executors, slots):
        self.name, self.executors, self.slots = name, executors, slots
        self.dir = os.path.join(a.work, name)
        os.makedirs(self.dir)
        self.logs = {"scheduler": os.path.join(self.dir, "scheduler.log")}
        self.processes = []
        self.url = None
        self.a, self.config = a, config

    def start(self):
        a, config = self.a, self.config
        env = dict(os.environ, STRATA_LOG=SCHEDULER_LOG, NO_COLOR="1")
        with open(self.logs["scheduler"], "w") as err:
            scheduler = Process(f"{self.name} scheduler",
                                [a.strata, "--config", config, "scheduler", "--address", "127.0.0.1:0"],
                                env, subprocess.PIPE, err)
        self.processes.append(scheduler)
        # Its first line is its address; the rest of its standard output goes to a file.
        banner = []

        def drain(pipe, path):
            banner.append(pipe.readline())
            with open(path, "w") as out:
                for line in pipe:
                    out.write(line.decode(errors="replace"))
        threading.Thread(target=drain, args=(scheduler.proc.stdout, os.path.join(self.dir, "scheduler.out")),
                         daemon=True).start()
        wait_until(f"{self.name} scheduler", lambda: banner, scheduler.proc, self.logs["scheduler"])
        line = banner[0].decode().strip()
        prefix = "strata scheduler listening on "
        if not line.startswith(prefix):
            raise SystemExit(f"the scheduler printed {line!r}; its log: {self.logs['scheduler']}")
        self.url = line[len(prefix):]
        port = int(self.url.rsplit(":", 1)[1])
        wait_until(f"{self.name} scheduler", lambda: listening(port), scheduler.proc, self.logs["scheduler"])
        for i in range(self.executors):
            flight, grpc = free_port(), free_port()
            log = os.path.join(self.dir, f"executor-{i}.log")
            self.logs[f"executor-{i}"] = log
            env = dict(os.environ, STRATA_LOG=EXECUTOR_LOG, NO_COLOR="1")
            with open(log, "w") as err, open(os.path.join(self.dir, f"executor-{i}.out"), "w") as out:
                executor = Process(f"{self.name} executor {i}",
                                   [a.strata, "--config", config, "executor", "--scheduler", self.url,
                                    "--concurrency", str(self.slots), "--port", str(flight),
                                    "--grpc-port", str(grpc), "--work-dir", os.path.join(self.dir, f"executor-{i}")],
                                   env, out, err)
            self.processes.append(executor)
            what = f"{self.name} executor {i}"
            # Its Flight port (as tests/ballista.rs waits for), its task port, and its
            # registration with the scheduler (executor_server.rs:176).
            wait_until(what, lambda: listening(flight), executor.proc, log)
            wait_until(what, lambda: listening(grpc), executor.proc, log)
            wait_until(what, lambda: "Executor registration succeed" in read(log), executor.proc, log)
        print(f"{self.name}: scheduler {self.url}, {self.executors} executor(s) of {self.slots} task slot(s)",
              flush=True)

    def stop(self):
        # Executors first (each tells the scheduler it goes), then the scheduler.
        for p in reversed(self.processes):
            p.stop()

    def offsets(self):
        return {k: os.path.getsize(v) for k, v in self.logs.items()}

    def since(self, offsets):
        return {k: read(v, offsets.get(k, 0)) for k, v in self.logs.items()}


# --- runs -----------------------------------------------------------------------------------

class Run:
    def __init__(self, system, views, wall, log, jobs=None):
        self.system, self.views, self.wall, self.log, self.jobs = system, views, wall, log, jobs or []
        self.seconds = sum(views.values())


def batch_run(a, config, extra_env, log_path):
    env = dict(os.environ, STRATA_LOG=BATCH_LOG, NO_COLOR="1")
    env.pop("STRATA_BATCH_ENGINE", None)
    env.pop("STRATA_BATCH_SCHEDULER", None)
    env.update(extra_env)
    started = time.perf_counter()
    try:
        out = subprocess.run([a.strata, "--config", config, "batch", "run", "--force"], env=env,
                             capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired as e:
        with open(log_path, "w") as f:
            for part in (e.stdout, e.stderr):
                f.write(part.decode(errors="replace") if isinstance(part, bytes) else part or "")
        raise SystemExit(f"strata batch run did not end within {a.timeout} s (killed); its output in {log_path}")
    wall = time.perf_counter() - started
    with open(log_path, "w") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"strata batch run failed ({out.returncode}), its output in {log_path}:\n{out.stderr[-4000:]}")
    published = PUBLISHED.findall(out.stdout)
    views = {name: float(s) for name, _, _, s in published}
    assert set(views) == set(VIEWS), out.stdout
    # Every engine computes the same states from the same snapshot: the same counts.
    counts = {name: (rows, events) for name, rows, events, _ in published}
    if batch_run.counts is None:
        batch_run.counts = counts
    elif counts != batch_run.counts:
        raise SystemExit(f"the views' state rows and events differ from the first run's {batch_run.counts}: "
                         f"{counts}; output in {log_path}")
    return views, wall, out.stderr


batch_run.counts = None


def ballista_run(a, config, cluster, log_path):
    offsets = cluster.offsets()
    views, wall, stderr = batch_run(
        a, config, {"STRATA_BATCH_ENGINE": "ballista", "STRATA_BATCH_SCHEDULER": cluster.url}, log_path)
    # The scheduler logs a job's end as it handles it, which can come a moment after the
    # client has seen the job done: wait for those lines (not for a fixed time).
    ids = re.findall(r"Job (\S+) finished executing in", ANSI.sub("", stderr))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = read(cluster.logs["scheduler"], offsets["scheduler"])
        if all(f"Job finished successfully: [{i}]" in text for i in ids):
            break
        time.sleep(0.02)
    logs = cluster.since(offsets)
    executors = {k: v for k, v in logs.items() if k.startswith("executor")}
    jobs = parse_jobs(stderr, views, logs["scheduler"], executors)
    return views, wall, jobs


def fmt(seconds, digits=3):
    return NOT_LOGGED if seconds is None else f"{seconds:.{digits}f}"


def per_view(views):
    return ", ".join(f"{v} {views[v]:.3f}" for v in VIEWS if v in views)


def run_summary(run):
    """One line on a Ballista run's jobs: planning, task time, shuffle, job total."""
    jobs = run.jobs
    if not jobs:
        return "no Ballista job found in the logs"

    def total(values):
        values = [v for v in values if v is not None]
        return sum(values) if values else None
    writes, fetches, local = zip(*(j.shuffle() for j in jobs))
    ntasks = sum(len(j.tasks) for j in jobs)
    return (f"{len(jobs)} jobs: planning {fmt(total(j.segments()[2][1] for j in jobs))} s, "
            f"{ntasks} tasks {fmt(total(j.task_seconds() for j in jobs))} s summed, "
            f"shuffle write {fmt(total(writes))} s, shuffle read {fmt(total(fetches))} s fetched + "
            f"{fmt(total(local))} s local, job total (queued to finished) {fmt(total(j.total() for j in jobs))} s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strata", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=int, default=1800, help="seconds a `strata batch run` may take")
    a = p.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(os.path.join(a.work, "logs"))
    config = os.path.join(a.work, "strata.toml")
    shutil.copy(os.path.join(a.repo, "strata.example.toml"), config)
    quiet = dict(os.environ, STRATA_LOG="warn")
    quiet.pop("STRATA_BATCH_ENGINE", None)
    quiet.pop("STRATA_BATCH_SCHEDULER", None)

    # The lake: generated events imported, then compacted (and its views published) once by
    # the local engine; every timed run recomputes this same compacted snapshot.
    data = os.path.join(a.work, "events.jsonl")
    print(f"generating {a.events:,} events", flush=True)
    run([a.strata, "--config", config, "generate", "--events", str(a.events), "--out", data], env=quiet)
    started = time.perf_counter()
    out = run([a.strata, "--config", config, "import", "page_views", data], env=quiet)
    imported = int(re.search(r"imported (\d+) events", out).group(1))
    print(f"imported {imported:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    out = run([a.strata, "--config", config, "batch", "run"], env=quiet)
    print("".join(line + "\n" for line in out.splitlines() if "compacted" in line or "nothing to compact" in line),
          end="", flush=True)
    compacted = active_files(os.path.join(a.work, "lake", "raw", "page_views"))
    mb = sum(os.path.getsize(f) for f in compacted) / 1e6
    print(f"recompute over {len(compacted)} compacted files ({mb:.1f} MB), {os.cpu_count()} cores", flush=True)

    clusters = [Cluster(a, config, "ballista-1", 1, 2), Cluster(a, config, "ballista-2", 2, 1)]
    runs = defaultdict(list)  # system -> [Run]
    try:
        for c in clusters:
            c.start()
        for i in range(a.repeat):
            views, wall, _ = batch_run(a, config, {}, os.path.join(a.work, "logs", f"local-{i}.log"))
            runs["local"].append(Run("local", views, wall, None))
            print(f"  local        run {i + 1}: {sum(views.values()):7.3f} s ({per_view(views)}), wall {wall:.3f} s",
                  flush=True)
            for c in clusters:
                log = os.path.join(a.work, "logs", f"{c.name}-{i}.log")
                views, wall, jobs = ballista_run(a, config, c, log)
                r = Run(c.name, views, wall, log, jobs)
                runs[c.name].append(r)
                print(f"  {c.name:<12} run {i + 1}: {r.seconds:7.3f} s ({per_view(views)}), wall {wall:.3f} s; "
                      f"{run_summary(r)}", flush=True)
    finally:
        for c in clusters:
            c.stop()
    report(a, imported, len(compacted), mb, clusters, runs)


def report(a, imported, files, mb, clusters, runs):
    """The Markdown for BENCHMARKS.md: the systems' best runs, then how the Ballista runs'
    time divides."""
    best = {system: min(rs, key=lambda r: r.seconds) for system, rs in runs.items()}
    label = {"local": ("strata, local engine", f"none: DataFusion in the batch process ({os.cpu_count()} cores)")}
    for c in clusters:
        label[c.name] = ("strata on Ballista", f"{c.executors} x {c.slots} task slot{'s' if c.slots > 1 else ''}")
    local = best["local"].seconds

    print()
    print(f"{a.events:,} generated events ({imported:,} valid), {files} compacted files ({mb:.1f} MB), "
          f"{os.cpu_count()} cores; Ballista: one executor of 2 task slots, then two executors of 1 task slot "
          f"each (a scheduler and its executors on 127.0.0.1). Best of {a.repeat} runs each.")
    print()
    print(f"| system | executors | best of {a.repeat} (s) | per view (s) | `batch run` wall (s) | vs local |")
    print("|---|---|---:|---|---:|---:|")
    for system, r in best.items():
        name, executors = label[system]
        ratio = "" if system == "local" else f"{local / r.seconds:.2f}x"
        print(f"| {name} | {executors} | {r.seconds:.3f} | {per_view(r.views)} | {r.wall:.3f} | {ratio} |")
    print()
    print("vs local: the local engine's best over this one's (above 1: faster than local). "
          "Per view: `published view ... in X s`; best: their sum; wall: the whole command.")
    print("All runs (s): " + "; ".join(f"{s} " + ", ".join(f"{r.seconds:.3f}" for r in rs) for s, rs in runs.items()))

    print()
    print("How a Ballista run's time divides (its best run; seconds, per job, one job per view):")
    print()
    names = [n for n, _ in Job("").segments()]
    print("| executors | view | " + " | ".join(names) + " | view total | job, queued to finished |")
    print("|---|---|" + "---:|" * (len(names) + 2))
    for c in clusters:
        for j in best[c.name].jobs:
            print(f"| {label[c.name][1]} | {j.view or j.id} | "
                  + " | ".join(fmt(s) for _, s in j.segments())
                  + f" | {fmt(j.view_seconds)} | {fmt(j.total())} |")
    print()
    print("| executors | view | stage | tasks (per executor) | task time, summed | first task start to last end "
          "| shuffle write | shuffle read: fetched | shuffle read: local files opened |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for c in clusters:
        for j in best[c.name].jobs:
            for stage, n, seconds, wall, write, fetch, local_read, by_executor in j.stage_rows():
                spread = " / ".join(str(by_executor.get(f"executor-{i}", 0)) for i in range(c.executors))
                print(f"| {label[c.name][1]} | {j.view or j.id} | {stage} | {n} ({spread}) | {fmt(seconds)} "
                      f"| {fmt(wall)} | {fmt(write)} | {fmt(fetch)} | {fmt(local_read)} |")
    print()
    for c in clusters:
        if not best[c.name].jobs:
            print(f"{label[c.name][1]}: no Ballista job found in the logs of its best run ({best[c.name].log}).")
            continue
        idle = [j.idle() for j in best[c.name].jobs]
        print(f"{label[c.name][1]}: within `executing`, no task running on any executor for "
              + ", ".join(f"{j.view or j.id} {fmt(s)} s" for j, s in zip(best[c.name].jobs, idle))
              + " (the scheduler between stages, task status round trips).")
    print()
    print("""Columns, from the logs (timestamps of one clock; two events that race can give a
slightly negative difference):
- before submit: the view's start (its end less its published time) to the Ballista client's
  "Connecting to Ballista scheduler at" (ballista-core distributed_query.rs:528/711): the view's
  Delta snapshot, the session, the SQL planned into a logical plan in the batch process.
- submit: that line to the scheduler's "Job queued" (query_stage_scheduler.rs:302): the logical
  plan serialized and sent over gRPC.
- planning: the scheduler's "Job [J] planning took" (state/mod.rs:429): physical planning and the
  stages of the execution graph.
- task launch: "Job submitted" (query_stage_scheduler.rs:379) to the first "Execute task" on an
  executor (executor_server.rs:446): task plans serialized, pushed over gRPC, decoded.
- executing: the first task's start to the last task's end ("Finished task ... in",
  executor_server.rs:453); the stages' table divides it: task times summed over tasks, and the
  shuffle metrics of the stages' plans as the scheduler prints them when a stage finishes
  (display.rs:63, debug): the shuffle writer's write_time (Arrow IPC files on the executor's
  disk), the shuffle reader's fetch_time (partitions of other executors, fetched over Flight
  and buffered) and local_read_time (opening this executor's own shuffle files; reading them
  is not timed apart from the operator consuming them); each summed over partitions and
  concurrent fetches, so they can exceed the stage's wall time.
- status report: the last task's end to the scheduler's "Job finished successfully"
  (query_stage_scheduler.rs:422).
- client sees it: that line to the client's "Job J finished executing in"
  (distributed_query.rs:639/823; the client polls the job's status, or is told it).
- fetch + publish: that line to the view's end (strata_batch's debug "view" event): the client's
  Flight fetch of the result partitions from the executors, then the Delta commit of the state
  rows. Neither Ballista nor Strata logs the end of the fetch or the start of the publication:
  not divided further.""")
    missing = []
    for c in clusters:
        for j in best[c.name].jobs:
            for name, s in j.segments():
                if s is None:
                    missing.append(f"{c.name} {j.view or j.id}: {name}")
            if not j.stages:
                missing.append(f"{c.name} {j.view or j.id}: the stages' metrics (display.rs:63 at debug)")
    if missing:
        print()
        print("Not in the logs (shown as \"not logged\"): " + "; ".join(missing) + ".")
    print()
    print(f"Logs: {os.path.join(a.work, 'logs')} (the batch runs), "
          + ", ".join(c.dir for c in clusters) + " (schedulers, executors).")


if __name__ == "__main__":
    sys.exit(main())
