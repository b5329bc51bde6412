"""psycopg2 under greenpool.monkey: a query does not hold its hub (offloaded or green)."""

from __future__ import annotations

import json
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
greenpool.monkey.patch_all({patch})
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


def run(patch: str) -> str:
    proc = run_python(textwrap.dedent(SCRIPT.format(patch=patch)), timeout=45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_a_query_waiting_on_postgresql_lets_its_hubs_other_greenlets_run():
    need_service("PostgreSQL", 5432)
    assert run(patch="psycopg2=True") == "got the lock"


def test_by_default_a_waiting_query_is_offloaded_and_its_hub_keeps_serving():
    need_service("PostgreSQL", 5432)
    assert run(patch="") == "got the lock"
    assert run(patch="psycopg2='offload'") == "got the lock"


def test_without_patch_psycopg2_a_query_blocks_its_hubs_thread():
    """The control: left blocking, the waiting query holds the hub until its timeout."""
    need_service("PostgreSQL", 5432)
    assert run(patch="psycopg2=False") == "QueryCanceled"
    assert run(patch="psycopg2='blocking'") == "QueryCanceled"


def test_the_environment_chooses_the_mode_for_servers_that_patch_for_you():
    need_service("PostgreSQL", 5432)
    prefix = "import os; os.environ['GREENPOOL_PSYCOPG2'] = '{}'\n"
    for setting, expected in (("blocking", "QueryCanceled"), ("green", "got the lock"),
                              ("offload", "got the lock")):
        code = prefix.format(setting) + textwrap.dedent(SCRIPT.format(patch=""))
        proc = run_python(code, timeout=45)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == expected, setting


def test_a_bad_psycopg2_setting_in_the_environment_is_a_clear_error():
    proc = run_python(
        """
        import os
        os.environ["GREENPOOL_PSYCOPG2"] = "turbo"
        import greenpool.monkey
        try:
            greenpool.monkey.patch_all()
        except ValueError as exc:
            print("refused:", exc)
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "refused: GREENPOOL_PSYCOPG2='turbo': use offload" in proc.stdout


def test_a_bad_psycopg2_mode_is_refused_before_anything_is_patched():
    proc = run_python(
        """
        import greenpool.monkey
        from gevent import monkey
        try:
            greenpool.monkey.patch_all(psycopg2="fast")
        except ValueError as exc:
            print("refused:", exc)
        print("patched:", monkey.is_module_patched("socket"), greenpool.monkey.is_patched())
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "refused: patch_all(psycopg2='fast'): use 'offload'" in proc.stdout
    assert "patched: False False" in proc.stdout


OFFLOAD_SCRIPT = """
import io, json, threading
import greenpool.monkey
greenpool.monkey.patch_all()
import psycopg2, greenpool
from psycopg2 import extensions, extras

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

import contextvars
from psycopg2.extensions import AsIs, register_adapter

ran = []  # the thread each adapted Marker ran on: adapters run inside the C execute
tenant = contextvars.ContextVar("tenant", default="<unset>")

class Marker:
    pass

def adapt_marker(marker):
    ran.append((threading.get_native_id(), tenant.get()))
    return AsIs("1")

register_adapter(Marker, adapt_marker)

class Recording(extensions.cursor):
    # An app's own cursor class: its Python execute runs first, on the hub.
    def execute(self, query, vars=None):
        self.where = threading.get_native_id()
        return super().execute(query, vars)

def scenario():
    here = threading.get_native_id()
    out = {}
    conn = psycopg2.connect(DSN, cursor_factory=Recording)
    cur = conn.cursor()
    tenant.set("acme")
    cur.execute("SELECT %s", (Marker(),))
    out["value"] = cur.fetchone()[0]
    # The C execute ran on another thread, in the caller's context; the app's own
    # Python execute (Recording's) on the hub.
    out["offloaded"] = ran[-1] == (ran[-1][0], "acme") and ran[-1][0] != here
    out["own_execute_here"] = cur.where == here
    out["isinstance"] = isinstance(cur, Recording) and isinstance(conn, extensions.connection)
    out["names"] = [type(cur).__name__, type(conn).__name__]
    d = conn.cursor(cursor_factory=extras.RealDictCursor)
    d.execute("SELECT 1 AS x")
    out["dict"] = d.fetchone()
    p = conn.cursor(None, extras.NamedTupleCursor)
    p.execute("SELECT 2 AS y")
    out["namedtuple"] = p.fetchone().y
    with conn.cursor("server_side") as named:
        named.execute("SELECT generate_series(1, 10)")
        out["named"] = [named.fetchone()[0], len(named.fetchmany(3)), len(named.fetchall())]
    conn.commit()
    c = conn.cursor()
    c.execute("CREATE TEMP TABLE t (v int)")
    c.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,), (3,)])
    c.callproc("abs", (-3,))
    out["callproc"] = c.fetchone()[0]
    c.execute("SELECT sum(v) FROM t")
    out["executemany"] = c.fetchone()[0]
    conn.rollback()
    buf = io.StringIO()
    conn.cursor().copy_expert("COPY (SELECT 7) TO STDOUT", buf)  # COPY still works
    out["copy"] = buf.getvalue()
    try:
        conn.cursor().execute("SELEC 1")
    except psycopg2.errors.SyntaxError as exc:
        out["error"] = exc.pgcode
    conn.rollback()
    again = conn.cursor()
    again.execute("SELECT 3")
    out["after_error"] = again.fetchone()[0]
    logged = psycopg2.connect(DSN, connection_factory=extras.LoggingConnection)
    logged.initialize(io.StringIO())
    lc = logged.cursor()
    lc.execute("SELECT 4")
    out["logging"] = [isinstance(logged, extras.LoggingConnection), lc.fetchone()[0]]
    dconn = psycopg2.connect(DSN, connection_factory=extras.DictConnection)
    dc = dconn.cursor()  # DictConnection's own default factory, offloading
    dc.execute("SELECT 5 AS z, %s AS m", (Marker(),))
    out["dictconnection"] = [type(dc).__name__, dc.fetchone()["z"], ran[-1][0] != here]
    conn.close()
    logged.close()
    dconn.close()
    return out

with greenpool.Pool(2) as pool:
    on_hub = pool.spawn_on(1, scenario).result(timeout=30)
conn = psycopg2.connect(DSN)
conn.cursor().execute("SELECT %s", (Marker(),))
conn.close()
print(json.dumps({"hub": on_hub, "main_in_place": ran[-1][0] == threading.get_native_id()}))
"""


def test_offloading_keeps_psycopg2_whole_factories_errors_copy_and_named_cursors():
    need_service("PostgreSQL", 5432)
    proc = run_python(OFFLOAD_SCRIPT, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # the handled SQL error printed nothing (see blocking())
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    hub = result["hub"]
    assert hub["offloaded"] is True  # ran on another thread, with the caller's contextvars
    assert hub["own_execute_here"] is True
    assert result["main_in_place"] is True  # outside a pool hub: in place, as before
    assert hub["value"] == 1 and hub["isinstance"] is True
    assert hub["names"] == ["Recording", "connection"]
    assert hub["dict"] == {"x": 1}
    assert hub["namedtuple"] == 2
    assert hub["named"] == [1, 3, 6]
    assert hub["callproc"] == 3 and hub["executemany"] == 6
    assert hub["copy"] == "7\n"
    assert hub["error"] == "42601"
    assert hub["after_error"] == 3
    assert hub["logging"] == [True, 4]
    assert hub["dictconnection"] == ["DictCursor", 5, True]


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


OFFLOAD_EDGES = """
import gc, json, time, weakref
import greenpool.monkey
greenpool.monkey.patch_all()
import gevent, psycopg2, greenpool
from psycopg2 import extensions

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

def hot_row():
    # 11 requests on ONE hub lock one row in turn: SELECT ... FOR UPDATE, a
    # cooperative wait, UPDATE, COMMIT. With a shared, capped helper pool (10
    # threads) the ten waiters took every thread and the holder's UPDATE queued
    # behind them: a deadlock. One thread per connection never does that.
    c = psycopg2.connect(DSN)
    c.autocommit = True
    c.cursor().execute("DROP TABLE IF EXISTS gp_hot;"
                       "CREATE TABLE gp_hot (id int primary key, n int);"
                       "INSERT INTO gp_hot VALUES (1, 0)")
    conns = [psycopg2.connect(DSN, options="-c statement_timeout=10000") for _ in range(11)]
    def request(conn):
        cur = conn.cursor()
        cur.execute("SELECT n FROM gp_hot WHERE id = 1 FOR UPDATE")
        gevent.sleep(0.01)
        cur.execute("UPDATE gp_hot SET n = n + 1 WHERE id = 1")
        conn.commit()
    jobs = [gevent.spawn(request, conn) for conn in conns]
    gevent.joinall(jobs, timeout=30)
    cur = c.cursor()
    cur.execute("SELECT n FROM gp_hot WHERE id = 1")
    n = cur.fetchone()[0]
    cur.execute("DROP TABLE gp_hot")
    for conn in conns + [c]:
        conn.close()
    return {"updated": n, "errors": [repr(j.exception) for j in jobs if j.exception]}

def timed_out():
    # A Timeout during an offloaded query cancels it: the connection is free at
    # once (a rollback, a close) and the hub never stalls waiting for it.
    conn = psycopg2.connect(DSN)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(time.monotonic()) or gevent.sleep(0.02)
                                   for _ in range(100)])
    t0 = time.monotonic()
    try:
        with gevent.Timeout(0.2):
            conn.cursor().execute("SELECT pg_sleep(20)")
        outcome = "not interrupted"
    except gevent.Timeout:
        outcome = "timed out"
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 1")
    reused = cur.fetchone()[0]
    took = time.monotonic() - t0
    gevent.sleep(0.1)
    ticker.kill()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    conn.close()
    return {"outcome": outcome, "reused": reused, "took": took, "worst_gap": max(gaps)}

def from_the_hubs_loop():
    # A callback of the hub's own loop (a rawlink) may not wait: it runs in place.
    conn = psycopg2.connect(DSN)
    out = []
    def cleanup(_=None):
        conn.rollback()
        out.append("rollback ok")
    g = gevent.spawn(lambda: None)
    g.rawlink(cleanup)
    g.join()
    gevent.sleep(0.05)
    conn.close()
    return out

def factories_are_not_kept():
    conn = psycopg2.connect(DSN)
    refs = []
    for _ in range(20):
        factory = type("PerRequestCursor", (extensions.cursor,), {})
        refs.append(weakref.ref(factory))
        cur = conn.cursor(cursor_factory=factory)
        cur.execute("SELECT 1")
        cur.close()
    del factory, cur
    conn.close()
    gc.collect()
    return sum(ref() is not None for ref in refs)

with greenpool.Pool(2) as pool:
    result = {name: pool.spawn_on(1, fn).result(60) for name, fn in (
        ("hot_row", hot_row), ("timed_out", timed_out), ("loop", from_the_hubs_loop),
        ("alive_factories", factories_are_not_kept))}
print(json.dumps(result))
"""


@pytest.mark.timeout(120)
def test_offloading_never_deadlocks_cancels_on_timeout_and_works_from_the_loop():
    need_service("PostgreSQL", 5432)
    proc = run_python(OFFLOAD_EDGES, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hot_row"] == {"updated": 11, "errors": []}
    timed = result["timed_out"]
    assert timed["outcome"] == "timed out" and timed["reused"] == 1
    assert timed["took"] < 5  # the query was cancelled, not waited out (20 s)
    assert timed["worst_gap"] < 2  # the hub kept serving throughout
    assert result["loop"] == ["rollback ok"]
    assert result["alive_factories"] == 0


# -- psycopg2.pool: an exhausted ThreadedConnectionPool waits instead of raising ---------------

POOL_SCRIPT = """
import os, sys, threading
import greenpool.monkey
greenpool.monkey.patch_all(psycopg2={mode!r})
import psycopg2
from psycopg2.pool import PoolError, ThreadedConnectionPool

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
pool = ThreadedConnectionPool(1, 2, DSN)  # sized for two threads
outcomes = []
start = threading.Barrier(8)

def worker():
    start.wait()
    try:
        conn = pool.getconn()
    except PoolError as exc:
        outcomes.append("PoolError")
        return
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.02)")
        outcomes.append("ok")
    finally:
        pool.putconn(conn)

threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join(30)
pool.closeall()
print(sorted(outcomes))
"""


@pytest.mark.parametrize("mode", ["offload", "green"])
def test_an_exhausted_threaded_pool_makes_callers_wait_for_a_connection(mode):
    need_service("PostgreSQL", 5432)
    proc = run_python(textwrap.dedent(POOL_SCRIPT.format(mode=mode)), timeout=45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == str(["ok"] * 8)


def test_left_blocking_psycopg2s_pool_is_left_alone_too():
    out = run_python("""
        import greenpool.monkey
        from psycopg2.pool import ThreadedConnectionPool
        before = ThreadedConnectionPool.getconn
        greenpool.monkey.patch_all(psycopg2="blocking")
        print(ThreadedConnectionPool.getconn is before)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_caller_that_waits_past_the_pool_timeout_gets_pool_error_naming_it():
    need_service("PostgreSQL", 5432)
    out = run_python(textwrap.dedent("""
        import os
        os.environ["GREENPOOL_DB_POOL_TIMEOUT"] = "0.2"
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import greenpool
        from psycopg2.pool import PoolError, ThreadedConnectionPool

        pool = ThreadedConnectionPool(1, 1, "host=127.0.0.1 port=5432 user=postgres dbname=test")

        def scenario():
            held = pool.getconn()
            try:
                pool.getconn()
            except PoolError as exc:
                print(exc)
            finally:
                pool.putconn(held)
            again = pool.getconn()  # the pool still works
            pool.putconn(again)
            print("again ok")

        with greenpool.Pool(1) as p:
            p.spawn(scenario).result(20)
        pool.closeall()
        """), timeout=45)
    assert out.returncode == 0, out.stdout + out.stderr
    message, again = out.stdout.strip().splitlines()
    assert "GREENPOOL_DB_POOL_TIMEOUT" in message and "0.2 s" in message
    assert again == "again ok"


def test_closing_the_pool_wakes_its_waiting_callers_with_pool_error():
    need_service("PostgreSQL", 5432)
    out = run_python(textwrap.dedent("""
        import threading, time
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import greenpool
        from psycopg2.pool import PoolError, ThreadedConnectionPool

        pool = ThreadedConnectionPool(1, 1, "host=127.0.0.1 port=5432 user=postgres dbname=test")
        held = pool.getconn()
        waiting = threading.Event()
        result = []

        def waiter():
            waiting.set()
            try:
                pool.getconn()
                result.append("got one")
            except PoolError as exc:
                result.append(str(exc))

        t = threading.Thread(target=waiter)
        t.start()
        waiting.wait(10)
        while "_greenpool_room" not in pool.__dict__:  # made under the lock, before waiting
            time.sleep(0.001)
        with pool._lock:  # taken: the waiter released it inside its wait
            pass
        pool.closeall()
        t.join(10)
        print(result)
        """), timeout=45)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "closed" in out.stdout


def test_a_bad_pool_timeout_is_refused_before_anything_is_patched():
    out = run_python("""
        import os
        os.environ["GREENPOOL_DB_POOL_TIMEOUT"] = "soon"
        import greenpool.monkey
        from gevent import monkey
        try:
            greenpool.monkey.patch_all()
        except ValueError as exc:
            print(exc)
        print(monkey.is_module_patched("socket"))
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["GREENPOOL_DB_POOL_TIMEOUT='soon': expected seconds > 0",
                                       "False"]


def test_the_pools_lock_is_not_held_across_a_connect_or_a_rollback():
    """psycopg2 connects and rolls back under the pool's lock: every hub waited out each
    round trip (a shared pool ran at 0.7x its own connections)."""
    need_service("PostgreSQL", 5432)
    out = run_python(textwrap.dedent("""
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import greenpool
        from psycopg2 import extensions
        from psycopg2.pool import ThreadedConnectionPool

        DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
        pool = ThreadedConnectionPool(0, 2, DSN)
        seen = {}
        connect = pool._connect

        def watched_connect(key=None):
            seen["connect under lock"] = pool._lock.locked()
            return connect(key)

        pool._connect = watched_connect

        def scenario():
            conn = pool.getconn()
            conn.cursor().execute("SELECT 1")  # a transaction left open, as legacy code does
            rollback = conn.rollback

            def watched_rollback():
                seen["rollback under lock"] = pool._lock.locked()
                return rollback()

            conn.rollback = watched_rollback
            pool.minconn = 1  # kept, so rolled back (not closed)
            pool.putconn(conn)
            again = pool.getconn()
            seen["returned idle"] = (
                again.info.transaction_status == extensions.TRANSACTION_STATUS_IDLE)
            pool.putconn(again)

        with greenpool.Pool(2) as p:
            p.spawn(scenario).result(20)
        pool.closeall()
        print(sorted(seen.items()))
        """), timeout=45)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == str([("connect under lock", False), ("returned idle", True),
                                      ("rollback under lock", False)])


def test_a_failed_connect_gives_its_slot_back():
    out = run_python("""
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import psycopg2
        from psycopg2.pool import ThreadedConnectionPool

        pool = ThreadedConnectionPool(0, 1, "host=127.0.0.1 port=1 connect_timeout=2")
        for _ in range(2):  # the second try connects again: the first one's slot is free
            try:
                pool.getconn()
            except psycopg2.OperationalError:
                print("OperationalError", len(pool._used))
        """, timeout=45)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[:2] == ["OperationalError 0", "OperationalError 0"]


def test_a_closed_connections_thread_serves_the_next_connection():
    """Connecting per request (Django's default CONN_MAX_AGE=0) starts no thread per request."""
    need_service("PostgreSQL", 5432)
    out = run_python(textwrap.dedent("""
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import gevent, greenpool, psycopg2
        from greenpool.monkey import dbapi

        started = []
        start = dbapi.start_new_thread
        dbapi.start_new_thread = lambda fn, args: (started.append(fn), start(fn, args))[1]

        def requests():
            answers = []
            for i in range(5):
                conn = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=test")
                with conn.cursor() as cur:
                    cur.execute("SELECT %s", (i,))
                    answers.append(cur.fetchone()[0])
                conn.close()
                while not dbapi._CARRIERS._parked:  # its thread parks once the close is done
                    gevent.sleep(0.001)
            return answers

        with greenpool.Pool(1) as pool:
            print(pool.spawn(requests).result(30), len(started))
        """), timeout=45)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "[0, 1, 2, 3, 4] 1"


def test_patch_all_takes_the_pool_timeout_and_refuses_a_bad_one():
    out = run_python("""
        import greenpool.monkey
        from greenpool.monkey import psycopg2 as patch
        from gevent import monkey
        for bad in (0, -1, "30", True):
            try:
                greenpool.monkey.patch_all(db_pool_timeout=bad)
            except ValueError as exc:
                print("refused", str(exc).split(":")[0])
        print(monkey.is_module_patched("socket"))
        greenpool.monkey.patch_all(db_pool_timeout=2.5)
        print(patch._pool_timeout)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "patch_all(db_pool_timeout=0)",
                                  "refused", "patch_all(db_pool_timeout=-1)",
                                  "refused", "patch_all(db_pool_timeout='30')",
                                  "refused", "patch_all(db_pool_timeout=True)",
                                  "False", "2.5"]
