"""greenpool.monkey.patch_psycopg2(): psycopg2 waits on the hub, not on its thread."""

from __future__ import annotations

import textwrap

import pytest

from tests.helpers import need_service, run_python

pytestmark = pytest.mark.timeout(60)

# Greenlet A's query waits for an advisory lock that greenlet B, on the SAME
# hub, holds and releases only once A is waiting. If A's wait blocked the hub's
# thread, B could never run: the statement_timeout ends A's query with an
# error instead of a hang.
SCRIPT = """
import sys
import greenpool.monkey
greenpool.monkey.patch_all(psycopg2={patch})
import gevent
import psycopg2
import greenpool

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

def scenario():
    holder = psycopg2.connect(DSN)
    holder.autocommit = True
    waiter = psycopg2.connect(DSN, options="-c statement_timeout=3000")
    waiter.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(424242)")
    waiter_pid = waiter.get_backend_pid()

    def wait_for_lock():
        try:
            waiter.cursor().execute("SELECT pg_advisory_lock(424242)")
            waiter.cursor().execute("SELECT pg_advisory_unlock(424242)")
            return "got the lock"
        except psycopg2.Error as exc:
            return type(exc).__name__

    def release_once_waiting():
        cur = holder.cursor()
        for _ in range(500):  # at most ~5 s: unpatched, it first runs once A gave up
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (waiter_pid,)
            )
            if cur.fetchone()[0]:
                break
            gevent.sleep(0.01)
        cur.execute("SELECT pg_advisory_unlock(424242)")

    a = gevent.spawn(wait_for_lock)
    b = gevent.spawn(release_once_waiting)
    gevent.joinall([a, b], timeout=20)
    return a.value

with greenpool.Pool(2) as pool:
    print(pool.spawn_on(1, scenario).result(timeout=30))
"""


def run(patch: bool) -> str:
    proc = run_python(textwrap.dedent(SCRIPT.format(patch=patch)), timeout=45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_a_query_waiting_on_postgresql_lets_its_hubs_other_greenlets_run():
    need_service("PostgreSQL", 5432)
    assert run(patch=True) == "got the lock"


def test_without_patch_psycopg2_a_query_blocks_its_hubs_thread():
    """The control: unpatched, the waiting query holds the hub until its timeout."""
    need_service("PostgreSQL", 5432)
    assert run(patch=False) == "QueryCanceled"


def test_patch_psycopg2_is_off_by_default_because_copy_refuses_green_mode():
    need_service("PostgreSQL", 5432)
    proc = run_python(
        textwrap.dedent(
            """
            import io
            import greenpool.monkey
            greenpool.monkey.patch_all()
            import psycopg2
            from psycopg2 import extensions
            assert extensions.get_wait_callback() is None
            conn = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=test")
            buf = io.StringIO()
            conn.cursor().copy_expert("COPY (SELECT 1) TO STDOUT", buf)
            assert buf.getvalue() == "1\\n"
            greenpool.monkey.patch_psycopg2()
            assert extensions.get_wait_callback() is not None
            try:
                conn.cursor().copy_expert("COPY (SELECT 1) TO STDOUT", io.StringIO())
            except psycopg2.ProgrammingError as exc:
                print("refused:", exc)
            """
        ),
        timeout=45,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "refused:" in proc.stdout
