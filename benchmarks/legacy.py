"""A thread-style Flask app under gunicorn: greenpool's worker vs ``-k gevent`` and ``-k gthread``.

The app is ``examples/legacy_flask_app.py`` (module-level ``requests.Session``
to an upstream, psycopg2 ``ThreadedConnectionPool`` making a 5 ms query per
request, a ``queue.Queue`` to a background writer thread, a lock-guarded
cache), served unchanged by each worker class, one worker process each. The
upstream is ``examples/legacy_upstream.py`` (asyncio, TCP_NODELAY, one write
per response: never the bottleneck). wrk drives every server; in each section
all servers are started once, warmed up, then measured in alternating rounds;
the table shows medians, and each ratio is the median of the per-round ratios.

Sections (``--sections``, default all):

``fast``  upstream answers at once, wrk 32 connections. Goal: greenpool
          ``--threads 4`` >= 2.0x gevent and >= 0.9x the better gthread.
``slow``  upstream answers in 100 ms, wrk 256 connections. Goal: >= 2.0x
          gevent and >= 2.0x gthread ``--threads 16``.
``pool``  no HTTP: after ``greenpool.monkey.patch_all()``, 16 threads on 4
          hubs making 2 ms psycopg2 queries, sharing one
          ``ThreadedConnectionPool`` vs one connection per thread. Goal:
          shared/own throughput >= 0.90 (a lock that convoys behind hubs
          stuck in queries does far worse).
``django`` the Django project ``tests/django_site`` (``/item/<n>/``: 3 ORM
          queries, 1 insert and a database session per request) on psycopg2
          with ``CONN_MAX_AGE=60`` (a persistent connection per thread), wrk 64
          connections spread over the 50 items; greenpool ``--threads 4`` (at
          most 64 app threads, so at most 64 PostgreSQL connections) vs
          gthread ``--threads 16``. Goals: greenpool-4 >= 0.9x gthread-16 req/s
          and CPU per request (the worker process's user+system time over the
          requests it served, counted by the rows the view inserted) <= 1.1x
          gthread-16's. Also reports each server's PostgreSQL connections (the
          most seen during its runs); both servers are up at once, 64 + 16
          connections, so the section refuses to start when PostgreSQL's
          ``max_connections`` leaves no room for them.

greenpool's worker patches with ``greenpool.monkey.patch_all()``, whose default
runs psycopg2's blocking calls on each hub's helper threads
(``GREENPOOL_PSYCOPG2=offload``). ``--extra`` adds, for comparison: greenpool
``--threads 4`` with psycopg2 left blocking (``GREENPOOL_PSYCOPG2=blocking``:
4 hubs overlap 4 queries), greenpool ``--threads 16``, and greenpool and gevent
with a psycogreen-style wait callback installed in gunicorn's ``post_fork``
hook (the app is unchanged; its queries then wait on the hub instead).

Every wrk run must have 0 failed requests (non-2xx, socket errors) and, after
the Flask sections, every item each app queued must have been consumed
(``GET /stats?drain=1``). Every HTTP section also reports the worker process's
CPU time per request served (``/proc/<pid>/stat``, read before each run and
once the server's own count of served requests stops growing after it). Needs
PostgreSQL on 127.0.0.1:5432 (user postgres, db test) and wrk (installed with
apt-get when running as root).

    python benchmarks/legacy.py                       # ~5 minutes
    python benchmarks/legacy.py --quick               # ~2 minutes
    python benchmarks/legacy.py --sections pool --rounds 5
    python benchmarks/legacy.py --sections django --quick

Results go to ``benchmarks/results/legacy-<time>.json`` and
``legacy-latest.json``. On a small shared machine the figures are noisy:
compare ratios from one invocation.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _tools import ensure_wrk, log
from servers import cpu_seconds, process_tree

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
UPSTREAM = ROOT / "examples" / "legacy_upstream.py"
APP = "examples.legacy_flask_app:app"
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SECTIONS = ("fast", "slow", "pool", "django")
SLOW_UPSTREAM_MS = 100.0
CONNECTIONS = {"fast": 32, "slow": 256, "django": 64}
DJANGO_APP = "tests.django_site.wsgi:application"
DJANGO_ENV = {"DJANGO_SETTINGS_MODULE": "tests.django_site.settings", "DJANGO_DB": "psycopg2",
              "DJANGO_CONN_MAX_AGE": "60"}
DJANGO_ITEMS = 50  # tests/django_site/shop/views.py: ITEMS
GOALS = {
    "fast": [("greenpool-4", "gevent", 2.0), ("greenpool-4", "best gthread", 0.9)],
    "slow": [("greenpool-4", "gevent", 2.0), ("greenpool-4", "gthread-16", 2.0)],
}


@dataclass
class Server:
    """One gunicorn configuration under test, and its samples."""

    label: str
    worker_args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    port: int = 0
    log_path: str = ""
    worker_pid: int = 0
    samples: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # worker CPU per request served, per run
    served: list[int] = field(default_factory=list)  # requests the server counted, per run
    db_connections: list[int] = field(default_factory=list)  # most seen during each run
    failures: list[str] = field(default_factory=list)
    stats: dict | str | None = None
    tracebacks: int = 0
    log_tail: str = ""


def servers() -> list[Server]:
    """The configurations the goals compare."""
    return [
        Server("greenpool-4", ["-k", "greenpool.gunicorn.Worker", "--threads", "4"]),
        Server("gevent", ["-k", "gevent"]),
        Server("gthread-4", ["-k", "gthread", "--threads", "4"]),
        Server("gthread-16", ["-k", "gthread", "--threads", "16"]),
    ]


def extra_servers(tmp: str) -> list[Server]:
    """``--extra``: measured as a second group, gthread-16 again as the reference.

    A second group because every server holds 16 PostgreSQL connections and
    PostgreSQL's default limit is 100.
    """
    hook = os.path.join(tmp, "wait_callback_conf.py")
    with open(hook, "w") as f:
        f.write("def post_fork(server, worker):\n"
                "    from greenpool.monkey import patch_psycopg2  # works under plain gevent too\n"
                "    patch_psycopg2()\n")
    greenpool = ["-k", "greenpool.gunicorn.Worker"]
    return [
        Server("greenpool-4, psycopg2 blocking", [*greenpool, "--threads", "4"],
               env={"GREENPOOL_PSYCOPG2": "blocking"}),
        Server("greenpool-16", [*greenpool, "--threads", "16"]),
        Server("greenpool-4+cb", [*greenpool, "--threads", "4", "-c", hook]),
        Server("gevent+cb", ["-k", "gevent", "-c", hook]),
        Server("gthread-16 (ref)", ["-k", "gthread", "--threads", "16"]),
    ]


@dataclass
class Target:
    """What a section's servers serve and how wrk and the checks talk to it."""

    app: str  # gunicorn's APP_MODULE
    probe: str  # a GET answered 200 with JSON once the app is ready
    wrk_args: list[str]  # after wrk's options: the URL path, or ["-s", script, "/"]
    env: dict[str, str] = field(default_factory=dict)
    # Requests the server has completed so far, by the app's own count: CPU per
    # request divides by its growth over a run (wrk's total misses the requests
    # still in flight when it stops, up to one per connection).
    served: Callable[[Server], int] | None = None
    # Sampled while wrk runs, e.g. the server's database connections; the most seen is kept.
    gauge: Callable[[Server], int] | None = None
    drain: bool = False  # GET /stats?drain=1 after the section (the Flask app's writer queue)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(port: int, path: str, timeout: float) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


# -- processes -------------------------------------------------------------------------------


def start_upstream(delay_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--port", "0", "--delay-ms", f"{delay_ms:g}"],
        stdout=subprocess.PIPE, text=True,
    )
    banner = proc.stdout.readline()
    match = re.search(r"serving (http://\S+)", banner)
    if not match:
        proc.kill()
        raise RuntimeError(f"upstream did not start: {banner!r}")
    return proc, match.group(1)


def flask_target(upstream: str) -> Target:
    return Target(APP, "/stats", ["/?item=7"], env={"LEGACY_UPSTREAM": upstream},
                  served=lambda server: get_json(server.port, "/stats", timeout=15)["queued"],
                  drain=True)


def start_server(server: Server, target: Target, tmp: str) -> None:
    server.port = free_port()
    server.log_path = os.path.join(tmp, f"{server.label}-{server.port}.log")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "1",
           "--bind", f"127.0.0.1:{server.port}", "--backlog", "2048", "--no-control-socket",
           "--log-level", "warning", "--graceful-timeout", "5", "--timeout", "60",
           *server.worker_args, target.app]
    env = dict(os.environ, **target.env, **server.env)
    with open(server.log_path, "w") as out:
        server.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.label} exited with {server.proc.returncode}:\n"
                               f"{Path(server.log_path).read_text()[-3000:]}")
        try:
            get_json(server.port, target.probe, timeout=10)
            server.worker_pid = worker_of(server)
            return
        except (OSError, RuntimeError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.label} did not answer within 30 s:\n"
                                   f"{Path(server.log_path).read_text()[-3000:]}")
            time.sleep(0.2)


def worker_of(server: Server) -> int:
    """The pid of the server's one gunicorn worker process (the master's child)."""
    workers = [p for p in process_tree(server.proc.pid) if p != server.proc.pid]
    if len(workers) != 1:
        raise RuntimeError(f"{server.label}: expected one worker process, found {workers}")
    return workers[0]


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drained_stats(server: Server, timeout: float = 15.0) -> dict | str:
    """The app's counters once its writer consumed every queued item, or why not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stats = get_json(server.port, "/stats?drain=1", timeout=timeout)
        except (OSError, RuntimeError, ValueError) as exc:
            return f"GET /stats?drain=1 failed: {exc!r}"
        if stats["queued"] == stats["consumed"] or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


# -- wrk -------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    rps: float
    latency_ms: float  # mean
    requests: int  # responses wrk counted
    problem: str | None  # non-2xx responses or socket errors, as wrk words them


def wrk(port: int, connections: int, seconds: float, args: list[str]) -> WrkRun:
    """One wrk run; ``args`` is the URL path, or ``["-s", script, path]``."""
    *options, path = args
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "15s",
           *options, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", out)
    total = re.search(r"(\d+) requests in ", out)
    if not rps or not latency or not total:
        raise RuntimeError(f"no wrk result:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
    problems = [line.strip() for line in out.splitlines()
                if line.strip().startswith(("Socket errors", "Non-2xx"))]
    return WrkRun(float(rps.group(1)), float(latency.group(1)) * scale, int(total.group(1)),
                  "; ".join(problems) or None)


def settled(count: Callable[[], int], timeout: float = 10.0) -> int:
    """``count()`` once it stopped growing for 0.3 s: the requests still in flight are done."""
    last, deadline = count(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = count()
        if now == last:
            break
        last = now
    return last


class Gauge(threading.Thread):
    """Samples ``read()`` every 0.25 s until stopped; keeps the most seen."""

    def __init__(self, read: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.read, self.most, self.error = read, 0, None
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.most = max(self.most, self.read())
            except Exception as exc:  # reported, not fatal: the gauge is informative
                self.error = repr(exc)
            if self.done.wait(0.25):
                return

    def __enter__(self) -> Gauge:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.join()


def measured_run(server: Server, target: Target, connections: int, seconds: float) -> None:
    """One measured wrk run against ``server``: its rate, latency, CPU per request, gauge."""
    # Settled first: a server finishes the requests it had already read when the
    # previous wrk run (a warm-up, or another server's) closed its connections.
    served_before = settled(lambda: target.served(server)) if target.served else 0
    cpu_before = cpu_seconds(server.worker_pid)
    if target.gauge:
        with Gauge(lambda: target.gauge(server)) as gauge:
            run = wrk(server.port, connections, seconds, target.wrk_args)
        server.db_connections.append(gauge.most)
        if gauge.error:
            server.failures.append(f"gauge failed: {gauge.error}")
    else:
        run = wrk(server.port, connections, seconds, target.wrk_args)
    if target.served:
        served = settled(lambda: target.served(server)) - served_before
    else:
        time.sleep(0.5)  # let the requests wrk left in flight finish; they are not counted
        served = run.requests
    cpu = cpu_seconds(server.worker_pid) - cpu_before
    if worker_of(server) != server.worker_pid:
        server.failures.append("the worker process was replaced during a run")
    if not run.requests <= served <= run.requests + connections:
        # Something else served requests too (another client of the app or its table).
        server.failures.append(f"the server counted {served} requests, wrk {run.requests}")
    server.samples.append(run.rps)
    server.latency_ms.append(run.latency_ms)
    server.served.append(served)
    server.cpu_ms.append(cpu * 1000 / served if served else float("nan"))
    if run.problem:
        server.failures.append(run.problem)
    note = f"  FAILED: {run.problem}" if run.problem else ""
    gauge_note = (f"  {server.db_connections[-1]:3d} db conns" if target.gauge else "")
    log(f"  {server.label:<16} {run.rps:8.1f} req/s  mean latency {run.latency_ms:7.1f} ms  "
        f"CPU {server.cpu_ms[-1]:6.2f} ms/req{gauge_note}{note}")


# -- sections --------------------------------------------------------------------------------


def measure(configs: list[Server], target: Target, connections: int, opts, tmp: str) -> None:
    """Start every server, warm each up, alternate measured rounds, read the counters, stop."""
    try:
        for server in configs:
            start_server(server, target, tmp)
            # warm-up: connections, caches (and, with persistent database
            # connections, one per app thread)
            warm_up = wrk(server.port, connections, 1 if target.drain else 2, target.wrk_args)
            if warm_up.problem:
                server.failures.append(f"warm-up: {warm_up.problem}")
                log(f"  {server.label:<16} warm-up FAILED: {warm_up.problem}")
        for round_ in range(opts.rounds):
            order = configs if round_ % 2 == 0 else configs[::-1]
            for server in order:
                measured_run(server, target, connections, opts.seconds)
        if target.drain:
            for server in configs:
                server.stats = drained_stats(server)
    finally:
        for server in configs:
            stop(server.proc)
    for server in configs:
        if server.log_path:
            text = Path(server.log_path).read_text(errors="replace")
            server.tracebacks = text.count("Traceback")
            server.log_tail = text[-3000:] if server.tracebacks else ""


def section_http(name: str, opts, tmp: str) -> dict:
    delay = SLOW_UPSTREAM_MS if name == "slow" else 0.0
    connections = CONNECTIONS[name]
    configs = servers()
    extras = extra_servers(tmp) if opts.extra else []
    upstream, url = start_upstream(delay)
    target = flask_target(url)
    try:
        measure(configs, target, connections, opts, tmp)
        if extras:
            measure(extras, target, connections, opts, tmp)
    finally:
        stop(upstream)
    rows = server_rows(configs + extras)
    by_label = {s.label: s.samples for s in configs}
    by_label["best gthread"] = [max(a, b) for a, b in
                                zip(by_label["gthread-4"], by_label["gthread-16"], strict=True)]
    ratios = [ratio(f"{numerator} / {denominator}", by_label[numerator], by_label[denominator],
                    goal)
              for numerator, denominator, goal in GOALS[name]]
    reference = [s for s in extras if s.label.endswith("(ref)")]
    for server in extras:
        if server in reference:
            continue
        ratios.append(ratio(f"{server.label} / gthread-16", server.samples,
                            reference[0].samples, None))
    return {"upstream_delay_ms": delay, "connections": connections, "servers": rows,
            "ratios": ratios}


def server_rows(configs: list[Server]) -> dict:
    return {s.label: {"samples": s.samples, "median": median(s.samples),
                      "latency_ms": s.latency_ms, "cpu_ms_per_request": s.cpu_ms,
                      "cpu_ms_median": median(s.cpu_ms), "served": s.served,
                      "db_connections": s.db_connections, "failures": s.failures,
                      "stats": s.stats, "tracebacks_in_log": s.tracebacks,
                      "log_tail": s.log_tail}
            for s in configs}


def ratio(name: str, numerators: list[float], denominators: list[float], goal: float | None,
          at_most: bool = False) -> dict:
    """The median of the per-round ratios; the goal is a floor, or a ceiling when ``at_most``."""
    per_round = [a / b for a, b in zip(numerators, denominators, strict=True) if b]
    value = median(per_round)
    met = goal is None or (value <= goal if at_most else value >= goal)
    return {"name": name, "ratio": value, "per_round": per_round, "goal": goal,
            "at_most": at_most, "met": met}


def section_django(opts, tmp: str) -> dict:
    """greenpool-4 vs gthread-16 serving tests/django_site on psycopg2, CONN_MAX_AGE=60."""
    import psycopg2

    connections = CONNECTIONS["django"]
    configs = [
        Server("greenpool-4", ["-k", "greenpool.gunicorn.Worker", "--threads", "4"]),
        Server("gthread-16", ["-k", "gthread", "--threads", "16"]),
    ]
    for server in configs:  # to count each server's connections in pg_stat_activity
        server.env["DJANGO_DB_APPLICATION"] = f"greenpool-bench-{server.label}"
    most = 64 + 16 + 1  # greenpool's 64 app threads, gthread's 16 threads, this script
    db = psycopg2.connect(DSN)
    db.autocommit = True
    db_lock = threading.Lock()  # the gauge thread and this one share the connection

    def sql(query: str, params: tuple = ()) -> int:
        with db_lock, db.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone()[0]

    try:
        limit = int(sql("SELECT current_setting('max_connections')"))
        deadline = time.monotonic() + 60
        while True:  # other work on the machine may hold connections for a while
            held = sql("SELECT count(*) FROM pg_stat_activity "
                       "WHERE backend_type = 'client backend'")
            if held - 1 + most <= limit:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL has {held} client connections of {limit}; "
                                   f"this section needs {most} (waited 60 s)")
            time.sleep(1)
        log(f"  PostgreSQL: {held - 1} other client connections of {limit}")
        env = dict(os.environ, **DJANGO_ENV)
        migrate = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{migrate.stderr[-3000:]}")
        with db_lock, db.cursor() as cur:  # earlier runs' visits would make count() dearer
            cur.execute("TRUNCATE greenpool_shop_visit")
        script = os.path.join(tmp, "django_items.lua")
        with open(script, "w") as f:  # each wrk thread asks for the items in turn
            f.write("local n = 0\n"
                    "request = function()\n"
                    f"  n = (n + 1) % {DJANGO_ITEMS}\n"
                    '  return wrk.format("GET", "/item/" .. n .. "/")\n'
                    "end\n")
        visits_at_start = sql("SELECT coalesce(max(id), 0) FROM greenpool_shop_visit")
        # every /item/<n>/ inserts one Visit: the rows are the requests served
        target = Target(
            DJANGO_APP, "/setup/", ["-s", script, "/item/0/"], env=DJANGO_ENV,
            served=lambda _server: sql("SELECT count(*) FROM greenpool_shop_visit WHERE id > %s",
                                       (visits_at_start,)),
            gauge=lambda server: sql("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE application_name = %s",
                                     (server.env["DJANGO_DB_APPLICATION"],)))
        measure(configs, target, connections, opts, tmp)
        visits_total = sql("SELECT count(*) FROM greenpool_shop_visit")
    finally:
        db.close()
    greenpool, gthread = configs
    ratios = [ratio("greenpool-4 / gthread-16 req/s", greenpool.samples, gthread.samples, 0.9),
              ratio("greenpool-4 / gthread-16 CPU/req", greenpool.cpu_ms, gthread.cpu_ms, 1.1,
                    at_most=True)]
    return {"driver": "psycopg2", "conn_max_age": int(DJANGO_ENV["DJANGO_CONN_MAX_AGE"]),
            "connections": connections, "visit_rows_at_end": visits_total,
            "servers": server_rows(configs), "ratios": ratios}


def section_pool(opts, tmp: str) -> dict:
    env = dict(os.environ, GREENPOOL_HUBS="4",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, os.path.abspath(__file__), "_pool", "--rounds", str(opts.rounds + 2)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=opts.rounds * 20 + 120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"pool child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["ratios"] = [ratio("shared pool / own connection", result["shared"], result["own"],
                              0.9)]
    result["stderr"] = proc.stderr[-2000:]
    for mode in ("shared", "own"):
        log(f"  {mode:<8} " + "  ".join(f"{q:7.0f}" for q in result[mode]) + " queries/s")
    return result


def pool_child(argv: list[str]) -> None:
    """16 threads on 4 hubs (GREENPOOL_HUBS=4), 2 ms queries: shared pool vs own connections."""
    import greenpool.monkey

    greenpool.monkey.patch_all()
    import threading

    import psycopg2
    from psycopg2.pool import ThreadedConnectionPool

    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=150, help="per thread and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--query-ms", type=float, default=2.0)
    opts = parser.parse_args(argv)
    sql, params = "SELECT pg_sleep(%s)", (opts.query_ms / 1000,)
    shared = ThreadedConnectionPool(opts.workers, opts.workers, DSN)
    taken = [shared.getconn() for _ in range(opts.workers)]
    for conn in taken:
        conn.autocommit = True
    for conn in taken:
        shared.putconn(conn)
    own = [psycopg2.connect(DSN) for _ in range(opts.workers)]
    for conn in own:
        conn.autocommit = True
    results: dict[str, list] = {"shared": [], "own": [], "worst_getconn_ms": [], "hubs": []}

    def run(mode: str) -> float:
        # A fixed number of queries per thread, timed from the start signal to the
        # last join: threads on one hub run one after another while a query
        # blocks it, so a per-thread time limit would measure each thread alone.
        worst = [0.0] * opts.workers
        hubs = set()
        gate = threading.Event()

        def worker(w: int) -> None:
            hub = greenpool.current_hub()
            hubs.add(None if hub is None else hub.index)
            gate.wait()
            for _ in range(opts.queries):
                if mode == "shared":
                    asked = time.perf_counter()
                    conn = shared.getconn()
                    worst[w] = max(worst[w], time.perf_counter() - asked)
                    try:
                        with conn.cursor() as cur:
                            cur.execute(sql, params)
                    finally:
                        shared.putconn(conn)
                else:
                    with own[w].cursor() as cur:
                        cur.execute(sql, params)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(opts.workers)]
        for t in threads:
            t.start()
        started = time.perf_counter()
        gate.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        if mode == "shared":
            results["worst_getconn_ms"].append(round(max(worst) * 1000, 2))
        results["hubs"] = sorted(h for h in hubs if h is not None)
        return opts.workers * opts.queries / elapsed

    for round_ in range(opts.rounds):
        for mode in (("shared", "own") if round_ % 2 == 0 else ("own", "shared")):
            results[mode].append(run(mode))
    shared.closeall()
    for conn in own:
        conn.close()
    print(json.dumps(results), flush=True)


# -- report ----------------------------------------------------------------------------------


def problems_of(results: dict) -> list[str]:
    """Failed requests, unconsumed items and missed goals, one line each."""
    out = []
    for name, section in results["sections"].items():
        if "error" in section:
            out.append(f"{name}: {section['error'].splitlines()[0]}")
            continue
        for label, row in section.get("servers", {}).items():
            if row["failures"]:
                out.append(f"{name}: {label} failed: {row['failures'][0]}")
            stats = row["stats"]
            if isinstance(stats, str):
                out.append(f"{name}: {label}: {stats}")
            elif stats and stats["queued"] != stats["consumed"]:
                out.append(f"{name}: {label} queued {stats['queued']} items, its writer "
                           f"consumed {stats['consumed']}")
            if row["tracebacks_in_log"]:
                last = row["log_tail"].strip().splitlines()[-1:] or [""]
                out.append(f"{name}: {label} logged {row['tracebacks_in_log']} tracebacks; "
                           f"last line: {last[0][:160]}")
        for r in section.get("ratios", []):
            if not r["met"]:
                out.append(f"{name}: {r['name']} = {r['ratio']:.2f}x, goal {goal_text(r)}")
    return out


def goal_text(r: dict) -> str:
    return f"{'<=' if r.get('at_most') else '>='} {r['goal']:.2f}x"


def print_summary(results: dict) -> None:
    log("")
    log("-" * 78)
    machine = results["machine"]
    log(f"Medians of {results['options']['rounds']} alternating rounds of "
        f"{results['options']['seconds']:g} s; ratios are medians of per-round ratios. "
        f"{machine['cpus']} CPUs, load average {machine['loadavg_start'][0]:.1f} -> "
        f"{machine['loadavg_end'][0]:.1f} (noisy on a shared machine).")
    for name, section in results["sections"].items():
        log(f"\n[{name}]")
        if "error" in section:
            log(f"  FAILED: {section['error']}")
            continue
        if "servers" in section:
            django = "upstream_delay_ms" not in section
            if django:
                log(f"  Django on {section['driver']}, CONN_MAX_AGE={section['conn_max_age']}, "
                    f"{section['connections']} connections")
                extra = f"{'db conns':>9}"
            else:
                log(f"  upstream delay {section['upstream_delay_ms']:g} ms, "
                    f"{section['connections']} connections")
                extra = f"{'queued':>8} {'consumed':>9}"
            log(f"  {'server':<17} {'req/s':>8} {'latency ms':>11} {'CPU ms/req':>11} {extra}  "
                f"samples (req/s | CPU ms/req)")
            for label, row in section["servers"].items():
                stats = row["stats"] if isinstance(row["stats"], dict) else {}
                lat = median(row["latency_ms"])
                if django:
                    extra = f"{max(row['db_connections'], default=0):>9}"
                else:
                    extra = f"{stats.get('queued', '-'):>8} {stats.get('consumed', '-'):>9}"
                log(f"  {label:<17} {row['median']:>8.1f} {lat:>11.1f} "
                    f"{row['cpu_ms_median']:>11.2f} {extra}  "
                    + " ".join(f"{s:.0f}" for s in row["samples"]) + " | "
                    + " ".join(f"{c:.2f}" for c in row["cpu_ms_per_request"])
                    + (f"  FAILED: {row['failures'][0]}" if row["failures"] else ""))
        else:
            log(f"  shared ThreadedConnectionPool: {median(section['shared']):.0f} queries/s, "
                f"own connection per thread: {median(section['own']):.0f} queries/s; "
                f"worst getconn() wait {max(section['worst_getconn_ms']):.1f} ms; "
                f"hubs {section['hubs']}")
        for r in section["ratios"]:
            goal = (f"goal {goal_text(r)}  {'ok' if r['met'] else 'MISSED'}"
                    if r["goal"] else "(no goal; same group)")
            log(f"  {r['name']:<34} {r['ratio']:5.2f}x  {goal}  "
                f"[{', '.join(f'{x:.2f}' for x in r['per_round'])}]")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_pool":
        pool_child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per section")
    parser.add_argument("--quick", action="store_true", help="--seconds 3 --rounds 3")
    parser.add_argument("--extra", action="store_true",
                        help="also greenpool --threads 16, and greenpool and gevent with a "
                             "psycopg2 wait callback (for comparison; no goals)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.seconds, opts.rounds = 3.0, 3
    if opts.seconds <= 0 or opts.rounds <= 0:
        parser.error("--seconds and --rounds must be positive")
    sections = [s.strip() for s in opts.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        log(f"SKIPPED: PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
        return 0
    if any(s != "pool" for s in sections) and not ensure_wrk():
        log("SKIPPED: wrk not found; install it with `apt-get install -y wrk` (Debian/Ubuntu)")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = {
        "benchmark": "legacy",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_start": os.getloadavg()},
        "options": {"seconds": opts.seconds, "rounds": opts.rounds},
        "sections": {},
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="greenpool-legacy-") as tmp:
        for name in sections:
            log(f"[{name}]")
            try:
                if name == "pool":
                    results["sections"][name] = section_pool(opts, tmp)
                elif name == "django":
                    results["sections"][name] = section_django(opts, tmp)
                else:
                    results["sections"][name] = section_http(name, opts, tmp)
            except RuntimeError as exc:
                log(f"  FAILED: {exc}")
                results["sections"][name] = {"error": str(exc)}
    results["seconds"] = time.monotonic() - t0
    results["machine"]["loadavg_end"] = os.getloadavg()
    print_summary(results)
    problems = problems_of(results)
    results["problems"] = problems
    RESULTS.mkdir(exist_ok=True)
    out = opts.output or RESULTS / f"legacy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(results, indent=1)
    out.write_text(text)
    (RESULTS / "legacy-latest.json").write_text(text)
    log(f"\nwrote {out} ({results['seconds']:.0f} s)")
    if problems:
        log("PROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
