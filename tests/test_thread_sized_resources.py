"""Apps sized for threads, served unchanged at greenlet-scale concurrency, on real PostgreSQL.

Under ``gunicorn -k gthread --threads 16`` an app never sees more than 16
requests at once and sizes its resources for that: one Django connection per
thread, a psycopg2 pool, PostgreSQL's 100 connections for the machine. These
tests drive such apps with 256 clients at once (``CLIENTS``) through both entry
points (the CLI with ``--patch`` and the gunicorn worker, 4 hubs): every
request must be answered, and the database connections stay bounded by the app
threads (:mod:`greenpool.http.app_threads`, 64 by default), during the load
and after it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import need_service
from tests.procs import ServerProcess, python_cmd, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
HUBS = 4
CLIENTS = 256
REQUESTS_PER_CLIENT = 3
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
#: greenpool's default app threads per process: the bound on per-thread connections.
APP_THREADS = 64

ENTRY_POINTS = {
    "cli": (
        ["-m", "greenpool", "wsgi", "--patch", "--hubs", str(HUBS), "--bind", "127.0.0.1:0",
         "--graceful-timeout", "5", "--log-level", "warning"],
        r"serving \S+ on http://127\.0\.0\.1:(\d+)",
    ),
    "gunicorn": (
        ["-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "--threads", str(HUBS),
         "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "5"],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    ),
}


#: MariaDB has no application_name: the server's connections are root's on
#: database ``test`` (the counting connection names no database). Its tests
#: run one at a time, as every load test here does.
MARIADB = "mariadb"


def _counter(application: str):
    """A connection and the query that counts the server's database connections."""
    if application == MARIADB:
        import MySQLdb

        conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", password="")
        conn.autocommit(True)
        return conn, ("SELECT count(*) FROM information_schema.processlist "
                      "WHERE user = 'root' AND db = 'test'"), ()
    import psycopg2

    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    return conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (
        application,)


def database_connections(application: str) -> int:
    """How many database connections the server under test holds right now."""
    conn, sql, params = _counter(application)
    with contextlib.closing(conn):
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur.fetchone()[0]


class PeakConnections:
    """Samples the server's database connections while the load runs; keeps the peak."""

    def __init__(self, application: str) -> None:
        self.application = application
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        conn, sql, params = _counter(self.application)
        with contextlib.closing(conn):
            cur = conn.cursor()
            while not self._stop.wait(0.02):
                cur.execute(sql, params)
                self.peak = max(self.peak, cur.fetchone()[0])

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def client(port: int, paths: list[str]) -> list[tuple[int, str]]:
    """One keep-alive client: each path in turn; (status, body) of each."""
    answers = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for path in paths:
            conn.request("GET", path)
            response = conn.getresponse()
            answers.append((response.status, response.read().decode(errors="replace")[:300]))
    finally:
        conn.close()
    return answers


def drive(port: int, path: str = "/item/{}/") -> list[tuple[int, str]]:
    """CLIENTS keep-alive clients at once, REQUESTS_PER_CLIENT requests each (``path``
    formatted with the request's number)."""
    start = threading.Barrier(CLIENTS)

    def one(number: int) -> list[tuple[int, str]]:
        start.wait(30)  # all connect together: 256 requests at once
        first = number * REQUESTS_PER_CLIENT
        return client(port, [path.format(first + i) for i in range(REQUESTS_PER_CLIENT)])

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return [answer for answers in pool.map(one, range(CLIENTS)) for answer in answers]


def wait_for_connections(application: str, most: int, timeout: float = 10.0) -> int:
    """Connections still open once they have fallen to ``most`` or fewer (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        count = database_connections(application)
        if count <= most or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def room_for_connections(need: int = APP_THREADS + 2, timeout: float = 60.0) -> None:
    """Wait until PostgreSQL (100 connections for the whole machine) has ``need`` free.

    Its limit is shared with whatever else runs: a load test beside another one would
    fail with "too many clients", which is the machine's, not the server's, doing.
    """
    import psycopg2

    deadline = time.monotonic() + timeout
    with contextlib.closing(psycopg2.connect(DSN)) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        while True:
            cur.execute("SELECT current_setting('max_connections')::int - count(*) "
                        "FROM pg_stat_activity WHERE backend_type = 'client backend'")
            free = cur.fetchone()[0]
            if free >= need:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL has {free} free connections, this test needs {need}: "
                            "something else holds them (run load tests one at a time)")
            time.sleep(0.5)


_migrated: set[str] = set()


def django_tables(driver: str) -> None:
    """The test project's tables in the driver's ``test`` database (made once per run)."""
    if driver == "mysqlclient":
        need_service("MariaDB", 3306)
        try:
            import MySQLdb  # noqa: F401
        except ImportError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"mysqlclient is not installed ({exc}); CI=true requires it")
            pytest.skip(f"mysqlclient is not installed ({exc}): make test builds it")
    else:
        need_service("PostgreSQL", 5432)
    if driver in _migrated:
        return
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.django_site.settings", DJANGO_DB=driver)
    done = subprocess.run([sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each request inserts a visit and counts them: earlier runs' rows only slow it down.
    mariadb = driver == "mysqlclient"
    conn, _, _ = _counter(MARIADB if mariadb else "")
    with contextlib.closing(conn):  # MariaDB's counting connection names no database
        conn.cursor().execute(f"DELETE FROM {'test.' if mariadb else ''}greenpool_shop_visit")
    _migrated.add(driver)


DJANGO_CASES = {
    # (driver, CONN_MAX_AGE, the most connections left open once the load is over)
    "psycopg2-conn-max-age-0": ("psycopg2", 0, 0),
    "psycopg2-conn-max-age-60": ("psycopg2", 60, APP_THREADS),
    "psycopg3-django-pool": ("psycopg", 0, APP_THREADS),
    "mysqlclient-conn-max-age-60": ("mysqlclient", 60, APP_THREADS),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(DJANGO_CASES))
def test_django_with_per_thread_connections_answers_256_clients_within_bounded_connections(
    entry_point, case
):
    driver, max_age, left_open = DJANGO_CASES[case]
    django_tables(driver)
    if driver == "mysqlclient":  # counted by user and database: none may be left from before
        left = wait_for_connections(MARIADB, 0, timeout=30)
        assert left == 0, f"{left} MariaDB connections to test are open before the server starts"
    else:
        room_for_connections()
    application = MARIADB if driver == "mysqlclient" else f"greenpool-test-{uuid.uuid4().hex[:12]}"
    args, banner = ENTRY_POINTS[entry_point]
    env = {"DJANGO_SETTINGS_MODULE": "tests.django_site.settings", "DJANGO_DB": driver,
           "DJANGO_CONN_MAX_AGE": str(max_age), "DJANGO_DB_APPLICATION": application}
    with ServerProcess(python_cmd(*args, "tests.django_site.wsgi:application"), cwd=ROOT,
                       env=env) as server:
        port = int(server.wait_for(banner, timeout=30).group(1))
        wait_until_answers(port, "/setup/")
        with PeakConnections(application) as peak:
            answers = drive(port)
        failed = [answer for answer in answers if answer[0] != 200]
        assert not failed, f"{len(failed)} of {len(answers)} failed, first: {failed[0]}"
        assert all(json.loads(body)["items"] == 50 for _, body in answers)
        assert peak.peak <= APP_THREADS, f"{peak.peak} connections at once"
        assert wait_for_connections(application, left_open) <= left_open
        code = server.stop(timeout=20)
        output = server.output
    assert code == 0, output
    assert not re.search(r"Traceback|Error", output), output
    assert wait_for_connections(application, 0) == 0  # the server's exit closed them all


@pytest.fixture
def slow_upstream():
    """``examples/legacy_upstream.py`` answering in 100 ms; yields its URL."""
    cmd = python_cmd(str(ROOT / "examples" / "legacy_upstream.py"), "--port", "0",
                     "--delay-ms", "100")
    with ServerProcess(cmd) as proc:
        yield proc.wait_for(r"serving (http://\S+)").group(1)
        assert proc.stop() == 0, proc.output


@pytest.mark.timeout(120)
@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_flask_app_with_a_default_sized_pool_answers_256_clients_behind_a_slow_upstream(
    entry_point, slow_upstream
):
    """examples/legacy_flask_app.py unchanged: ThreadedConnectionPool(1, 64), default Session."""
    need_service("PostgreSQL", 5432)
    room_for_connections()
    application = f"greenpool-test-{uuid.uuid4().hex[:12]}"
    args, banner = ENTRY_POINTS[entry_point]
    env = {"LEGACY_UPSTREAM": slow_upstream,
           "LEGACY_DSN": f"{DSN} application_name={application}"}
    with ServerProcess(python_cmd(*args, "examples.legacy_flask_app:app"), cwd=ROOT,
                       env=env) as server:
        port = int(server.wait_for(banner, timeout=30).group(1))
        wait_until_answers(port, "/stats")
        with PeakConnections(application) as peak:
            answers = drive(port, "/?item={}")
        failed = [answer for answer in answers if answer[0] != 200]
        assert not failed, f"{len(failed)} of {len(answers)} failed, first: {failed[0]}"
        assert all(json.loads(body)["db"] is True for _, body in answers)
        assert peak.peak <= 64, f"{peak.peak} connections at once"
        status, stats = client(port, ["/stats?drain=1"])[0]
        assert status == 200
        stats = json.loads(stats)
        assert stats["queued"] == stats["consumed"] >= len(answers), stats
        code = server.stop(timeout=20)
        output = server.output
    assert code == 0, output
    assert not re.search(r"Traceback|PoolError", output), output
