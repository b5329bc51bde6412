"""Module-level API: pinning of greenpool.spawn, the default pool, blocking(), run()."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import gevent
import pytest

import greenpool
from greenpool._native import get_ident

from .helpers import run_python


def test_current_hub_and_pool_are_none_outside_and_set_inside(pool):
    assert greenpool.current_hub() is None and greenpool.current_pool() is None
    where = pool.spawn_on(2, lambda: (greenpool.current_hub(), greenpool.current_pool()))
    hub, owner = where.result(5)
    assert hub is pool.hubs[2] and owner is pool


def test_spawn_inside_a_pool_greenlet_stays_on_the_same_native_thread(pool):
    def nested(depth):
        me = get_ident()
        if depth == 0:
            return [me]
        children = [greenpool.spawn(nested, depth - 1) for _ in range(2)]
        return [me] + [i for c in children for i in c.result(5)]

    for index in range(pool.size):
        idents = pool.spawn_on(index, nested, 3).result(10)
        assert set(idents) == {pool.hubs[index].thread_ident}
        assert len(idents) == 15


def test_spawn_outside_any_pool_uses_the_default_pool_round_robin():
    default = greenpool.default_pool()
    hubs = [greenpool.spawn(lambda: greenpool.current_hub()).result(5) for _ in range(default.size)]
    assert {h.index for h in hubs} == set(range(default.size))
    assert all(h.pool is default for h in hubs)


def test_blocking_keeps_the_hub_serving_while_the_call_blocks(make_pool):
    p = make_pool(1)
    release = threading.Event()
    slow = p.spawn(greenpool.blocking, release.wait, 10)
    # the same (only) hub still runs other tasks while the blocking call waits
    assert p.spawn(lambda: "served").result(5) == "served"
    release.set()
    assert slow.result(5) is True


def test_blocking_outside_a_pool_just_calls():
    assert greenpool.blocking(lambda a, b=0: a + b, 1, b=2) == 3


def test_blocking_leaves_no_gevent_hub_on_its_helper_thread():
    """A hub left on a helper thread would hold patched os.close()s forever (see api.py).

    Checked on a thread of our own, so the check runs on the very thread the
    call ran on (gevent's threadpool may hand consecutive calls to different
    workers); test_legacy runs the end-to-end case (subprocess.run, repeated).
    """
    from gevent._hub_local import get_hub_if_exists

    from greenpool.api import _call_on_helper_thread

    seen = {}

    def worker():
        seen["made"] = _call_on_helper_thread(lambda: gevent.get_hub() is not None, (), {})[1]
        seen["left"] = get_hub_if_exists()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"made": True, "left": None}


def test_blocking_clears_gevent_workers_note_of_the_hub_it_destroys():
    """gevent's worker remembers a hub left by an earlier task; after-fork cleanup destroys it."""
    from gevent.threadpool import ThreadPool

    from greenpool.api import _call_on_helper_thread

    tp = ThreadPool(1)
    try:
        tp.apply(gevent.get_hub)  # an earlier, plain task leaves a hub on the worker
        tp.apply(lambda: None)  # the worker notes it before waiting for the next task
        (worker,) = tp._worker_greenlets
        assert worker._hub_of_worker is not None
        tp.apply(_call_on_helper_thread, (lambda: None, (), {}))
        assert worker._hub_of_worker is None
    finally:
        tp.kill()


def test_blocking_raises_the_calls_exception_in_the_caller_and_prints_nothing():
    """gevent's threadpool prints every exception a task raises; blocking() must not.

    An app that handles the error (a unique violation from an offloaded
    psycopg2 query, say) would otherwise get a traceback on stderr each time.
    """
    proc = run_python(
        """
        import greenpool

        def fails():
            raise KeyError("missing")

        def call():
            try:
                greenpool.blocking(fails)
            except KeyError as exc:
                names, tb = [], exc.__traceback__
                while tb is not None:
                    names.append(tb.tb_frame.f_code.co_name)
                    tb = tb.tb_next
                return repr(exc), names[-1] == "fails"  # the helper thread's frames kept
            return "no exception", False

        with greenpool.Pool(1) as pool:
            print(pool.spawn(call).result(10))
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "(\"KeyError('missing')\", True)"
    assert proc.stderr == ""


def test_blocking_raises_base_exceptions_in_the_caller_too_and_runs_in_place_on_the_loop():
    proc = run_python(
        """
        import gevent, greenpool, threading

        def exits():
            raise SystemExit(3)

        def call():
            try:
                greenpool.blocking(exits)
            except SystemExit as exc:
                caught = exc.code
            where = []
            def on_loop(_):  # a hub loop callback may not wait: blocking() calls in place
                where.append(greenpool.blocking(threading.get_native_id))
            g = gevent.spawn(lambda: None)
            g.rawlink(on_loop)
            g.join()
            gevent.sleep(0.05)
            return caught, where == [threading.get_native_id()]

        with greenpool.Pool(1) as pool:
            print(pool.spawn(call).result(10))
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "(3, True)"
    assert proc.stderr == ""


def test_blocking_calls_overlap_on_one_hub(make_pool):
    p = make_pool(1)
    barrier = threading.Barrier(3, timeout=10)
    futures = [p.spawn(greenpool.blocking, barrier.wait) for _ in range(3)]
    assert sorted(f.result(10) for f in futures) == [0, 1, 2]


def test_an_unpatched_blocking_call_on_one_hub_leaves_the_others_serving(make_pool):
    p = make_pool(2)
    release = threading.Event()
    stuck = p.spawn_on(0, release.wait, 10)  # blocks hub 0's thread outright
    assert p.spawn_on(1, lambda: "hub 1 serves").result(5) == "hub 1 serves"
    release.set()
    assert stuck.result(5) is True


# -- run() -------------------------------------------------------------------


def test_run_returns_mains_result_after_everything_it_spawned_finished():
    done = []

    def grandchild(i):
        gevent.sleep(0.005)
        done.append(i)

    def child(i):
        greenpool.spawn(grandchild, i)

    def main():
        for i in range(8):
            greenpool.spawn(child, i)
        return "main done"

    assert greenpool.run(main, size=2) == "main done"
    assert sorted(done) == list(range(8))


def test_run_reraises_mains_exception():
    def main():
        raise LookupError("bad config")

    with pytest.raises(LookupError, match="bad config"):
        greenpool.run(main, size=1)


def test_run_cancels_the_children_of_a_failed_main_and_reraises():
    cleaned = []

    def server_loop():
        try:
            gevent.sleep(60)
        finally:
            cleaned.append(1)

    def main():
        for _ in range(3):
            greenpool.spawn(server_loop)
        gevent.sleep(0.01)
        raise OSError("address already in use")

    with pytest.raises(OSError, match="already in use"):
        greenpool.run(main, size=2)
    assert cleaned == [1, 1, 1]


def test_run_toplevel_spawns_go_round_robin_and_their_children_stay_pinned():
    def child():
        return greenpool.current_hub().index

    def task():
        mine = greenpool.current_hub().index
        kids = [greenpool.spawn(child) for _ in range(3)]
        return mine, [k.result() for k in kids]

    def main():
        futures = [greenpool.spawn(task) for _ in range(8)]
        return [f.result() for f in futures]

    results = greenpool.run(main, size=4)
    assert sorted(hub for hub, _ in results) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(kids == [hub] * 3 for hub, kids in results)


def test_run_each_hub_runs_main_once_per_hub():
    assert greenpool.run(lambda: greenpool.current_hub().index, size=3, each_hub=True) == [0, 1, 2]


def test_run_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        greenpool.run(42)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_stops_cleanly_on_signals(signum):
    code = """
        import os, sys, gevent, greenpool
        def forever():
            os.write(1, b"started\\n")
            try:
                gevent.sleep(60)
            finally:
                os.write(1, b"cleaned up\\n")
        def main():
            for _ in range(4):
                greenpool.spawn(forever)
            gevent.sleep(60)
        print("run returned", greenpool.run(main, size=2), flush=True)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert [proc.stdout.readline().strip() for _ in range(4)] == ["started"] * 4
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.count("cleaned up") == 4
    assert "run returned None" in out
    assert "Traceback" not in err


def test_everything_works_after_monkey_patching_with_native_hub_threads():
    result = run_python("""
        from gevent import monkey; monkey.patch_all()
        import threading, socket, greenpool
        from greenpool._native import get_ident
        pool = greenpool.Pool(3)
        idents = [f.result(10) for f in pool.broadcast(get_ident)]
        assert len(set(idents)) == 3 and get_ident() not in idents, idents
        lock = threading.Lock()   # a gevent lock after patching
        def task(i):
            child = greenpool.spawn(lambda: get_ident())
            return child.result() == get_ident()
        assert all(f.result(10) for f in [pool.spawn(task, i) for i in range(30)])
        assert list(pool.map(lambda x: x + 1, range(5))) == [1, 2, 3, 4, 5]
        assert pool.join(10)
        pool.shutdown()
        assert greenpool.run(lambda: greenpool.spawn(lambda: 42).result(), size=2) == 42
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fork_with_a_live_pool_gives_the_child_a_clear_error_and_a_working_default():
    result = run_python("""
        import os, greenpool, gevent
        pool = greenpool.Pool(2)
        assert pool.spawn(lambda: 1).result(5) == 1
        slow = pool.spawn(gevent.sleep, 30)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                pool.spawn(lambda: 1)
                code = 10
            except greenpool.BrokenPool as exc:
                if "fork" not in str(exc):
                    code = 11
            try:
                slow.result(5)
                code = 12
            except greenpool.BrokenPool:
                pass
            if greenpool.spawn(lambda: 2).result(5) != 2:
                code = 13
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        slow.cancel()
        pool.shutdown()
        print("child exit", os.waitstatus_to_exitcode(status))
    """, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child exit 0"


def test_threads_and_pools_are_cheap_to_start_and_stop():
    t0 = time.perf_counter()
    for _ in range(10):
        with greenpool.Pool(2) as p:
            p.spawn(lambda: None).result(5)
    assert time.perf_counter() - t0 < 10


def test_run_stops_on_sigterm_even_with_an_idle_client_holding_a_stray_greenlet():
    code = """
        import os, socket, gevent, greenpool
        from gevent import socket as gsocket

        def main():
            listener = gsocket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            def handle(conn):          # like a patched "thread": not a greenpool task
                try:
                    conn.recv(1)       # the client never sends
                finally:
                    os.write(1, b"handler cleaned up\\n")
            def accept():
                conn, _ = listener.accept()
                gevent.spawn(handle, conn)
            gevent.spawn(accept)
            client = socket.create_connection(listener.getsockname())
            os.write(1, b"ready\\n")
            greenpool.blocking(gevent.monkey.get_original("time", "sleep"), 0.0)
            return client

        print("run returned", greenpool.run(main, size=1), flush=True)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "handler cleaned up" in out and "Traceback" not in err
