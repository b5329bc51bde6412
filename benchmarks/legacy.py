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

greenpool's worker patches with ``greenpool.monkey.patch_all()``, whose default
runs psycopg2's blocking calls on each hub's helper threads
(``GREENPOOL_PSYCOPG2=offload``). ``--extra`` adds, for comparison: greenpool
``--threads 4`` with psycopg2 left blocking (``GREENPOOL_PSYCOPG2=blocking``:
4 hubs overlap 4 queries), greenpool ``--threads 16``, and greenpool and gevent
with a psycogreen-style wait callback installed in gunicorn's ``post_fork``
hook (the app is unchanged; its queries then wait on the hub instead).

Every wrk run must have 0 failed requests (non-2xx, socket errors) and, after
the section, every item each app queued must have been consumed
(``GET /stats?drain=1``). Needs PostgreSQL on 127.0.0.1:5432 (user postgres,
db test) and wrk (installed with apt-get when running as root).

    python benchmarks/legacy.py                       # ~5 minutes
    python benchmarks/legacy.py --quick               # ~2 minutes
    python benchmarks/legacy.py --sections pool --rounds 5

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
import time
from dataclasses import dataclass, field
from pathlib import Path

from _tools import ensure_wrk, log

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
UPSTREAM = ROOT / "examples" / "legacy_upstream.py"
APP = "examples.legacy_flask_app:app"
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SECTIONS = ("fast", "slow", "pool")
SLOW_UPSTREAM_MS = 100.0
CONNECTIONS = {"fast": 32, "slow": 256}
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
    samples: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
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


def start_server(server: Server, upstream: str, tmp: str) -> None:
    server.port = free_port()
    server.log_path = os.path.join(tmp, f"{server.label}-{server.port}.log")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "1",
           "--bind", f"127.0.0.1:{server.port}", "--backlog", "2048", "--no-control-socket",
           "--log-level", "warning", "--graceful-timeout", "5", "--timeout", "60",
           *server.worker_args, APP]
    env = dict(os.environ, LEGACY_UPSTREAM=upstream, **server.env)
    with open(server.log_path, "w") as out:
        server.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.label} exited with {server.proc.returncode}:\n"
                               f"{Path(server.log_path).read_text()[-3000:]}")
        try:
            get_json(server.port, "/stats", timeout=2)
            return
        except (OSError, RuntimeError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.label} did not answer within 30 s:\n"
                                   f"{Path(server.log_path).read_text()[-3000:]}")
            time.sleep(0.2)


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


def wrk(port: int, connections: int, seconds: float) -> tuple[float, float, str | None]:
    """One wrk run: (requests/s, mean latency ms, failures or None)."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "15s",
           f"http://127.0.0.1:{port}/?item=7"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", out)
    if not rps or not latency:
        raise RuntimeError(f"no wrk result:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
    problems = [line.strip() for line in out.splitlines()
                if line.strip().startswith(("Socket errors", "Non-2xx"))]
    return float(rps.group(1)), float(latency.group(1)) * scale, "; ".join(problems) or None


# -- sections --------------------------------------------------------------------------------


def measure(configs: list[Server], url: str, connections: int, opts, tmp: str) -> None:
    """Start every server, warm each up, alternate measured rounds, read the counters, stop."""
    try:
        for server in configs:
            start_server(server, url, tmp)
            wrk(server.port, connections, 1)  # warm-up: connections, caches
        for round_ in range(opts.rounds):
            order = configs if round_ % 2 == 0 else configs[::-1]
            for server in order:
                rps, latency, problem = wrk(server.port, connections, opts.seconds)
                server.samples.append(rps)
                server.latency_ms.append(latency)
                if problem:
                    server.failures.append(problem)
                note = f"  FAILED: {problem}" if problem else ""
                log(f"  {server.label:<16} {rps:8.1f} req/s  mean latency {latency:7.1f} ms"
                    f"{note}")
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
    try:
        measure(configs, url, connections, opts, tmp)
        if extras:
            measure(extras, url, connections, opts, tmp)
    finally:
        stop(upstream)
    rows = {s.label: {"samples": s.samples, "median": median(s.samples),
                      "latency_ms": s.latency_ms, "failures": s.failures, "stats": s.stats,
                      "tracebacks_in_log": s.tracebacks, "log_tail": s.log_tail}
            for s in configs + extras}
    by_label = {s.label: s.samples for s in configs}
    by_label["best gthread"] = [max(a, b) for a, b in
                                zip(by_label["gthread-4"], by_label["gthread-16"], strict=True)]
    ratios = []
    for numerator, denominator, goal in GOALS[name]:
        per_round = [a / b for a, b in zip(by_label[numerator], by_label[denominator],
                                           strict=True) if b]
        value = median(per_round)
        ratios.append({"name": f"{numerator} / {denominator}", "ratio": value,
                       "per_round": per_round, "goal": goal, "met": value >= goal})
    reference = [s for s in extras if s.label.endswith("(ref)")]
    for server in extras:
        if server in reference:
            continue
        per_round = [a / b for a, b in zip(server.samples, reference[0].samples, strict=True)
                     if b]
        ratios.append({"name": f"{server.label} / gthread-16", "ratio": median(per_round),
                       "per_round": per_round, "goal": None, "met": True})
    return {"upstream_delay_ms": delay, "connections": connections, "servers": rows,
            "ratios": ratios}


def section_pool(opts, tmp: str) -> dict:
    env = dict(os.environ, GREENPOOL_HUBS="4",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, os.path.abspath(__file__), "_pool", "--rounds", str(opts.rounds + 2)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=opts.rounds * 20 + 120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"pool child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    per_round = [s / o for s, o in zip(result["shared"], result["own"], strict=True) if o]
    value = median(per_round)
    result["ratios"] = [{"name": "shared pool / own connection", "ratio": value,
                         "per_round": per_round, "goal": 0.9, "met": value >= 0.9}]
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
                out.append(f"{name}: {label} had failed requests: {row['failures'][0]}")
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
                out.append(f"{name}: {r['name']} = {r['ratio']:.2f}x, goal >= {r['goal']:.2f}x")
    return out


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
            log(f"  upstream delay {section['upstream_delay_ms']:g} ms, "
                f"{section['connections']} connections")
            log(f"  {'server':<17} {'req/s':>8} {'latency ms':>11} {'queued':>8} "
                f"{'consumed':>9}  samples")
            for label, row in section["servers"].items():
                stats = row["stats"] if isinstance(row["stats"], dict) else {}
                lat = median(row["latency_ms"])
                log(f"  {label:<17} {row['median']:>8.1f} {lat:>11.1f} "
                    f"{stats.get('queued', '-'):>8} {stats.get('consumed', '-'):>9}  "
                    + " ".join(f"{s:.0f}" for s in row["samples"])
                    + (f"  FAILED REQUESTS: {row['failures'][0]}" if row["failures"] else ""))
        else:
            log(f"  shared ThreadedConnectionPool: {median(section['shared']):.0f} queries/s, "
                f"own connection per thread: {median(section['own']):.0f} queries/s; "
                f"worst getconn() wait {max(section['worst_getconn_ms']):.1f} ms; "
                f"hubs {section['hubs']}")
        for r in section["ratios"]:
            goal = (f"goal >= {r['goal']:.2f}x  {'ok' if r['met'] else 'MISSED'}"
                    if r["goal"] else "(no goal; same group)")
            log(f"  {r['name']:<32} {r['ratio']:5.2f}x  {goal}  "
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
