"""mysqlclient under greenpool.monkey: a query does not hold its hub (real MariaDB)."""

from __future__ import annotations

import os
import textwrap

import pytest

from tests.helpers import need_service, run_python

pytestmark = pytest.mark.timeout(60)

PRELUDE = """
import sys, threading, time
import greenpool.monkey
greenpool.monkey.patch_all({patch})
import gevent
import greenpool
import MySQLdb
import MySQLdb.cursors

def connect(**kwargs):
    return MySQLdb.connect(host="127.0.0.1", port=3306, user="root", password="",
                           database="test", **kwargs)
"""


def need_mysqlclient() -> None:
    need_service("MariaDB", 3306)
    try:
        import MySQLdb  # noqa: F401
    except ImportError as exc:
        message = f"mysqlclient is not installed ({exc}): make test builds it with libmariadb-dev"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)


def run(body: str, patch: str = "") -> str:
    need_mysqlclient()
    code = textwrap.dedent(PRELUDE.format(patch=patch)) + textwrap.dedent(body)
    proc = run_python(code, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


# A greenlet sleeps in MariaDB for 0.3 s while another greenlet of the same
# hub ticks: offloaded, the hub runs the ticker meanwhile; blocking, it cannot.
TICKS_DURING_QUERY = """
def scenario():
    conn = connect()
    running = []
    ticks = []

    def ticker():
        while not running:
            gevent.sleep(0.001)
        while running[0]:
            ticks.append(1)
            gevent.sleep(0.005)

    def query():
        cur = conn.cursor()
        running.append(True)
        cur.execute("SELECT SLEEP(0.3)")
        running[0] = False
        return cur.fetchone()

    t = gevent.spawn(ticker)
    q = gevent.spawn(query)
    gevent.joinall([t, q], timeout=20)
    conn.close()
    return q.value, len(ticks) > 0

with greenpool.Pool(2) as pool:
    print(pool.spawn_on(1, scenario).result(timeout=30))
"""


MODES = pytest.mark.parametrize("mode", ["offload", "green"])


def test_by_default_a_query_waiting_on_mariadb_lets_its_hubs_other_greenlets_run():
    assert run(TICKS_DURING_QUERY) == "((0,), True)"


def test_green_a_query_waiting_on_mariadb_lets_its_hubs_other_greenlets_run():
    assert run(TICKS_DURING_QUERY, patch="mysqldb='green'") == "((0,), True)"


def test_left_blocking_a_query_holds_its_hubs_thread():
    assert run(TICKS_DURING_QUERY, patch="mysqldb='blocking'") == "((0,), False)"


@MODES
def test_sixteen_threads_on_four_hubs_overlap_their_queries(mode):
    """A thread-style ThreadPoolExecutor(16): its queries overlap as threads' do, not 4 at once."""
    out = run(patch=f"mysqldb={mode!r}", body="""
        from concurrent.futures import ThreadPoolExecutor
        local = threading.local()
        spans = []

        def task(i):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = connect()
            cur = conn.cursor()
            began = time.monotonic()
            cur.execute("SELECT SLEEP(0.2), %s", (i,))
            row = cur.fetchone()
            spans.append((began, time.monotonic()))
            return row[1]

        with ThreadPoolExecutor(16) as tpe:
            results = list(tpe.map(task, range(32)))
        most = max(sum(1 for b, e in spans if b <= t < e) for t, _ in spans)
        print(results == list(range(32)), most)
        """)
    ok, most = out.split()
    assert ok == "True"
    assert int(most) >= 8  # blocking, each of the 4 hubs runs one query at a time: 4


@MODES
def test_cursors_results_and_transactions_are_those_of_mysqlclient(mode):
    out = run(patch=f"mysqldb={mode!r}", body="""
        def scenario():
            conn = connect(cursorclass=MySQLdb.cursors.DictCursor, client_flag=65536)
            cur = conn.cursor()
            cur.execute("CREATE TEMPORARY TABLE gp_t (n INT, s VARCHAR(10))")
            cur.executemany("INSERT INTO gp_t VALUES (%s, %s)", [(1, "a"), (2, "b"), (3, "c")])
            conn.commit()
            cur.execute("SELECT n, s FROM gp_t ORDER BY n")
            rows = cur.fetchall()
            conn.begin()
            cur.execute("DELETE FROM gp_t")
            conn.rollback()
            cur.execute("SELECT count(*) AS c FROM gp_t")
            kept = cur.fetchone()["c"]
            ss = conn.cursor(MySQLdb.cursors.SSCursor)  # unbuffered: fetches read the socket
            ss.execute("SELECT n FROM gp_t ORDER BY n")
            streamed = [row[0] for row in ss]
            ss.close()
            cur.execute("SELECT 1 AS one; SELECT 2 AS two")  # MULTI_STATEMENTS
            first = cur.fetchall()
            cur.nextset()
            second = cur.fetchall()
            conn.ping()
            kinds = (isinstance(cur, MySQLdb.cursors.DictCursor),
                     isinstance(conn, MySQLdb.connections.Connection))
            conn.close()
            return rows, kept, streamed, first, second, kinds

        with greenpool.Pool(2) as pool:
            for line in pool.spawn(scenario).result(timeout=30):
                print(line)
        """)
    rows, kept, streamed, first, second, kinds = out.splitlines()
    assert rows == "({'n': 1, 's': 'a'}, {'n': 2, 's': 'b'}, {'n': 3, 's': 'c'})"
    assert (kept, streamed) == ("3", "[1, 2, 3]")
    assert (first, second) == ("({'one': 1},)", "({'two': 2},)")
    assert kinds == "(True, True)"


@MODES
def test_an_interrupted_query_is_waited_for_and_the_connection_serves_on(mode):
    out = run(patch=f"mysqldb={mode!r}", body="""
        def scenario():
            conn = connect()
            cur = conn.cursor()
            began = time.monotonic()
            try:
                with gevent.Timeout(0.1):
                    cur.execute("SELECT SLEEP(0.5)")
            except gevent.Timeout:
                waited = time.monotonic() - began
            cur.execute("SELECT 42")  # the interrupted query ended before the Timeout came back
            answer = cur.fetchone()[0]
            conn.close()
            return waited >= 0.4, answer

        with greenpool.Pool(1) as pool:
            print(pool.spawn(scenario).result(timeout=30))
        """)
    assert out == "(True, 42)"


@MODES
def test_an_app_cursor_class_keeps_its_own_methods_over_the_offloaded_ones(mode):
    out = run(patch=f"mysqldb={mode!r}", body="""
        class Audited(MySQLdb.cursors.Cursor):
            seen = []

            def execute(self, query, args=None):
                Audited.seen.append(greenpool.current_hub() is not None)  # runs on the hub
                return super().execute(query, args)

        def scenario():
            conn = connect()
            cur = conn.cursor(Audited)
            cur.execute("SELECT 7")
            value = cur.fetchone()[0]
            conn.close()
            return value, Audited.seen, isinstance(cur, Audited)

        with greenpool.Pool(1) as pool:
            print(pool.spawn(scenario).result(timeout=30))
        """)
    assert out == "(7, [True], True)"


def test_a_bad_mysqldb_mode_is_refused_before_anything_is_patched():
    proc = run_python("""
        import greenpool.monkey
        from gevent import monkey
        try:
            greenpool.monkey.patch_all(mysqldb="fast")
        except ValueError as exc:
            print(exc)
        print(monkey.is_module_patched("socket"))
        """)
    assert proc.returncode == 0, proc.stderr
    message, patched = proc.stdout.strip().splitlines()
    assert "patch_all(mysqldb='fast')" in message and "'blocking'" in message
    assert patched == "False"


def test_the_first_mysqldb_mode_installed_stays():
    need_mysqlclient()
    proc = run_python("""
        import greenpool.monkey
        greenpool.monkey.patch_all(mysqldb="green")
        import MySQLdb
        from greenpool.monkey import mysqldb
        green_connect = MySQLdb.connect
        print(mysqldb.install_offload(), mysqldb.offload_installed(),
              MySQLdb.connect is green_connect)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "True"]


# -- offload: whole answers read in place ------------------------------------------------------

# Captured from MariaDB 10.11 (classic EOF packets; MariaDB's metadata byte after the count).
SELECT_1_AB = (b"\x02\x00\x00\x01\x02\x01\x18\x00\x00\x02\x03def\x00\x00\x00\x011\x00\x00\x0c?"
               b"\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00\x19\x00\x00\x03\x03def\x00\x00"
               b"\x00\x02ab\x00\x00\x0c-\x00\x08\x00\x00\x00\xfd\x01\x00'\x00\x00\x05\x00\x00"
               b"\x04\xfe\x00\x00\x00\x00\x05\x00\x00\x05\x011\x02ab\x05\x00\x00\x06\xfe\x00"
               b"\x00\x00\x00")
EMPTY_RESULT = (b"\x02\x00\x00\x01\x01\x01\x18\x00\x00\x02\x03def\x00\x00\x00\x011\x00\x00\x0c?"
                b"\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00\x05\x00\x00\x03\xfe\x00\x00\x00"
                b"\x00\x05\x00\x00\x04\xfe\x00\x00\x00\x00")


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


OK = packet(1, b"\x00\x01\x00\x02\x00\x00\x00")  # 1 row affected, autocommit, no warnings
OK_MORE = packet(1, b"\x00\x01\x00\x0a\x00\x00\x00")  # ... and SERVER_MORE_RESULTS_EXISTS
ERROR = packet(1, b"\xff\x28\x04#42000You have an error in your SQL syntax")
# CLIENT_DEPRECATE_EOF (MySQL 8's clients): no EOF after the columns, an OK packet (0xFE) last.
DEPRECATED_EOF = (packet(1, b"\x01") + packet(2, b"\x03def\x00\x00\x00\x01n\x00\x0c?\x00\x01\x00"
                  b"\x00\x00\x03\x81\x00\x00\x00\x00") + packet(3, b"\x011")
                  + packet(4, b"\xfe\x00\x00\x02\x00\x00\x00"))
# MariaDB's metadata cache: the count packet says no column definitions follow.
CACHED_METADATA = packet(1, b"\x01\x00") + packet(2, b"\xfe\x00\x00\x02\x00") \
    + packet(3, b"\x011") + packet(4, b"\xfe\x00\x00\x02\x00")


@pytest.mark.parametrize("answer", [SELECT_1_AB, EMPTY_RESULT, OK, ERROR, DEPRECATED_EOF,
                                    CACHED_METADATA],
                         ids=["rows", "empty", "ok", "error", "deprecated-eof", "cached-metadata"])
def test_a_whole_answer_is_complete_and_every_part_of_it_is_not(answer):
    from greenpool.monkey.mysqldb import answer_complete

    assert answer_complete(answer)
    for cut in range(len(answer)):  # what a socket holds while the answer still arrives
        assert not answer_complete(answer[:cut]), cut


@pytest.mark.parametrize("bytes_", [
    OK_MORE,  # another result follows
    SELECT_1_AB[:-4] + b"\x0a\x00",  # the closing EOF announces another result
    SELECT_1_AB + OK,  # something after the answer
    packet(1, b"\xfbdata.csv"),  # LOAD DATA LOCAL: the driver must send the file
    b"\x17\x03\x03\x00\x20" + bytes(32),  # a TLS record
    DEPRECATED_EOF[:-17] + packet(3, b"\xfe\x00\x00\x02\x00\x00\x00"),  # empty: ambiguous
], ids=["ok-more-results", "eof-more-results", "trailing-bytes", "local-infile", "tls",
        "ambiguous-empty"])
def test_answers_that_may_not_be_read_in_place_are_not_complete(bytes_):
    from greenpool.monkey.mysqldb import answer_complete

    assert not answer_complete(bytes_)


def test_by_default_small_answers_are_read_on_the_hub_and_large_ones_on_the_connections_thread():
    out = run("""
        from greenpool.monkey import mysqldb

        def scenario():
            conn = connect()
            cur = conn.cursor()
            cur.execute("SELECT 1, 'ab'")
            small = cur.fetchall()
            cur.execute("SELECT 1 FROM DUAL WHERE 1 = 0")
            empty = cur.fetchall()
            try:
                cur.execute("SELEKT 1")
            except MySQLdb.ProgrammingError:
                failed = True
            conn.commit()
            no_thread = "_greenpool_worker" not in conn.__dict__  # no hand-off yet
            cur.execute("SELECT REPEAT('x', %s)", (mysqldb.IN_PLACE_LIMIT + 1000,))
            large = len(cur.fetchone()[0])
            thread = "_greenpool_worker" in conn.__dict__
            conn.close()
            return small, empty, failed, no_thread, large - mysqldb.IN_PLACE_LIMIT, thread

        with greenpool.Pool(1) as pool:
            print(pool.spawn(scenario).result(timeout=30))
        """)
    assert out == "(((1, 'ab'),), (), True, True, 1000, True)"


# A ticker greenlet on the query's hub records how long it went without running
# while the query ran: (rows, longest pause in seconds).
LONGEST_PAUSE = """
def scenario():
    conn = connect()
    cur = conn.cursor()
    done = []
    gaps = []

    def ticker():
        last = time.monotonic()
        while not done:
            gevent.sleep({tick})
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    t = gevent.spawn(ticker)
    gevent.sleep(0.01)
    cur.execute({sql!r})
    rows = len(cur.fetchall())
    done.append(1)
    t.join()
    conn.close()
    return rows, round(max(gaps), 3)

with greenpool.Pool(1) as pool:
    print(pool.spawn(scenario).result(timeout=30))
"""


def longest_pause(sql: str, tick: float) -> tuple[int, float]:
    rows, gap = run(LONGEST_PAUSE.format(sql=sql, tick=tick)).strip("()").split(", ")
    return int(rows), float(gap)


def test_by_default_a_result_still_streaming_in_is_read_off_the_hub():
    """Rows the server makes slowly arrive in pieces: the hub must not wait for them."""
    # 5 rows of 20 KB, 0.1 s apart: MariaDB sends each as it is made.
    rows, gap = longest_pause("SELECT SLEEP(0.1), REPEAT('x', 20000) FROM seq_1_to_5", 0.005)
    assert rows == 5
    assert gap < 0.2, gap


def test_by_default_a_large_buffered_result_is_converted_off_the_hub():
    """300,000 rows read on the connection's thread are also converted there (datetimes: slow)."""
    rows, gap = longest_pause("SELECT seq, seq * 1.5, NOW() FROM seq_1_to_300000", 0.001)
    assert rows == 300000
    assert gap < 0.25, gap  # converted on the hub: ~0.4 s without a tick


def test_by_default_several_result_sets_are_read_as_mysqlclient_reads_them():
    out = run("""
        from MySQLdb.constants import CLIENT

        def scenario():
            conn = connect(client_flag=CLIENT.MULTI_STATEMENTS)
            cur = conn.cursor()
            cur.execute("SELECT 1; SELECT 2, 3; DO 0")
            sets = [cur.fetchall()]
            while cur.nextset():
                sets.append(cur.fetchall())
            cur.execute("SELECT 4")
            sets.append(cur.fetchall())
            conn.close()
            return sets

        with greenpool.Pool(1) as pool:
            print(pool.spawn(scenario).result(timeout=30))
        """)
    assert out == "[((1,),), ((2, 3),), (), ((4,),)]"
