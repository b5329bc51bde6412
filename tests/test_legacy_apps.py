"""Real clients against real servers, shared across 4 hubs as a thread-style app shares them.

Each test runs ``tests/legacy_apps_child.py`` in a subprocess: it calls
``greenpool.monkey.patch_all()`` first, then 16 ``threading.Thread`` workers
(placed on the 4 hubs of ``GREENPOOL_HUBS=4`` by greenpool's dispatcher) share
ONE client object: a ``requests.Session``, a ``urllib3.PoolManager(block=True)``,
redis-py's ``BlockingConnectionPool``, psycopg2's ``ThreadedConnectionPool``
(plain and with a psycogreen-style wait callback), SQLAlchemy's engine pool,
PyMySQL behind a lock-guarded pool, a ``queue.Queue`` to background threads, an
app-level ``ThreadPoolExecutor`` and ``logging`` to one file. 400 tasks per
repetition, every result checked; the racy ones are repeated (10 times) to
catch a hang that strikes one run in ten. The child's stderr must stay empty:
no traceback at exit from sockets whose hub has stopped.

PostgreSQL, MariaDB and Redis are the local services of the development setup
(127.0.0.1, default ports); a test that needs an unreachable one is skipped,
or fails when ``CI=true``.

The last tests serve ``examples/legacy_flask_app.py`` unchanged by both entry
points, ``gunicorn -k greenpool.gunicorn.Worker --threads 4`` and ``python -m
greenpool wsgi --patch --hubs 4``, with ``examples/legacy_upstream.py`` as its
upstream, and check every answer and that its background thread consumed every
item queued.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import need_service
from tests.procs import ServerProcess, python_cmd, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "legacy_apps_child.py"
HUBS = 4
POOL_SIZE = 4  # the child's client pools


def run_scenario(scenario: str, *args: str, reps: int = 1, timeout: float = 45) -> dict:
    """Run one child scenario; it must exit 0 with a clean stderr. Returns its JSON report."""
    env = dict(os.environ, GREENPOOL_HUBS=str(HUBS), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, str(CHILD), scenario, "--reps", str(reps),
           "--deadline", str(timeout - 5), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert proc.stderr == "", output
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # 16 threads started in the main thread: the dispatcher spread them over every hub.
    assert report["hubs"] == list(range(HUBS)), output
    return report


class _CountingServer(ThreadingHTTPServer):
    """Keep-alive HTTP/1.1 server that counts the connections it accepted."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ItemHandler)
        self.connections = 0
        self._lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        with self._lock:
            self.connections += 1
        super().process_request(request, client_address)


class _ItemHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, every keep-alive
    # response would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = self.path.strip("/").replace("/", " ").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = _CountingServer()
    thread = threading.Thread(target=server.serve_forever, name="legacy-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def url_of(server: _CountingServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.mark.timeout(60)
def test_shared_requests_session_serves_every_hub_and_exits_quietly(http_server):
    run_scenario("requests", "--url", url_of(http_server), reps=5)
    # requests keeps up to 10 idle connections: they were reused, whatever hub asked.
    assert http_server.connections < 5 * 400 / 2, http_server.connections


@pytest.mark.timeout(60)
def test_shared_urllib3_blocking_pool_moves_its_four_connections_between_hubs(http_server):
    run_scenario("urllib3", "--url", url_of(http_server), reps=5)
    # block=True, maxsize=4: 2000 requests from 16 threads on 4 hubs over at most 4 sockets.
    assert http_server.connections <= POOL_SIZE, http_server.connections


@pytest.mark.timeout(60)
def test_redis_blocking_connection_pool_loses_no_wake_up():
    need_service("Redis", 6379)
    report = run_scenario("redis", reps=10)
    assert report["count"] == 10 * 400
    assert 1 <= report["connections"] <= POOL_SIZE, report


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["offload", "blocking", "wait-callback"])
def test_psycopg2_threaded_connection_pool_never_hangs(mode):
    need_service("PostgreSQL", 5432)
    args = {"offload": [], "blocking": ["--psycopg2-blocking"], "wait-callback": ["--green"]}
    report = run_scenario("psycopg2", *args[mode], reps=10)
    assert 1 <= report["connections"] <= POOL_SIZE, report


@pytest.mark.timeout(60)
def test_sqlalchemy_engine_pool_on_postgresql():
    need_service("PostgreSQL", 5432)
    report = run_scenario("sqlalchemy", reps=5)
    assert 1 <= report["connections"] <= POOL_SIZE, report


@pytest.mark.timeout(60)
def test_pymysql_connections_behind_a_condition_guarded_pool_follow_their_users():
    need_service("MariaDB", 3306)
    report = run_scenario("pymysql", reps=10)
    assert report["connections"] == POOL_SIZE, report


@pytest.mark.timeout(60)
def test_queue_to_background_threads_replies_to_every_task_and_join_returns():
    report = run_scenario("queue", reps=10)
    assert report["consumed"] == report["written"] == 10 * 400
    assert report["alive"] == []


@pytest.mark.timeout(60)
def test_unbounded_queue_hammered_from_every_hub_loses_no_wake_up():
    report = run_scenario("queue_burst", reps=2)
    assert report["received"] == 2 * 16 * 20000


@pytest.mark.timeout(60)
def test_app_level_thread_pool_executor_answers_every_hub():
    run_scenario("executor", reps=3)


@pytest.mark.timeout(60)
def test_logging_from_every_hub_to_one_file_keeps_every_line_whole():
    report = run_scenario("logging", reps=3)
    assert report["lines"] == 3 * 400


# -- the Flask example, served unchanged by both entry points ---------------------------------

EXAMPLE_REQUESTS = 400
CLIENTS = 16


@pytest.fixture
def upstream():
    """``examples/legacy_upstream.py`` on a free port; yields its URL."""
    cmd = python_cmd(str(ROOT / "examples" / "legacy_upstream.py"), "--port", "0")
    with ServerProcess(cmd) as proc:
        yield proc.wait_for(r"serving (http://\S+)").group(1)
        assert proc.stop() == 0, proc.output


def fetch(port: int, path: str, conn_holder: dict) -> tuple[int, dict | str]:
    """GET on this client thread's keep-alive connection (made on first use).

    Returns the status and the JSON answer (the body's text when not a 200).
    """
    conn = conn_holder.get(threading.get_ident())
    if conn is None:
        conn = conn_holder[threading.get_ident()] = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=15)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        return response.status, body.decode(errors="replace")[:500]
    return response.status, json.loads(body)


def drive_example(port: int) -> dict:
    """EXAMPLE_REQUESTS requests from CLIENTS keep-alive clients; all must answer right."""
    conns: dict = {}
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as clients:
        answers = list(clients.map(lambda i: fetch(port, f"/?item={i % 50}", conns),
                                   range(EXAMPLE_REQUESTS)))
    for conn in conns.values():
        conn.close()
    failed = [(i, status, answer) for i, (status, answer) in enumerate(answers) if status != 200]
    assert not failed, f"{len(failed)} requests failed, first: {failed[0]}"
    for i, (_, answer) in enumerate(answers):
        assert answer["item"] == str(i % 50) and answer["db"] is True, answer
    status, stats = fetch(port, "/stats?drain=1", {})  # waits in queue.join()
    assert status == 200, stats
    return stats


ENTRY_POINTS = {
    "gunicorn-worker": (
        ["-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "--threads", str(HUBS),
         "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "5"],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    ),
    "greenpool-wsgi-patch": (
        ["-m", "greenpool", "wsgi", "--patch", "--hubs", str(HUBS), "--bind", "127.0.0.1:0",
         "--graceful-timeout", "5"],
        r"serving \S+ on http://127\.0\.0\.1:(\d+)",
    ),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_legacy_flask_example_served_unchanged_answers_all_and_consumes_its_queue(
    entry_point, upstream
):
    need_service("PostgreSQL", 5432)
    args, banner = ENTRY_POINTS[entry_point]
    cmd = python_cmd(*args, "examples.legacy_flask_app:app")
    with ServerProcess(cmd, cwd=ROOT, env={"LEGACY_UPSTREAM": upstream}) as server:
        port = int(server.wait_for(banner, timeout=30).group(1))
        wait_until_answers(port, "/stats")
        stats = drive_example(port)
        assert stats["queued"] == stats["consumed"] >= EXAMPLE_REQUESTS, stats
        assert stats["pending"] == 0 and stats["cached"] == 50, stats
        code = server.stop(timeout=20)
        output = server.output
    assert code == 0, output
    assert not re.search(r"Traceback|Error|Warning", output), output
