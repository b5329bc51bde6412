"""CI smoke for the load-test harness (loadtests/): short, bounded runs of the real runner.

Each run is ``python -m loadtests.run`` in a subprocess, exactly as ``make
loadtest`` calls it; locust itself only ever runs in the runner's child
processes (it monkey-patches at import), never in this test process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import need_service

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="locust is not installed (it needs Python >= 3.11; pip install -e '.[test]')",
)


def run_loadtest(*args: str, reports: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the harness's runner with ``args``, its reports going to ``reports``."""
    env = dict(os.environ)
    for name in ("TARGET", "HUBS", "USERS", "SPAWN_RATE", "LOADTEST_TIME", "WORKERS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--reports", str(reports), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def summary_of(reports: Path, name: str) -> dict:
    return json.loads((reports / f"{name}_summary.json").read_text())


def failure_line(result: subprocess.CompletedProcess) -> str:
    """The runner's one-line reason; fails the test unless stderr is exactly that line."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loadtest FAILED: "), result.stderr
    return lines[0]


def exiting_app(environ, start_response):
    """A WSGI app whose server process dies on its first request (a crashing target)."""
    os._exit(3)


@contextlib.contextmanager
def resetting_server():
    """A loopback listener (plain threads) that resets every connection it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    stop = threading.Event()

    def serve() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                if not selector.select(timeout=0.1):
                    continue
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()

    thread = threading.Thread(target=serve, name="resetting-server")
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


@pytest.mark.timeout(60)
def test_echo_target_under_stepped_load_passes_with_reports(tmp_path):
    result = run_loadtest(
        "--target", "echo", "--hubs", "2", "--users", "4", "--time", "3s",
        "--shape", "--steps", "2", "--name", "echo", reports=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path, "echo")
    assert summary["total"]["requests"] > 0
    assert summary["total"]["failures"] == 0
    assert summary["histogram_requests"] == summary["total"]["requests"]
    assert [step["users"] for step in summary["steps"]] == [2, 4]
    for suffix in ("_stats.csv", "_stats_history.csv", ".html", "-locust.log", "-target.log"):
        assert (tmp_path / f"echo{suffix}").stat().st_size > 0, suffix
    assert "loadtest OK" in result.stdout


@pytest.mark.timeout(60)
def test_wsgi_target_with_two_locust_workers_passes_on_every_hub(tmp_path):
    result = run_loadtest(
        "--target", "wsgi", "--hubs", "2", "--users", "4", "--time", "2s",
        "--workers", "2", "--name", "wsgi", reports=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path, "wsgi")
    assert summary["total"]["requests"] > 0
    assert summary["total"]["failures"] == 0
    assert [entry["name"] for entry in summary["entries"]] == ["/"]
    assert (tmp_path / "wsgi_stats.csv").stat().st_size > 0
    assert (tmp_path / "wsgi.html").stat().st_size > 0
    assert re.search(r"requests per hub: hub \d+: [1-9]", result.stdout), result.stdout


@pytest.mark.timeout(30)
def test_refused_connections_fail_the_run_with_one_line_reason(tmp_path):
    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = run_loadtest(
            "--target", "echo", "--host", f"127.0.0.1:{port}", "--users", "2", "--time", "1s",
            "--name", "refused", reports=tmp_path,
        )
    assert result.returncode == 1
    line = failure_line(result)
    assert "requests failed" in line and "ConnectionRefusedError" in line
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.timeout(30)
def test_reset_connections_fail_the_run_with_one_line_reason(tmp_path):
    with resetting_server() as port:
        result = run_loadtest(
            "--target", "echo", "--host", f"tcp://127.0.0.1:{port}", "--users", "2",
            "--time", "1s", "--name", "reset", reports=tmp_path,
        )
    assert result.returncode == 1
    line = failure_line(result)
    assert "requests failed" in line
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.timeout(30)
def test_target_dying_mid_run_fails_the_run_and_says_so(tmp_path):
    result = run_loadtest(
        "--target", "wsgi", "--hubs", "1", "--users", "2", "--time", "1s",
        "--app", "tests.test_loadtest_smoke:exiting_app", "--name", "dies", reports=tmp_path,
    )
    assert result.returncode == 1
    line = failure_line(result)
    assert "the target died during the run (exit status 3" in line


def need_postgres() -> None:
    """The legacy target's app needs PostgreSQL."""
    need_service("PostgreSQL", 5432)


@pytest.mark.timeout(90)
def test_legacy_flask_target_under_the_gunicorn_worker_passes_and_consumes_every_item(tmp_path):
    need_postgres()
    result = run_loadtest(
        "--target", "legacy", "--hubs", "4", "--users", "16", "--time", "4s",
        "--name", "legacy", reports=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path, "legacy")
    assert summary["total"]["requests"] > 0
    assert summary["total"]["failures"] == 0
    match = re.search(r"legacy app: queued (\d+), consumed (\d+)", result.stdout)
    assert match and match.group(1) == match.group(2), result.stdout
    assert int(match.group(1)) >= summary["total"]["requests"]
    target_log = (tmp_path / "legacy-target.log").read_text()
    assert "Traceback" not in target_log, target_log


@pytest.mark.timeout(60)
def test_legacy_target_whose_queue_is_not_drained_fails_naming_it():
    """The verdict reads the app's counters: a lost queue item fails the run."""
    from loadtests import run as runner

    settings = runner.settings_from(["--target", "legacy", "--time", "1s"])
    summary = {"total": {"requests": 10, "failures": 0}, "errors": []}
    lost = runner.Outcome(summary=summary, locust_status=0, target_stop=(0, False),
                          app_stats={"queued": 10, "consumed": 9, "cached": 1, "cache_hits": 9})
    assert runner.verdict(settings, lost) == [
        "the legacy app queued 10 items but its background thread consumed 9 within 10 s"]
    hung = runner.Outcome(summary=summary, locust_status=0, target_stop=(0, False),
                          app_stats="GET /stats?drain=1 failed: TimeoutError()")
    assert "counters are unavailable" in runner.verdict(settings, hung)[0]
    fine = runner.Outcome(summary=summary, locust_status=0, target_stop=(0, False),
                          app_stats={"queued": 10, "consumed": 10, "cached": 1, "cache_hits": 9})
    assert runner.verdict(settings, fine) == []


@pytest.mark.timeout(90)
def test_websocket_target_on_4_hubs_passes_with_echoes_and_broadcasts(tmp_path):
    """The flask-sock app, patched, 4 hubs: every echo and every broadcast comes back."""
    result = run_loadtest(
        "--target", "websocket", "--hubs", "4", "--users", "40", "--time", "4s",
        "--name", "ws", reports=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path, "ws")
    rows = {row["name"]: row for row in summary["entries"]}
    assert rows["echo"]["requests"] > 0 and rows["broadcast"]["requests"] > 0, rows
    assert summary["total"]["failures"] == 0, summary["errors"]
    target_log = (tmp_path / "ws-target.log").read_text()
    assert "Traceback" not in target_log, target_log


LOCUSTFILE_CHECKS = """
import math, runpy, types
base = "loadtests/locustfiles/"
classes = {f: [n for n, v in runpy.run_path(base + f).items()
             if isinstance(v, type) and v.__module__ == "<run_path>"]
         for f in ("echo_user.py", "http_user.py", "mixed_user.py", "legacy_user.py",
                   "websocket_user.py")}
assert classes == {"echo_user.py": ["EchoMismatch", "EchoClient", "EchoUser"],
                 "http_user.py": ["HelloUser"], "mixed_user.py": ["MixedUser"],
                 "legacy_user.py": ["LegacyUser"],
                 "websocket_user.py": ["Mismatch", "WebSocketUser"]}, classes

plugin = runpy.run_path(base + "harness_plugin.py")
import collections
hist = collections.Counter()
for ms in [1.0] * 98 + [10.0, 100.0]:
    hist[plugin["bucket"](ms)] += 1
p = lambda f: plugin["percentile"](hist, f)
assert 1.0 <= p(0.5) < 1.02 and 1.0 <= p(0.98) < 1.02, (p(0.5), p(0.98))
assert 10.0 <= p(0.99) < 10.2 and 100.0 <= p(1.0) < 102, (p(0.99), p(1.0))
assert plugin["percentile"](collections.Counter(), 0.5) is None
samples = [(t / 4, 2 if t < 16 else 4, 100 * t, 0, 50.0 * t) for t in range(32)]
steps = plugin["steps"](samples)
assert [s["users"] for s in steps] == [2, 4], steps
assert all(abs(s["rps"] - 400) < 1e-6 and abs(s["avg_ms"] - 0.5) < 1e-9 for s in steps), steps

shape = runpy.run_path(base + "step_shape.py")["StepShape"]()
options = types.SimpleNamespace(num_users=10, spawn_rate=5, run_time=10)
shape.runner = types.SimpleNamespace(environment=types.SimpleNamespace(parsed_options=options))
ticks = {}
for t in (0, 1.9, 2.0, 5.0, 9.9, 10.0):
    shape.get_run_time = lambda t=t: t
    ticks[t] = shape.tick()
assert ticks == {0: (2, 5.0), 1.9: (2, 5.0), 2.0: (4, 5.0), 5.0: (6, 5.0), 9.9: (10, 5.0),
                 10.0: None}, ticks
print("ok")
"""


@pytest.mark.timeout(30)
def test_locustfiles_define_their_users_and_the_plugin_and_shape_compute_right():
    # In a subprocess: loading a locustfile imports locust, which monkey-patches.
    result = subprocess.run(
        [sys.executable, "-c", LOCUSTFILE_CHECKS],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.timeout(10)
@pytest.mark.parametrize("host", ["http://192.0.2.1:8000", "example.com:80", "tcp://10.1.2.3:9"])
def test_non_loopback_host_is_refused_before_anything_starts(tmp_path, host):
    result = run_loadtest("--host", host, "--time", "1s", reports=tmp_path)
    assert result.returncode == 2
    assert "only drives loopback servers" in result.stderr
    assert not any(tmp_path.iterdir())
