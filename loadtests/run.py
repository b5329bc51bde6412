"""Run a bounded locust load test against a greenpool server and judge the result.

    python -m loadtests.run --target wsgi --hubs 2 --users 20 --time 10s
    python -m loadtests.run --target echo --workers 2
    python -m loadtests.run --target mixed --hubs 1 --shape
    python -m loadtests.run --target legacy --hubs 4 --users 32 --time 10s
    python -m loadtests.run --target websocket --hubs 4 --users 200 --time 10s
    python -m loadtests.run --host http://127.0.0.1:8000 --locustfile my_locustfile.py

The runner starts the target server in its own process (its own session, so
signals and cleanup reach every process it made), waits until it accepts
connections, runs locust headless for ``--time`` in another process (locust
monkey-patches at import, so it never runs in this process or the server's),
then stops the target with SIGTERM. WSGI targets are served by ``python -m
greenpool wsgi`` where it exists (``--wsgi-server builtin``: by
``loadtests/targets.py``). The ``legacy`` target is
``examples/legacy_flask_app.py`` (a thread-style Flask app; it needs
PostgreSQL) under ``gunicorn -k greenpool.gunicorn.Worker --threads HUBS``,
calling ``examples/legacy_upstream.py`` (``LEGACY_UPSTREAM_DELAY_MS`` delays
its answers); after the run, every item the app queued to its background
thread must have been consumed. The ``websocket`` target is
``examples/websocket_broadcast.py`` (flask-sock, a broadcaster thread) under
``python -m greenpool wsgi --patch``; each locust user holds one WebSocket.
Reports go to ``loadtests/reports/``: locust's CSV and HTML, a JSON summary,
and both processes' logs.

Exit status 0 means: requests were made, none failed, locust exited cleanly,
the target stayed up for the whole run and exited with status 0 on SIGTERM.
Anything else exits 1 with a one-line reason on stderr; bad options exit 2.
Defaults come from the environment: TARGET, HUBS, USERS, SPAWN_RATE,
LOADTEST_TIME, WORKERS.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import importlib.util
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"
PLUGIN = LOCUSTFILES / "harness_plugin.py"
SHAPE = LOCUSTFILES / "step_shape.py"
DEFAULT_REPORTS = Path(__file__).resolve().parent / "reports"
DEFAULT_APP = "loadtests.apps:app"

REPORT_SUFFIXES = (".html", "_stats.csv", "_stats_history.csv", "_failures.csv",
                   "_exceptions.csv", "_summary.json", "-locust.log", "-target.log")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Locust gets its run time plus this much for start-up (forking workers) and shutdown.
LOCUST_GRACE = 60.0


class LoadTestFailed(Exception):
    """The run finished but must not pass; the message is the one-line reason."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinds like KeyboardInterrupt so cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    raise Interrupted(signum)


class UsageError(Exception):
    """Bad options; the message says which and what to do instead."""


@dataclasses.dataclass(frozen=True)
class Profile:
    """A target: which server to start (``server``) and the locustfile that drives it."""

    server: str
    locustfile: Path
    scheme: str


PROFILES = {
    "echo": Profile("echo", LOCUSTFILES / "echo_user.py", "tcp"),
    "wsgi": Profile("wsgi", LOCUSTFILES / "http_user.py", "http"),
    "mixed": Profile("wsgi", LOCUSTFILES / "mixed_user.py", "http"),
    "legacy": Profile("legacy", LOCUSTFILES / "legacy_user.py", "http"),
    "websocket": Profile("websocket", LOCUSTFILES / "websocket_user.py", "ws"),
}
#: The app the websocket target serves (flask-sock, a broadcaster thread).
WEBSOCKET_APP = "examples.websocket_broadcast:app"
#: How long the legacy app may take to consume its queue once the load stopped.
DRAIN_TIMEOUT = 10.0


# -- options ---------------------------------------------------------------------------------


def parse_duration(text: str) -> int:
    """Locust's ``-t`` syntax (``"10s"``, ``"1m30s"``, ``"2h"``, ``"45"``) -> whole seconds > 0."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"time must look like 10s, 1m30s or 2h, got {text!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"time must be positive, got {text!r}")
    return total


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def loopback_host(host: str, scheme: str) -> str:
    """Normalise ``host`` to ``scheme://HOST:PORT``, refusing anything but loopback."""
    url = host if "://" in host else f"{scheme}://{host}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--host {host!r} is not a valid address: {exc}")
    name = parts.hostname or ""
    if name != "localhost":
        try:
            loopback = ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UsageError(
                f"refusing to load-test {name or host!r}: the harness only drives loopback "
                "servers (127.0.0.0/8, ::1 or localhost)"
            )
    if scheme == "tcp" and port is None:
        raise UsageError(f"--host for the echo target needs a port: tcp://HOST:PORT, got {host!r}")
    return url.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description="Bounded locust load test against a greenpool server.",
    )
    parser.add_argument("--target", choices=sorted(PROFILES), default=env("TARGET", "wsgi"),
                        help="profile: echo (raw TCP), wsgi (HTTP), mixed (HTTP, some blocking "
                             "requests), legacy (a thread-style Flask app under the gunicorn "
                             "worker; needs PostgreSQL), websocket (a flask-sock app: echo and "
                             "broadcasts over one WebSocket per user) [env TARGET, default wsgi]")
    parser.add_argument("--hubs", type=positive_int, default=env("HUBS") or None,
                        help="hub threads in the target server [env HUBS, default CPU count]")
    parser.add_argument("--users", type=positive_int, default=env("USERS", "20"),
                        help="concurrent locust users (peak users with --shape) "
                             "[env USERS, default 20]")
    parser.add_argument("--spawn-rate", type=positive_float, default=env("SPAWN_RATE") or None,
                        help="users started per second [env SPAWN_RATE, default: all in 1 s]")
    parser.add_argument("--time", type=str, default=env("LOADTEST_TIME", "10s"),
                        help="run time, locust syntax [env LOADTEST_TIME, default 10s]")
    parser.add_argument("--workers", type=positive_int, default=env("WORKERS", "1"),
                        help="locust processes; more than 1 runs locust distributed "
                             "(--processes) [env WORKERS, default 1]")
    parser.add_argument("--shape", action="store_true",
                        help="step users up to --users in --steps equal steps (find the knee)")
    parser.add_argument("--steps", type=positive_int, default=5, help="steps for --shape")
    parser.add_argument("--host", "--target-url", dest="host", default=None,
                        help="drive an already running loopback server instead of starting one "
                             "(http://127.0.0.1:8000, tcp://127.0.0.1:9000)")
    parser.add_argument("--app", default=DEFAULT_APP,
                        help=f"WSGI app the wsgi/mixed target serves (default {DEFAULT_APP})")
    parser.add_argument("--wsgi-server", choices=("cli", "builtin"), default=None,
                        help="how wsgi/mixed targets are served: cli = `python -m greenpool "
                             "wsgi` (the default where it exists), builtin = "
                             "loadtests/targets.py's WSGIServer per hub")
    parser.add_argument("--locustfile", type=Path, default=None,
                        help="your own locustfile instead of the target's profile")
    parser.add_argument("--name", default=None, help="report file name prefix")
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS,
                        help="report directory (default loadtests/reports)")
    return parser


@dataclasses.dataclass
class Settings:
    """Validated options for one run."""

    profile: Profile
    target: str
    hubs: int | None
    users: int
    spawn_rate: float
    run_time: str
    seconds: int
    workers: int
    shape: bool
    steps: int
    host: str | None
    app: str
    wsgi_server: str
    locustfile: Path
    name: str
    reports: Path


def default_wsgi_server() -> str:
    """``"cli"`` when this greenpool has ``python -m greenpool wsgi``, else ``"builtin"``.

    Looks for the files without importing greenpool (the runner imports no gevent).
    """
    spec = importlib.util.find_spec("greenpool")
    if spec is None or spec.origin is None:
        return "builtin"
    package = Path(spec.origin).parent
    return "cli" if (package / "__main__.py").is_file() and (package / "wsgi.py").is_file() \
        else "builtin"


def settings_from(argv: Sequence[str] | None) -> Settings:
    parser = build_parser()
    opts = parser.parse_args(argv)
    try:
        seconds = parse_duration(opts.time)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    profile = PROFILES[opts.target]
    host = loopback_host(opts.host, profile.scheme) if opts.host else None
    locustfile = (opts.locustfile or profile.locustfile).resolve()
    if not locustfile.is_file():
        raise UsageError(f"locustfile {locustfile} does not exist")
    name = opts.name or "-".join(filter(None, (
        opts.target, f"hubs{opts.hubs}" if opts.hubs and not host else None,
        f"workers{opts.workers}", "shape" if opts.shape else None,
    )))
    if not re.fullmatch(r"[\w.-]+", name):
        raise UsageError(f"--name may use letters, digits, '.', '_' and '-' only, got {name!r}")
    return Settings(
        profile=profile, target=opts.target, hubs=opts.hubs, users=opts.users,
        spawn_rate=opts.spawn_rate or float(opts.users), run_time=opts.time.strip(),
        seconds=seconds, workers=opts.workers, shape=opts.shape, steps=opts.steps, host=host,
        app=opts.app, wsgi_server=opts.wsgi_server or default_wsgi_server(),
        locustfile=locustfile, name=name, reports=opts.reports.resolve(),
    )


# -- processes -------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable and ``extra`` added."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    env.update(extra)
    return env


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``cmd`` in a new session (its own process group), output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> tuple[int, bool]:
    """SIGTERM ``proc``'s group, SIGKILL it after ``timeout``; -> (exit status, was killed)."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
        killed = False
    except subprocess.TimeoutExpired:
        killed = True
    # Whatever the leader did, leave nothing of the group behind.
    signal_group(proc, signal.SIGKILL)
    return proc.wait(), killed


def last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (for one-line reasons), or ''."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def free_port(host: str) -> int:
    """A port nobody listens on right now (the target binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_ready(proc: subprocess.Popen, host: str, port: int, log: Path, timeout: float) -> None:
    """Poll until ``host:port`` accepts a connection; fail fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise LoadTestFailed(
                f"target exited with status {proc.returncode} before accepting connections: "
                f"{last_line(log) or 'no output'} (log: {log})"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LoadTestFailed(
                f"target did not accept connections on {host}:{port} within {timeout:.0f} s "
                f"(log: {log})"
            )
        time.sleep(0.05)


def target_command(settings: Settings, host: str, port: int) -> list[str]:
    """The command line that serves the chosen target on ``host:port``."""
    hubs = ["--hubs", str(settings.hubs)] if settings.hubs else []
    if settings.profile.server == "wsgi" and settings.wsgi_server == "cli":
        return [sys.executable, "-m", "greenpool", "wsgi", settings.app, "--bind",
                f"{host}:{port}", *hubs, "--log-level", "warning",
                "--graceful-timeout", str(STOP_TIMEOUT / 2)]
    if settings.profile.server == "websocket":  # thread-style: served patched, as -k gevent
        return [sys.executable, "-m", "greenpool", "wsgi", WEBSOCKET_APP, "--patch", "--bind",
                f"{host}:{port}", *hubs, "--log-level", "warning",
                "--graceful-timeout", str(STOP_TIMEOUT / 2)]
    cmd = [sys.executable, "-m", "loadtests.targets", settings.profile.server,
           "--bind", f"{host}:{port}", *hubs]
    if settings.profile.server == "wsgi":
        cmd += ["--app", settings.app]
    return cmd


def locust_command(settings: Settings, host: str, prefix: Path) -> list[str]:
    files = [settings.locustfile, PLUGIN] + ([SHAPE] if settings.shape else [])
    cmd = [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(f) for f in files),
        "--headless", "--only-summary",
        "-u", str(settings.users), "-r", f"{settings.spawn_rate:g}", "-t", settings.run_time,
        "--host", host,
        "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
        "--exit-code-on-error", "1",
    ]
    if settings.workers > 1:
        # The master would bind *:5557: keep it on loopback, on a port of its own, so that
        # two runs at once (parallel CI jobs) do not collide.
        master_port = str(free_port("127.0.0.1"))
        cmd += ["--processes", str(settings.workers), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", master_port, "--master-port", master_port]
    return cmd


def served_per_hub(host: str, port: int) -> dict[str, int] | str:
    """Requests per hub from the harness app's ``/_stats``, or why they are unavailable."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/_stats")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return f"GET /_stats answered {response.status}"
        return json.loads(body)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"GET /_stats failed: {exc!r}"
    finally:
        conn.close()


def legacy_app_stats(host: str, port: int, timeout: float = DRAIN_TIMEOUT) -> dict | str:
    """The legacy app's counters once its writer thread consumed everything queued.

    ``GET /stats?drain=1`` waits in the app (``queue.join()``) for the queue to
    empty; a request the load left in flight may queue one more item after it,
    so this asks again until ``queued == consumed`` or ``timeout`` passes.
    Returns why the counters are unavailable instead, as a string.
    """
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=max(1.0, deadline - time.monotonic()))
        try:
            conn.request("GET", "/stats?drain=1")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return f"GET /stats?drain=1 answered {response.status}"
            stats = json.loads(body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return f"GET /stats?drain=1 failed: {exc!r} (did queue.join() hang?)"
        finally:
            conn.close()
        if stats["queued"] == stats["consumed"] or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


# -- the run ---------------------------------------------------------------------------------


def describe(settings: Settings) -> str:
    """The run's settings on one line, for the summary's first line."""
    fields = {"target": settings.target}
    if not settings.host:
        if settings.profile.server == "wsgi":
            fields["server"] = settings.wsgi_server
        elif settings.profile.server == "legacy":
            fields["server"] = "gunicorn-greenpool"
        elif settings.profile.server == "websocket":
            fields["server"] = "cli-patched"
        fields["hubs"] = settings.hubs or "auto"
    fields.update(users=settings.users, **{"spawn-rate": f"{settings.spawn_rate:g}"},
                  time=settings.run_time, workers=settings.workers)
    if settings.shape:
        fields["steps"] = settings.steps
    return " ".join(f"{key}={value}" for key, value in fields.items())


@dataclasses.dataclass
class Outcome:
    """What one run produced, judged by :func:`verdict`."""

    summary: dict | None = None
    locust_status: int | None = None
    locust_timed_out: bool = False
    target_died: int | None = None
    target_stop: tuple[int, bool] | None = None
    per_hub: dict[str, int] | str | None = None
    app_stats: dict | str | None = None
    files: list[Path] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def stopping_all(proc_holder: list[subprocess.Popen]) -> Iterator[None]:
    """Kill whatever processes are still in ``proc_holder`` on the way out, whatever happened."""
    try:
        yield
    finally:
        # A second Ctrl-C must not cut the cleanup short (it is bounded by STOP_TIMEOUT each).
        ignored = {signum: signal.signal(signum, signal.SIG_IGN)
                   for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for proc in reversed(proc_holder):
                if proc.poll() is None:
                    stop(proc)
        finally:
            for signum, handler in ignored.items():
                signal.signal(signum, handler)


def run(settings: Settings, out=sys.stdout) -> Outcome:
    """Start the target (unless ``--host``), run locust, stop everything; never leaves processes."""
    settings.reports.mkdir(parents=True, exist_ok=True)
    prefix = settings.reports / settings.name
    summary_path = Path(f"{prefix}_summary.json")
    locust_log = Path(f"{prefix}-locust.log")
    target_log = Path(f"{prefix}-target.log")
    for suffix in REPORT_SUFFIXES:  # a previous run's files must not pass for this run's
        with contextlib.suppress(FileNotFoundError):
            Path(f"{prefix}{suffix}").unlink()
    outcome = Outcome()
    procs: list[subprocess.Popen] = []
    with stopping_all(procs):
        target = None
        if settings.host:
            url = settings.host
        else:
            bind_host = "127.0.0.1"
            port = free_port(bind_host)
            target = start(target_command(settings, bind_host, port), target_log, child_env())
            procs.append(target)
            wait_ready(target, bind_host, port, target_log, READY_TIMEOUT)
            url = f"{settings.profile.scheme}://{bind_host}:{port}"
        print(f"greenpool loadtest: {describe(settings)} -> {url}", file=out, flush=True)
        env = child_env(LOADTEST_SUMMARY=str(summary_path), LOADTEST_STEPS=str(settings.steps))
        locust = start(locust_command(settings, url, prefix), locust_log, env)
        procs.append(locust)
        try:
            outcome.locust_status = locust.wait(settings.seconds + LOCUST_GRACE)
        except subprocess.TimeoutExpired:
            outcome.locust_timed_out = True
            outcome.locust_status, _ = stop(locust)
        if target is not None:
            outcome.target_died = target.poll()
            if outcome.target_died is None:
                if settings.profile.server == "wsgi" and settings.app == DEFAULT_APP:
                    outcome.per_hub = served_per_hub(bind_host, port)
                elif settings.profile.server == "legacy":
                    outcome.app_stats = legacy_app_stats(bind_host, port)
                outcome.target_stop = stop(target)
    if summary_path.is_file():
        try:
            outcome.summary = json.loads(summary_path.read_text())
        except ValueError:
            outcome.summary = None
    outcome.files = [p for p in (Path(f"{prefix}{suffix}") for suffix in REPORT_SUFFIXES)
                     if p.is_file()]
    return outcome


def verdict(settings: Settings, outcome: Outcome) -> list[str]:
    """Every reason this run fails, most fundamental first (empty: it passed)."""
    prefix = settings.reports / settings.name
    locust_log = Path(f"{prefix}-locust.log")
    reasons = []
    if outcome.locust_timed_out:
        reasons.append(f"locust did not finish within {settings.seconds + LOCUST_GRACE:.0f} s "
                       f"and was stopped (log: {locust_log})")
    if outcome.target_died is not None:
        reasons.append(f"the target died during the run (exit status {outcome.target_died}; "
                       f"log: {prefix}-target.log)")
    summary = outcome.summary
    if summary is None:
        reasons.append(f"locust wrote no summary (exit status {outcome.locust_status}): "
                       f"{last_line(locust_log) or 'no output'} (log: {locust_log})")
    else:
        total = summary["total"]
        if total["requests"] == 0:
            # Requests may have been sent: none completed, none failed (a target
            # that accepts connections and never answers looks like this).
            reasons.append("no request completed (did the target accept and never answer?)")
        elif total["failures"]:
            top = summary["errors"][0] if summary["errors"] else None
            detail = (f"; most common: {top['error']} ({top['occurrences']}x on "
                      f"{top['type']} {top['name']})") if top else ""
            reasons.append(f"{total['failures']} of {total['requests']} requests failed{detail}")
        if outcome.locust_status and not total["failures"]:
            reasons.append(f"locust exited with status {outcome.locust_status}: "
                           f"{last_line(locust_log)} (log: {locust_log})")
    stats = outcome.app_stats
    if isinstance(stats, str):
        reasons.append(f"the legacy app's counters are unavailable: {stats}")
    elif stats is not None:
        if stats["consumed"] != stats["queued"]:
            reasons.append(f"the legacy app queued {stats['queued']} items but its background "
                           f"thread consumed {stats['consumed']} within {DRAIN_TIMEOUT:.0f} s")
        answered = (summary or {}).get("total", {})
        ok = answered.get("requests", 0) - answered.get("failures", 0)
        if stats["queued"] < ok:
            reasons.append(f"{ok} requests succeeded but the legacy app queued only "
                           f"{stats['queued']} items")
    if outcome.target_stop is not None:
        status, killed = outcome.target_stop
        if killed:
            reasons.append(f"the target did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM "
                           "and was killed")
        elif status != 0:
            reasons.append(f"the target exited with status {status} on SIGTERM "
                           f"(log: {prefix}-target.log)")
    return reasons


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_summary(settings: Settings, outcome: Outcome, out=sys.stdout) -> None:
    summary = outcome.summary
    if summary:
        header = (f"  {'type':<5} {'name':<24} {'requests':>9} {'fails':>6} {'req/s':>9} "
                  f"{'avg ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        print(header, file=out)
        for row in [*summary["entries"], summary["total"]]:
            print(f"  {row['type']:<5} {row['name'][:24]:<24} {row['requests']:>9} "
                  f"{row['failures']:>6} {row['rps']:>9.1f} {_ms(row['avg_ms']):>8} "
                  f"{_ms(row['p50_ms']):>8} {_ms(row['p95_ms']):>8} {_ms(row['p99_ms']):>8}",
                  file=out)
        if settings.shape and summary.get("steps"):
            print("  steps:  users    req/s   avg ms  fails", file=out)
            for step in summary["steps"]:
                print(f"         {step['users']:>5} {step['rps']:>8.1f} "
                      f"{_ms(step['avg_ms']):>8} {step['failures']:>6}", file=out)
    if isinstance(outcome.per_hub, dict):
        print("  requests per hub: " + (", ".join(
            f"hub {hub}: {count}" for hub, count in outcome.per_hub.items()) or "none"), file=out)
    elif outcome.per_hub:
        print(f"  requests per hub: unavailable ({outcome.per_hub})", file=out)
    if isinstance(outcome.app_stats, dict):
        stats = outcome.app_stats
        print(f"  legacy app: queued {stats['queued']}, consumed {stats['consumed']}, "
              f"cache {stats['cached']} items / {stats['cache_hits']} hits", file=out)
    if outcome.files:
        suffixes = ",".join(sorted(p.name[len(settings.name):] for p in outcome.files))
        print(f"  reports: {display_path(settings.reports / settings.name)}{{{suffixes}}}",
              file=out)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    if importlib.util.find_spec("locust") is None:
        print("loadtest FAILED: locust is not installed; it needs Python >= 3.11 and "
              "`pip install -e '.[test]'`", file=sys.stderr)
        return 2
    try:
        settings = settings_from(argv)
    except UsageError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM (a CI timeout) unwind through run(), which stops every process it
    # started; the children run in their own sessions, so only this process gets the signal.
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = run(settings)
    except LoadTestFailed as exc:
        print(f"loadtest FAILED: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        print(f"loadtest FAILED: interrupted by {name}; every process it started was stopped "
              f"(partial reports: {display_path(settings.reports)})", file=sys.stderr)
        return 128 + exc.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print_summary(settings, outcome)
    reasons = verdict(settings, outcome)
    if reasons:
        print(f"loadtest FAILED: {'; '.join(reasons)}", file=sys.stderr)
        return 1
    print("loadtest OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
