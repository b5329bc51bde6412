"""HTTP servers on greenpool vs the peers a user would pick instead, driven by wrk.

Every server runs the *same* minimal keep-alive HTTP responder (read a request,
send a fixed "Hello world" response) in its own subprocess; wrk (one thread,
64 connections, pinned to one CPU with ``taskset``) measures requests/s. In
each section every server is started once, warmed up, then measured in
alternating rounds; the table shows medians, and each ratio is the median of
the per-round ratios (so slow drifts in machine load cancel out).

Sections (``--sections``, default all):

``pure``      greenpool 1/2/4 hubs, uvloop (asyncio Protocol) and
              thread-per-connection (``socketserver.ThreadingTCPServer``)
              vs a gevent ``StreamServer``.
``blocking``  the handler makes a 2 ms GIL-releasing blocking call (an unpatched
              ``time.sleep``, standing in for a C database driver): greenpool
              N hubs vs gevent, and vs thread-per-connection at equal
              concurrency (N connections, so N threads), N in 2, 4, 8.
``spread``    greenpool 2 and 4 hubs with each ``spread`` mode (reuseport,
              shared, dispatch) on the pure handler.
``tls``       a TLS handshake and one short request per connection
              (``Connection: close``): greenpool N hubs vs 1 hub.
``memory``    server RSS with many idle keep-alive connections (default
              10,000; RLIMIT_NOFILE is raised): greenpool vs gevent vs
              thread-per-connection, and the WSGI servers (``python -m
              greenpool wsgi`` vs ``gunicorn -k gevent``) on the bare app.
``wsgi``      real WSGI servers, one process each, on ``benchmarks/wsgi_apps.py``
              (``bare``: the smallest WSGI app; ``flask``: Flask's hello):
              ``python -m greenpool wsgi --hubs 1`` vs ``gunicorn -k gevent -w 1``
              vs ``granian --interface wsgi --workers 1 --blocking-threads 1``,
              and greenpool with 2 and 4 hubs on the same core. The ratios
              carry issue 11's goals.
``profile``   where a greenpool WSGI request's time goes: cProfile on the hub
              thread of a 1-hub ``greenpool.wsgi.serve`` under wrk, per app;
              the top functions in microseconds per request, and the time
              summed by layer (HTTP core, parser, sockets, gevent, app). Not in
              the default set (cProfile makes every Python call slower, so its
              figures are shares, not speeds): ``--sections profile``.

The server (all its processes) runs on CPU 0 and wrk on CPU 1 by default
(``taskset``): one core each, as in issue 11's table.

Results go to ``benchmarks/results/servers-<time>.json`` (and
``servers-latest.json``); ``benchmarks/plot.py`` draws them. Figures depend on
the machine: on a small, shared machine they are noisy, so read the medians and
ratios, not single runs.

    python benchmarks/servers.py                    # everything (~10 min)
    python benchmarks/servers.py --quick            # < 2 min
    python benchmarks/servers.py --sections pure,tls --duration 3 --runs 5
    python benchmarks/servers.py --sections wsgi --runs 7
    python benchmarks/servers.py --sections wsgi --baseline-rev 8f97167  # vs pywsgi's
    python benchmarks/servers.py --sections profile     # for the README
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import shutil
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = ("pure", "blocking", "spread", "tls", "memory", "wsgi", "profile")
DEFAULT_SECTIONS = ("pure", "blocking", "spread", "tls", "memory", "wsgi")
WSGI_KINDS = ("wsgi-greenpool", "wsgi-gunicorn", "wsgi-granian")
BLOCKING_HUBS = (2, 4, 8)
SPREADS = ("reuseport", "shared", "dispatch")

BODY = b"Hello world\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)
CLOSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(BODY), BODY)
)
END = b"\r\n\r\n"
BLOCK_SECONDS = 0.002


# -- the servers (run in subprocesses: ``servers.py _serve KIND ...``) --------


def make_work(handler: str):
    """The per-request work: nothing, or a 2 ms GIL-releasing blocking call."""
    if handler == "pure":
        return None
    from gevent.monkey import get_original

    native_sleep = get_original("time", "sleep")
    return lambda: native_sleep(BLOCK_SECONDS)


def respond(sock, work) -> None:
    """The shared keep-alive HTTP responder: answer every complete request head."""
    try:
        _respond(sock.recv, sock.sendall, work)
    except OSError:  # the client reset the connection (wrk does at the end of a run)
        pass


def _respond(recv, sendall, work) -> None:
    buf = b""
    while True:
        data = recv(65536)
        if not data:
            return
        buf += data
        n = buf.count(END)
        if not n:
            continue
        close = b"Connection: close" in buf
        buf = buf[buf.rfind(END) + 4 :]
        if work is not None:
            for _ in range(n):
                work()
        if close:
            sendall(CLOSE_RESPONSE)
            return
        sendall(RESPONSE * n)


def serve_gevent(args, ctx) -> None:
    from gevent.server import StreamServer

    work = make_work(args.handler)
    ssl_args = {}
    if ctx is not None:
        import gevent.ssl

        gctx = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
        gctx.load_cert_chain(args.certfile, args.keyfile)
        gctx.options |= gevent.ssl.OP_NO_TICKET
        ssl_args["ssl_context"] = gctx
    server = StreamServer(
        ("127.0.0.1", 0), lambda sock, addr: respond(sock, work), backlog=4096, **ssl_args
    )
    server.start()
    ready(server.address[1])
    server.serve_forever()


def serve_greenpool(args, ctx) -> None:
    import greenpool

    work = make_work(args.handler)
    # --pin: every hub thread on one core, so hubs never hand the GIL across cores
    affinity = {min(os.sched_getaffinity(0))} if args.pin else None
    pool = greenpool.Pool(args.hubs, name="bench", cpu_affinity=affinity)
    server = greenpool.serve(
        lambda sock, addr: respond(sock, work),
        ("127.0.0.1", 0),
        pool=pool,
        backlog=4096,
        ssl_context=ctx,
        spread=args.spread,
    )
    ready(server.address[1])
    server.serve_forever()


def serve_threads(args, ctx) -> None:
    import socketserver

    work = make_work(args.handler)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock = self.request
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_side=True)
            respond(sock, work)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 4096

    server = Server(("127.0.0.1", 0), Handler)
    ready(server.server_address[1])
    server.serve_forever()


def serve_uvloop(args, ctx) -> None:
    import asyncio

    import uvloop

    class Hello(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            n = self.buf.count(END)
            if not n:
                return
            close = b"Connection: close" in self.buf
            self.buf = self.buf[self.buf.rfind(END) + 4 :]
            if close:
                self.transport.write(CLOSE_RESPONSE)
                self.transport.close()
            else:
                self.transport.write(RESPONSE * n)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Hello, "127.0.0.1", 0, backlog=4096, ssl=ctx)
        ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    uvloop.run(main())


SERVERS = {
    "gevent": serve_gevent,
    "greenpool": serve_greenpool,
    "threads": serve_threads,
    "uvloop": serve_uvloop,
}


def ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="servers.py _serve")
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--hubs", type=int, default=1)
    parser.add_argument("--handler", choices=("pure", "blocking"), default="pure")
    parser.add_argument("--spread", default=None)
    parser.add_argument("--pin", action="store_true", help="greenpool: hubs on one core")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args(argv)
    raise_nofile()
    ctx = None
    if args.certfile:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certfile, args.keyfile)
        ctx.options |= ssl.OP_NO_TICKET  # every connection pays a full handshake
    if args.kind == "greenpool" and args.spread is None:
        from greenpool.server import DEFAULT_SPREAD

        args.spread = DEFAULT_SPREAD
    SERVERS[args.kind](args, ctx)


# -- the harness ---------------------------------------------------------------


@dataclass
class Config:
    """One server to measure: how to start it and how wrk drives it."""

    label: str
    kind: str
    hubs: int = 1
    handler: str = "pure"
    spread: str | None = None
    connections: int = 64
    tls: bool = False
    pin: bool = False
    app: str = "bare"  # the wsgi_apps.py app, for the WSGI kinds
    source: str | None = None  # a greenpool source tree to run instead of this one
    samples: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    port: int = 0

    def argv(self, certs) -> list[str]:
        argv = [self.kind, "--hubs", str(self.hubs), "--handler", self.handler]
        if self.spread:
            argv += ["--spread", self.spread]
        if self.pin:
            argv.append("--pin")
        if self.tls:
            argv += ["--certfile", certs[0], "--keyfile", certs[1]]
        return argv


class Bench:
    """Starts servers, runs wrk, keeps every sample."""

    def __init__(self, opts) -> None:
        self.opts = opts
        cpus = sorted(os.sched_getaffinity(0))
        self.client_cpu = opts.client_cpu if opts.client_cpu is not None else cpus[-1]
        if opts.server_cpus == "all":
            self.server_cpus = None
        elif opts.server_cpus:
            self.server_cpus = opts.server_cpus
        else:
            rest = [c for c in cpus if c != self.client_cpu] or cpus
            self.server_cpus = ",".join(map(str, rest))
        self.certs = None
        self.tmp = tempfile.TemporaryDirectory(prefix="greenpool-bench-")

    # servers

    def start(self, cfg: Config) -> None:
        if cfg.kind in WSGI_KINDS:
            self.start_wsgi(cfg)
            return
        cmd = [sys.executable, os.path.abspath(__file__), "_serve", *cfg.argv(self.certs)]
        if self.server_cpus:
            cmd = ["taskset", "-c", self.server_cpus, *cmd]
        # Servers log every connection wrk resets at the end of a run: keep that out of
        # the report, but show it if the server fails to start.
        log_path = os.path.join(self.tmp.name, f"server-{len(os.listdir(self.tmp.name))}.log")
        with open(log_path, "w") as errors:
            cfg.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        deadline = time.monotonic() + 30
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([cfg.proc.stdout], [], [], max(left, 0))
            if not readable or cfg.proc.poll() is not None:
                self.stop(cfg)
                with open(log_path) as f:
                    raise RuntimeError(f"{cfg.label}: server did not start:\n{f.read()[-3000:]}")
            line = cfg.proc.stdout.readline()
            if line.startswith("READY "):
                cfg.port = int(line.split()[1])
                return

    def start_wsgi(self, cfg: Config) -> None:
        """Start a real WSGI server (its own CLI) and wait until it answers."""
        cfg.port = free_port()
        cmd = wsgi_command(cfg.kind, cfg.app, cfg.port, cfg.hubs, self.opts.connections)
        if self.server_cpus:
            cmd = ["taskset", "-c", self.server_cpus, *cmd]
        log_path = os.path.join(self.tmp.name, f"server-{len(os.listdir(self.tmp.name))}.log")
        root = cfg.source or str(HERE.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(HERE), root, os.environ.get("PYTHONPATH")) if p))
        with open(log_path, "w") as errors:
            # a session of its own: gunicorn and granian fork workers, stop() kills the group
            cfg.proc = subprocess.Popen(cmd, stdout=errors, stderr=errors, cwd=HERE, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while not http_ok(cfg.port):
            if cfg.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(cfg)
                with open(log_path) as f:
                    raise RuntimeError(f"{cfg.label}: server did not start:\n{f.read()[-3000:]}")
            time.sleep(0.1)

    def stop(self, cfg: Config) -> None:
        if cfg.proc is not None and cfg.proc.poll() is None:
            if cfg.kind in WSGI_KINDS:
                try:
                    os.killpg(cfg.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                cfg.proc.kill()
        if cfg.proc is not None:
            cfg.proc.wait(10)
            if cfg.proc.stdout is not None:
                cfg.proc.stdout.close()
        cfg.proc = None

    # wrk

    def wrk(self, cfg: Config, duration: float) -> tuple[float, float, str | None]:
        """One wrk run: (requests/s, server CPU microseconds per request, problems)."""
        cpu_before = cpu_seconds(cfg.proc.pid)
        rps, requests, problem = self._wrk(cfg, duration)
        cpu = cpu_seconds(cfg.proc.pid) - cpu_before
        return rps, cpu * 1e6 / max(requests, 1), problem

    def _wrk(self, cfg: Config, duration: float) -> tuple[float, int, str | None]:
        scheme = "https" if cfg.tls else "http"
        cmd = [
            "taskset", "-c", str(self.client_cpu),
            "wrk", "-t1", f"-c{cfg.connections}", f"-d{max(1, round(duration))}s",
            "--timeout", "5s",
        ]
        if cfg.tls:
            cmd += ["-H", "Connection: close"]
        cmd.append(f"{scheme}://127.0.0.1:{cfg.port}/")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        if not match or not total:
            raise RuntimeError(f"{cfg.label}: no wrk result:\n{out}")
        problems = [
            line.strip()
            for line in out.splitlines()
            if line.strip().startswith(("Socket errors", "Non-2xx"))
        ]
        return float(match.group(1)), int(total.group(1)), "; ".join(problems) or None

    def measure(self, configs: list[Config]) -> None:
        """Start every server, warm each up, then alternate measured rounds."""
        if self.opts.only:
            configs = [c for c in configs if re.search(self.opts.only, c.label)]
        try:
            for cfg in configs:
                self.start(cfg)
                self.wrk(cfg, 1)
            for round_ in range(self.opts.runs):
                order = configs if round_ % 2 == 0 else configs[::-1]
                for cfg in order:
                    rps, cpu_us, problem = self.wrk(cfg, self.opts.duration)
                    cfg.samples.append(rps)
                    cfg.cpu_us.append(cpu_us)
                    if problem:
                        cfg.errors.append(problem)
                    note = f"  ({problem})" if problem else ""
                    log(f"  {cfg.label:<34} {rps:>10,.0f} req/s {cpu_us:8.1f} us CPU/req{note}")
        finally:
            for cfg in configs:
                self.stop(cfg)

    def baseline_source(self) -> str:
        """``--baseline-rev``'s greenpool, extracted with ``git archive`` (once)."""
        path = os.path.join(self.tmp.name, "baseline")
        if not os.path.isdir(path):
            os.mkdir(path)
            archive = subprocess.run(
                ["git", "-C", str(HERE.parent), "archive", self.opts.baseline_rev, "greenpool"],
                capture_output=True, check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
        return path

    def make_certs(self) -> tuple[str, str] | None:
        if not shutil.which("openssl"):
            return None
        cert = os.path.join(self.tmp.name, "cert.pem")
        key = os.path.join(self.tmp.name, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )
        return cert, key


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its live descendants, in seconds.

    The descendants count because gunicorn and granian serve in forked workers.
    """
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for servers whose CLI needs one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port: int) -> bool:
    """Whether a server on ``port`` answers ``GET /`` with a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wsgi_command(kind: str, app: str, port: int, hubs: int, connections: int) -> list[str]:
    """The command line a user would type for each WSGI server (quiet: no access log)."""
    target = f"wsgi_apps:{app}"
    if kind == "wsgi-greenpool":
        return [sys.executable, "-m", "greenpool", "wsgi", "--hubs", str(hubs),
                "-b", f"127.0.0.1:{port}", "--backlog", "4096", "--log-level", "warning", target]
    if kind == "wsgi-gunicorn":
        return [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
                "-b", f"127.0.0.1:{port}", "--backlog", "4096", "--log-level", "warning",
                "--worker-connections", str(connections + 1000), target]
    if kind == "wsgi-granian":
        return [str(Path(sys.executable).with_name("granian")), "--interface", "wsgi",
                "--workers", "1", "--blocking-threads", "1", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log", target]
    raise ValueError(kind)


def wsgi_missing(kind: str, app: str) -> str | None:
    """Why a WSGI server or app cannot run here (None: it can)."""
    if app == "flask" and not _has("flask"):
        return "flask is not installed (pip install flask)"
    if kind == "wsgi-gunicorn" and not _has("gunicorn"):
        return "gunicorn is not installed (pip install gunicorn gevent)"
    if kind == "wsgi-granian" and not Path(sys.executable).with_name("granian").exists():
        return "granian is not installed beside this Python (pip install granian)"
    return None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: Config, b: Config, name: str, goal: float | None = None) -> dict:
    """Median of per-round ratios a/b (rounds alternate, so load drift cancels).

    ``cpu_ratio`` is the same for CPU cost: b's CPU time per request over a's
    (above 1: a spends less CPU per request). On a loaded machine it is much
    steadier than requests/s, which depends on the CPU share the server gets.
    """
    per_round = [x / y for x, y in zip(a.samples, b.samples, strict=False) if y]
    cpu = [y / x for x, y in zip(a.cpu_us, b.cpu_us, strict=False) if x]
    return {
        "cpu_ratio": median(cpu),
        "name": name,
        "numerator": a.label,
        "denominator": b.label,
        "ratio": median(per_round),
        "min": min(per_round, default=float("nan")),
        "max": max(per_round, default=float("nan")),
        "goal": goal,
    }


def table(configs: list[Config]) -> dict:
    return {
        c.label: {
            "kind": c.kind, "hubs": c.hubs, "handler": c.handler, "spread": c.spread,
            "connections": c.connections, "tls": c.tls, "samples": c.samples,
            "median": median(c.samples), "cpu_us_per_request": c.cpu_us,
            "cpu_us_median": median(c.cpu_us), "errors": c.errors,
        }
        for c in configs
    }


# -- sections ------------------------------------------------------------------


def section_pure(bench: Bench) -> dict:
    gevent = Config("gevent StreamServer", "gevent")
    gp = {n: Config(f"greenpool {n} hub{'s' * (n > 1)}", "greenpool", hubs=n) for n in (1, 2, 4)}
    pinned = {
        n: Config(f"greenpool {n} hubs, one core", "greenpool", hubs=n, pin=True) for n in (2, 4)
    }
    uv = Config("uvloop asyncio Protocol", "uvloop")
    threads = Config("thread per connection", "threads")
    configs = [gevent, *gp.values(), *pinned.values(), threads]
    if _has("uvloop"):
        configs.insert(6, uv)
    bench.measure(configs)
    ratios = [
        ratio(gp[1], gevent, "greenpool 1 hub / gevent", 0.95),
        ratio(gp[2], gevent, "greenpool 2 hubs / gevent", 0.95),
        ratio(gp[4], gevent, "greenpool 4 hubs / gevent"),
        ratio(pinned[2], gevent, "greenpool 2 hubs on one core / gevent", 0.95),
        ratio(pinned[4], gevent, "greenpool 4 hubs on one core / gevent"),
        ratio(threads, gevent, "threads / gevent"),
    ]
    if uv in configs:
        ratios.insert(5, ratio(uv, gevent, "uvloop / gevent"))
    return {"configs": table(configs), "ratios": ratios}


def section_blocking(bench: Bench) -> dict:
    gevent = Config("gevent StreamServer", "gevent", handler="blocking")
    gp = {
        n: Config(f"greenpool {n} hubs", "greenpool", hubs=n, handler="blocking")
        for n in BLOCKING_HUBS
    }
    threads = {
        n: Config(f"threads, {n} connections", "threads", handler="blocking", connections=n)
        for n in BLOCKING_HUBS
    }
    threads64 = Config("threads, 64 connections", "threads", handler="blocking")
    configs = [gevent, *gp.values(), *threads.values(), threads64]
    bench.measure(configs)
    ratios = []
    for n in BLOCKING_HUBS:
        ratios.append(ratio(gp[n], gevent, f"greenpool {n} hubs / gevent", 0.9 * n))
        ratios.append(ratio(gp[n], threads[n], f"greenpool {n} hubs / {n} threads", 0.9))
    ratios.append(ratio(gp[BLOCKING_HUBS[-1]], threads64, "greenpool 8 hubs / 64 threads"))
    return {"configs": table(configs), "ratios": ratios, "block_seconds": BLOCK_SECONDS}


def section_spread(bench: Bench) -> dict:
    gevent = Config("gevent StreamServer", "gevent")
    configs = [gevent]
    for n in (2, 4):
        for spread in SPREADS:
            label = f"greenpool {n} hubs {spread}"
            configs.append(Config(label, "greenpool", hubs=n, spread=spread))
    bench.measure(configs)
    ratios = [ratio(c, gevent, f"{c.label} / gevent") for c in configs[1:]]
    return {"configs": table(configs), "ratios": ratios}


def section_tls(bench: Bench) -> dict:
    bench.certs = bench.certs or bench.make_certs()
    if bench.certs is None:
        return {"skipped": "openssl not found (apt-get install -y openssl)"}
    gevent = Config("gevent StreamServer TLS", "gevent", tls=True)
    gp = {n: Config(f"greenpool {n} hub{'s' * (n > 1)} TLS", "greenpool", hubs=n, tls=True)
          for n in (1, 2, 4)}
    configs = [gevent, *gp.values()]
    bench.measure(configs)
    ratios = [
        ratio(gp[2], gp[1], "TLS greenpool 2 hubs / 1 hub"),
        ratio(gp[4], gp[1], "TLS greenpool 4 hubs / 1 hub"),
        ratio(gp[1], gevent, "TLS greenpool 1 hub / gevent"),
    ]
    return {"configs": table(configs), "ratios": ratios}


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants (forked workers), in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration):
            continue
    return total


def hold_connections(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` keep-alive connections, one answered request each, and keep them."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks: list[socket.socket] = []
    batch = 256
    while len(socks) < count:
        fresh = [
            socket.create_connection(("127.0.0.1", port), timeout=30)
            for _ in range(min(batch, count - len(socks)))
        ]
        for s in fresh:
            s.sendall(request)
        for s in fresh:
            got = b""
            while not got.endswith(BODY):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("server closed a held connection")
                got += chunk
        socks.extend(fresh)
    return socks


def section_memory(bench: Bench) -> dict:
    count = bench.opts.connections
    limit = raise_nofile()
    if limit < count + 100:
        return {"skipped": f"RLIMIT_NOFILE is {limit}, need {count + 100}"}
    hubs = os.cpu_count() or 1
    configs = [
        Config("gevent StreamServer", "gevent"),
        Config(f"greenpool {hubs} hubs", "greenpool", hubs=hubs),
        Config("thread per connection", "threads"),
        Config(f"WSGI greenpool {hubs} hubs", "wsgi-greenpool", hubs=hubs),
        Config("WSGI gunicorn -k gevent", "wsgi-gunicorn"),
    ]
    rows = {}
    for cfg in configs[:]:
        missing = wsgi_missing(cfg.kind, cfg.app) if cfg.kind in WSGI_KINDS else None
        if missing:
            log(f"  {cfg.label}: skipped, {missing}")
            configs.remove(cfg)
    for cfg in configs:
        bench.start(cfg)
        try:
            hold_connections(cfg.port, 16)
            base = rss_kib(cfg.proc.pid)
            t0 = time.perf_counter()
            socks = hold_connections(cfg.port, count)
            opened = time.perf_counter() - t0
            loaded = rss_kib(cfg.proc.pid)
            for s in socks:
                s.close()
        finally:
            bench.stop(cfg)
        rows[cfg.label] = {
            "connections": count,
            "rss_idle_mib": base / 1024,
            "rss_loaded_mib": loaded / 1024,
            "kib_per_connection": (loaded - base) / count,
            "open_seconds": opened,
        }
        log(f"  {cfg.label:<34} {loaded / 1024:8.1f} MiB with {count} connections "
            f"({(loaded - base) / count:.1f} KiB each)")
    return {"connections": count, "rows": rows}


def section_wsgi(bench: Bench) -> dict:
    """Issue 11's table: one process, one core; greenpool vs gunicorn -k gevent vs granian."""
    configs: list[Config] = []
    rows: dict[tuple[str, str], Config] = {}
    skipped = {}
    for app in ("bare", "flask"):
        for kind, name in (("wsgi-greenpool", "greenpool 1 hub"),
                           ("wsgi-gunicorn", "gunicorn -k gevent"),
                           ("wsgi-granian", "granian")):
            label = f"{app}: {name}"
            missing = wsgi_missing(kind, app)
            if missing:
                skipped[label] = missing
                log(f"  {label}: skipped, {missing}")
                continue
            rows[app, kind] = Config(label, kind, app=app)
            configs.append(rows[app, kind])
    hub_rows = {n: Config(f"bare: greenpool {n} hubs", "wsgi-greenpool", hubs=n) for n in (2, 4)}
    configs.extend(hub_rows.values())
    baseline = {}
    if bench.opts.baseline_rev:
        source = bench.baseline_source()
        for app in ("bare", "flask"):
            if (app, "wsgi-greenpool") in rows:
                baseline[app] = Config(f"{app}: greenpool @{bench.opts.baseline_rev}",
                                       "wsgi-greenpool", app=app, source=source)
                configs.append(baseline[app])
    bench.measure(configs)
    ratios = []
    for app, old in baseline.items():
        if old.samples and rows[app, "wsgi-greenpool"].samples:
            ratios.append(ratio(rows[app, "wsgi-greenpool"], old,
                                f"{app}: greenpool / @{bench.opts.baseline_rev}"))
    goals = {("bare", "wsgi-gunicorn"): 4.0, ("bare", "wsgi-granian"): 0.45,
             ("flask", "wsgi-gunicorn"): 1.7, ("flask", "wsgi-granian"): 1.0}
    for app in ("bare", "flask"):
        gp = rows.get((app, "wsgi-greenpool"))
        for kind, name in (("wsgi-gunicorn", "gunicorn -k gevent"), ("wsgi-granian", "granian")):
            peer = rows.get((app, kind))
            if gp and peer and gp.samples and peer.samples:
                ratios.append(ratio(gp, peer, f"{app}: greenpool / {name}", goals[app, kind]))
    one = rows.get(("bare", "wsgi-greenpool"))
    for n, cfg in hub_rows.items():
        if one and one.samples and cfg.samples:
            ratios.append(ratio(cfg, one, f"bare: greenpool {n} hubs / 1 hub (one core)"))
    configs = [c for c in configs if c.samples]
    return {"configs": table(configs), "ratios": ratios, "skipped_servers": skipped}


# -- profile: where a greenpool WSGI request's time goes ------------------------

#: Layers for the profile summary: (name, test on a pstats key (file, line, function)).
#: cProfile does not see httptools' Cython methods: llhttp's own time is in the
#: self time of greenpool/http/parser.py's ``feed`` (see "llhttp_feed_us").
LAYERS = [
    ("socket calls (send/recv, C)",
     lambda f, fn: f == "~" and any(m in fn for m in ("'send", "'recv", "sendall", "_socket"))),
    ("greenpool HTTP core (Python + llhttp)", lambda f, fn: "greenpool/http/" in f),
    ("greenpool server + wsgi glue", lambda f, fn: "greenpool/" in f),
    ("gevent (sockets, hub, waits)", lambda f, fn: "gevent" in f + fn or "greenlet" in fn),
    ("the app (Flask/Werkzeug)", lambda f, fn: any(
        m in f for m in ("flask", "werkzeug", "blinker", "itsdangerous", "markupsafe", "jinja2"))),
    ("the app (wsgi_apps.py)", lambda f, fn: "wsgi_apps" in f),
    ("stdlib (and builtins it calls)", lambda f, fn: True),
]


def profile_main(argv: list[str]) -> None:
    """Serve one app on a 1-hub pool; cProfile the hub thread between "start" and "stop"."""
    import cProfile

    import greenpool
    from greenpool import wsgi

    app_name, out = argv
    sys.path.insert(0, str(HERE))
    import wsgi_apps

    pool = greenpool.Pool(1, name="profile")
    server = wsgi.serve(getattr(wsgi_apps, app_name), ("127.0.0.1", 0), pool=pool, backlog=4096)
    # CPU time of the hub thread, not wall time: on a shared machine wall time
    # would charge other processes' slices to whatever function was running.
    profiler = cProfile.Profile(time.thread_time)
    ready(server.address[1])
    sys.stdin.readline()
    # enabled from a greenlet on the hub: the profile hook is the hub thread's
    pool.spawn_on(0, profiler.enable).result(10)
    sys.stdout.write("PROFILING\n")
    sys.stdout.flush()
    sys.stdin.readline()
    pool.spawn_on(0, profiler.disable).result(10)
    profiler.dump_stats(out)
    sys.stdout.write("DONE\n")
    sys.stdout.flush()
    server.stop(timeout=1)


def section_profile(bench: Bench) -> dict:
    """cProfile of the greenpool WSGI core under wrk, per app; per-request figures."""
    import pstats

    apps = ["bare"] + (["flask"] if _has("flask") else [])
    results = {}
    for app in apps:
        out = os.path.join(bench.tmp.name, f"profile-{app}.pstats")
        cmd = [sys.executable, os.path.abspath(__file__), "_profile", app, out]
        if bench.server_cpus:
            cmd = ["taskset", "-c", bench.server_cpus, *cmd]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        cfg = Config(f"profile {app}", "greenpool", proc=proc)
        try:
            line = proc.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"profile server did not start: {line!r}")
            cfg.port = int(line.split()[1])
            bench._wrk(cfg, 1)  # warm-up, not profiled
            plain_rps, plain_cpu_us, _ = bench.wrk(cfg, bench.opts.duration)
            proc.stdin.write("start\n")
            proc.stdin.flush()
            assert proc.stdout.readline().startswith("PROFILING")
            rps, requests, _ = bench._wrk(cfg, bench.opts.duration)
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            assert proc.stdout.readline().startswith("DONE")
        finally:
            proc.kill()
            proc.wait(10)
        stats = pstats.Stats(out).stats
        total = sum(tt for _, _, tt, _, _ in stats.values())
        layers = dict.fromkeys((name for name, _ in LAYERS), 0.0)
        top = []
        for (file, line_no, fn), (_cc, ncalls, tottime, cumtime, callers) in stats.items():
            layer = layer_of(file, fn)
            if file == "~" and layer == LAYERS[-1][0] and callers:
                # a builtin (isinstance, dict.get...): its time is its callers' layers'
                for (c_file, _, c_fn), c_stats in callers.items():
                    layers[layer_of(c_file, c_fn)] += c_stats[2]
            else:
                layers[layer] += tottime
            where = fn if file == "~" else f"{short_path(file)}:{line_no} {fn}"
            top.append({
                "function": where, "layer": layer, "calls_per_request": ncalls / requests,
                "us_per_request": tottime * 1e6 / requests,
                "cum_us_per_request": cumtime * 1e6 / requests, "share": tottime / total,
            })
        top.sort(key=lambda row: -row["us_per_request"])
        calls = sum(ncalls for _, ncalls, _, _, _ in stats.values())
        for row in top:
            row["est_us_per_request"] = row["share"] * plain_cpu_us
        results[app] = {
            "requests": requests, "profiled_rps": rps,
            "unprofiled_rps": plain_rps, "unprofiled_cpu_us_per_request": plain_cpu_us,
            "profiled_us_per_request": total * 1e6 / requests,
            "python_calls_per_request": calls / requests,
            "layers": {k: {"us_per_request": v * 1e6 / requests, "share": v / total,
                           "est_us_per_request": v / total * plain_cpu_us}
                       for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
            "top": top[:25],
        }
        log(f"  {app}: unprofiled {plain_rps:,.0f} req/s, {plain_cpu_us:.1f} us CPU/req; "
            f"profiled {requests} requests: {total * 1e6 / requests:.1f} us and "
            f"{calls / requests:.0f} calls per request")
    return {"apps": results, "llhttp_feed_us": llhttp_feed_us()}


def llhttp_feed_us() -> float | None:
    """Microseconds httptools (llhttp) takes to parse wrk's request, callbacks included."""
    try:
        import httptools
    except ImportError:
        return None
    import timeit

    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"

    class Sink:
        def on_url(self, url): pass
        def on_header(self, name, value): pass
        def on_headers_complete(self): pass
        def on_message_complete(self): pass

    parser = httptools.HttpRequestParser(Sink())
    number = 20000
    best = min(timeit.repeat(lambda: parser.feed_data(request), number=number, repeat=5))
    return best * 1e6 / number


def layer_of(file: str, fn: str) -> str:
    return next(name for name, test in LAYERS if test(file, fn))


def short_path(file: str) -> str:
    for marker in ("site-packages/", "/greenpool/", "/lib/python"):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return ("greenpool/" + tail) if marker == "/greenpool/" else tail
    return os.path.basename(file)


SECTION_FUNCS = {
    "pure": section_pure,
    "blocking": section_blocking,
    "spread": section_spread,
    "tls": section_tls,
    "memory": section_memory,
    "wsgi": section_wsgi,
    "profile": section_profile,
}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def git_revision() -> str | None:
    """The checkout's commit, with "+dirty" when greenpool/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain",
                                "greenpool"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def print_summary(results: dict) -> None:
    log("")
    log(f"{'':-<78}")
    log("Medians of alternating runs; ratios are medians of per-round ratios [min-max]; "
        "CPU = CPU-time-per-request ratio (inverse).")
    machine = results["machine"]
    log(f"Machine: {machine['cpus']} CPUs; client on CPU {machine['client_cpu']}, servers on "
        f"CPUs {machine['server_cpus'] or 'any'}; load average "
        f"{machine['loadavg_start'][0]:.1f} -> {machine['loadavg_end'][0]:.1f}; "
        f"greenpool {machine.get('revision')}. Noisy on small shared machines.")
    for name, section in results["sections"].items():
        log(f"\n[{name}]")
        if "skipped" in section:
            log(f"  skipped: {section['skipped']}")
            continue
        if name == "profile":
            print_profile(section)
            continue
        for label, why in section.get("skipped_servers", {}).items():
            log(f"  {label}: skipped, {why}")
        if name == "memory":
            for label, row in section["rows"].items():
                log(f"  {label:<34} {row['rss_loaded_mib']:8.1f} MiB RSS with "
                    f"{row['connections']} idle connections, "
                    f"{row['kib_per_connection']:.1f} KiB each")
            continue
        log(f"  {'server':<34} {'req/s':>10} {'CPU us/req':>11}")
        for label, row in section["configs"].items():
            extra = f"  errors: {row['errors'][0]}" if row["errors"] else ""
            log(f"  {label:<34} {row['median']:>10,.0f} {row['cpu_us_median']:>11.1f}{extra}")
        log(f"  {'ratio':<40} {'req/s':>6} {'[min-max]':<11} {'CPU':>5}")
        for r in section["ratios"]:
            goal = f"  goal >= {r['goal']:.2f}" if r["goal"] else ""
            log(f"  {r['name']:<40} {r['ratio']:5.2f}x [{r['min']:.2f}-{r['max']:.2f}] "
                f"{r['cpu_ratio']:5.2f}x{goal}")


def print_profile(section: dict) -> None:
    log("  Shares are of the hub thread's CPU time under cProfile (a builtin's time goes to "
        "its callers' layer); 'est. us' scales them to the unprofiled CPU time per request.")
    if section.get("llhttp_feed_us") is not None:
        log(f"  llhttp alone parses wrk's request in {section['llhttp_feed_us']:.2f} us "
            "(inside parser.feed's self time below)")
    for app, row in section["apps"].items():
        log(f"  {app}: {row['unprofiled_cpu_us_per_request']:.1f} us CPU per request unprofiled "
            f"({row['unprofiled_rps']:,.0f} req/s); {row['python_calls_per_request']:.0f} "
            "profiled calls per request")
        for layer, v in row["layers"].items():
            log(f"    {layer:<40} {v['share']:6.1%}  est. {v['est_us_per_request']:6.1f} us")
        log(f"    {'top functions (self time)':<58} {'share':>6} {'est. us':>7} {'calls':>6}")
        for t in row["top"][:15]:
            log(f"    {t['function'][:58]:<58} {t['share']:6.1%} {t['est_us_per_request']:7.2f} "
                f"{t['calls_per_request']:6.2f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        serve_main(argv[1:])
        return 0
    if argv and argv[0] == "_profile":
        profile_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        description="HTTP servers on greenpool vs gevent, uvloop, threads, and WSGI servers "
        "(gunicorn -k gevent, granian), driven by wrk.",
        epilog="--quick means --duration 1 --runs 3 --connections 2000 "
        "--sections pure,blocking,tls,memory,wsgi",
    )
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)} "
                        f"(default: all but profile)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=5, help="alternating rounds per section")
    parser.add_argument("--connections", type=int, default=10000,
                        help="idle keep-alive connections for the memory section")
    parser.add_argument("--client-cpu", type=int, default=None, help="CPU for wrk (default: last)")
    parser.add_argument("--server-cpus", default=None,
                        help="taskset CPU list for servers, or 'all' "
                        "(default: every CPU but the client's)")
    parser.add_argument("--only", default=None,
                        help="regex: measure only the servers whose label matches")
    parser.add_argument("--baseline-rev", default=None,
                        help="wsgi section: also measure greenpool as of this git revision "
                        "(e.g. the last one serving with pywsgi) and print new/old ratios")
    parser.add_argument("--quick", action="store_true", help="a short run (< 2 minutes)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.duration, opts.runs, opts.connections = 1.0, 3, 2000
        if opts.sections == ",".join(DEFAULT_SECTIONS):
            opts.sections = "pure,blocking,tls,memory,wsgi"
    sections = [s.strip() for s in opts.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    needs_wrk = any(s != "memory" for s in sections)
    if needs_wrk and not ensure_wrk():
        log("SKIPPED: wrk not found; install it with `apt-get install -y wrk` (Debian/Ubuntu)")
        return 0
    if not shutil.which("taskset"):
        log("SKIPPED: taskset not found (util-linux)")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench = Bench(opts)
    import gevent

    results = {
        "benchmark": "servers",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "client_cpu": bench.client_cpu,
            "server_cpus": bench.server_cpus,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gevent": gevent.__version__,
            "revision": git_revision(),
            "loadavg_start": os.getloadavg(),
        },
        "options": {"duration": opts.duration, "runs": opts.runs, "wrk_connections": 64},
        "sections": {},
    }
    t0 = time.monotonic()
    for name in sections:
        log(f"[{name}]")
        results["sections"][name] = SECTION_FUNCS[name](bench)
    results["seconds"] = time.monotonic() - t0
    results["machine"]["loadavg_end"] = os.getloadavg()
    print_summary(results)
    RESULTS.mkdir(exist_ok=True)
    out = opts.output or RESULTS / f"servers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(results, indent=1)
    out.write_text(text)
    (RESULTS / "servers-latest.json").write_text(text)
    log(f"\nwrote {out} ({results['seconds']:.0f}s); plot: python benchmarks/plot.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
