"""greenpool.monkey.patch_all(): the stdlib's locks, queues and what is built on them, across hubs.

Each test patches, so each runs its scenario in a child process. The stdlib's
own specification of these primitives runs in ``tests/stdlib``; these pin
what greenpool adds: which classes are installed, stdlib consumers
(``concurrent.futures``, ``logging``, ``Timer``) working between hubs, the main
thread and native threads, and the rules of patching itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import NATIVE_THREAD_SOURCE, run_python, run_python_ok

PRELUDE = """
import greenpool.monkey
greenpool.monkey.patch_all()
import _thread, threading, queue, time
import gevent
import greenpool
from gevent.monkey import get_original
"""


def check(code: str, timeout: float = 60) -> str:
    return run_python_ok(PRELUDE + NATIVE_THREAD_SOURCE + textwrap.dedent(code), timeout)


def test_patch_all_installs_cross_hub_locks_and_the_stdlibs_classes_on_them():
    out = check(
        """
        import _queue, concurrent.futures.thread as cf_thread
        from greenpool import sync
        from greenpool.monkey import queue as _stdqueue
        orig = lambda mod, name: get_original(mod, name)
        assert threading.Lock is threading._allocate_lock is sync.Lock
        assert _thread.allocate_lock is _thread.LockType is sync.Lock
        assert threading.RLock is sync.RLock and threading._CRLock is None
        # The stdlib's own pure-Python classes, built on the cross-hub lock:
        for name in ("Condition", "Semaphore", "BoundedSemaphore", "Barrier"):
            assert getattr(threading, name).__module__ == "threading", name
        assert isinstance(threading.Condition()._lock, sync.RLock)
        # Event, as gevent's patch_all makes it: gevent's, here its cross-hub subclass.
        import gevent.event
        from greenpool.monkey.gevent_primitives import Event as CrossHubEvent
        assert threading.Event is gevent.event.Event is CrossHubEvent
        assert queue.Queue is _stdqueue.Queue and issubclass(queue.Queue, orig("queue", "Queue"))
        assert issubclass(queue.LifoQueue, queue.Queue)
        assert issubclass(queue.PriorityQueue, queue.Queue)
        assert queue.SimpleQueue is _queue.SimpleQueue is _stdqueue.SimpleQueue
        assert isinstance(queue.Queue().mutex, sync.Lock)
        assert isinstance(cf_thread._global_shutdown_lock, sync.Lock)
        assert isinstance(threading._active_limbo_lock, sync.Lock)
        print("OK")
        """
    )
    assert out == "OK"


def test_patch_all_twice_is_harmless_and_patching_under_live_hubs_is_refused():
    out = check(
        """
        from greenpool import sync
        greenpool.monkey.patch_all()  # again: nothing changes
        assert threading.Lock is sync.Lock and greenpool.monkey.is_patched()
        with greenpool.Pool(2) as pool:
            greenpool.monkey.patch_all()  # already patched: still harmless with hubs running
            assert pool.spawn(lambda: 1).result(5) == 1
        print("OK")
        """
    )
    assert out == "OK"
    late = run_python(
        """
        from gevent import monkey; monkey.patch_all()
        import threading, greenpool, greenpool.monkey
        gevent_lock = threading.Lock
        with greenpool.Pool(2) as pool:
            try:
                greenpool.monkey.patch_all()
            except greenpool.PatchingError as exc:
                print("refused:", "greenpool.monkey.patch_all()" in str(exc))
            print("unchanged:", threading.Lock is gevent_lock, greenpool.monkey.is_patched())
        """
    )
    assert late.returncode == 0, late.stderr
    assert late.stdout.split() == ["refused:", "True", "unchanged:", "True", "False"]


def test_gevent_patching_alone_warns_once_when_a_multi_hub_pool_starts():
    proc = run_python(
        """
        import warnings
        from gevent import monkey; monkey.patch_all()
        import greenpool
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with greenpool.Pool(1):
                pass
            print("one hub:", len(caught))
            for _ in range(2):
                with greenpool.Pool(2):
                    pass
        print("two hubs:", len(caught))
        print(caught[0].category.__name__, "greenpool.monkey.patch_all" in str(caught[0].message))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["one hub: 0", "two hubs: 1", "RuntimeWarning True"]
    clean = check(
        """
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with greenpool.Pool(2):
                pass
        print("no warning")
        """
    )
    assert clean == "no warning"


def test_python_dash_m_greenpool_monkey_runs_a_script_patched_with_its_arguments(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, threading, greenpool.monkey
            from greenpool import sync
            patched = greenpool.monkey.is_patched()
            print(__name__, sys.argv[1:], patched, threading.Lock is sync.Lock)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.monkey", str(script), "a", "--b"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "__main__ ['a', '--b'] True True"
    (tmp_path / "appmod.py").write_text(script.read_text())
    as_module = subprocess.run(
        [sys.executable, "-m", "greenpool.monkey", "--module", "appmod", "x"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert as_module.returncode == 0, as_module.stderr
    assert as_module.stdout.strip() == "__main__ ['x'] True True"
    usage = subprocess.run(
        [sys.executable, "-m", "greenpool.monkey"], capture_output=True, text=True, timeout=30
    )
    assert usage.returncode == 2 and "usage: python -m greenpool.monkey" in usage.stdout


@pytest.mark.timeout(60)
def test_queues_events_and_semaphores_between_hubs_main_and_native_threads():
    out = check(
        """
        q, sq, lifo = queue.Queue(3), queue.SimpleQueue(), queue.LifoQueue()
        start, sem = threading.Event(), threading.Semaphore(2)
        inside, peak = [0], [0]
        def producer(i):
            assert start.wait(10)
            for j in range(25):
                q.put((i, j), timeout=10)
                with sem:
                    inside[0] += 1; peak[0] = max(peak[0], inside[0])
                    time.sleep(0)  # patched: yields to the hub's other greenlets
                    inside[0] -= 1
        def relay():
            for _ in range(8 * 25):
                sq.put(q.get(timeout=10))
        with greenpool.Pool(4) as pool:
            producers = [pool.spawn_on(i % 4, producer, i) for i in range(6)]
            producers += [native(producer, 6), native(producer, 7)]
            relay_task = pool.spawn_on(3, relay)
            start.set()  # from the main thread
            got = sorted(sq.get(timeout=10) for _ in range(8 * 25))  # the main thread waits
            for f in producers + [relay_task]:
                f.result(10)
            for i in range(3):
                pool.spawn_on(i, lifo.put, i).result(5)
            order = [lifo.get_nowait() for _ in range(3)]
        assert got == sorted((i, j) for i in range(8) for j in range(25)), len(got)
        assert peak[0] == 2 and order == [2, 1, 0], (peak, order)
        with q.mutex:  # the stdlib's attributes are there, and honoured
            q.queue.clear()
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_concurrent_futures_future_waited_on_every_hub_main_and_a_native_thread():
    out = check(
        """
        import concurrent.futures as cf
        future = cf.Future()
        with greenpool.Pool(4) as pool:
            waiters = [pool.spawn_on(i % 4, future.result, 10) for i in range(8)]
            waiters.append(native(future.result, 10))
            def wait_all():
                return cf.wait([future], timeout=10).done == {future}
            waiters.append(pool.spawn_on(1, wait_all))
            deadline = time.monotonic() + 10
            def parked():
                return len(future._condition._waiters) == 9 and future._waiters
            while not parked() and time.monotonic() < deadline:
                gevent.sleep(0.001)  # bounded: until every waiter is parked
            assert len(future._condition._waiters) == 9
            pool.spawn_on(2, future.set_result, "ready").result(5)
            results = [w.result(10) for w in waiters]
        assert future.result(1) == "ready"  # the main thread
        assert results == ["ready"] * 9 + [True], results
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_logging_to_one_handler_from_every_hub_keeps_every_record_whole(tmp_path):
    log_file = tmp_path / "app.log"
    out = check(
        f"""
        import logging
        handler = logging.FileHandler({str(log_file)!r})
        class Yielding(logging.Formatter):
            def format(self, record):
                text = super().format(record)
                time.sleep(0)  # switch while holding the handler's lock
                return text
        handler.setFormatter(Yielding("%(message)s"))
        log = logging.getLogger("app")
        log.addHandler(handler); log.setLevel(logging.INFO)
        from greenpool import sync
        assert isinstance(handler.lock, sync.RLock)
        def work(i):
            for j in range(50):
                log.info("record %d %d end", i, j)
        with greenpool.Pool(4) as pool:
            futures = [pool.spawn_on(i % 4, work, i) for i in range(12)]
            futures.append(native(work, 12))
            work(13)  # the main thread
            for f in futures:
                f.result(20)
        handler.close()
        lines = open({str(log_file)!r}).read().splitlines()
        expected = [f"record {{i}} {{j}} end" for i in range(14) for j in range(50)]
        assert sorted(lines) == sorted(expected)
        print("OK")
        """
    )
    assert out == "OK"


def test_logging_handlers_made_before_patching_get_cross_hub_locks():
    proc = run_python(
        """
        import logging
        handler = logging.StreamHandler()
        logging.getLogger().addHandler(handler)
        import greenpool.monkey
        greenpool.monkey.patch_all()
        from greenpool import sync
        print(isinstance(handler.lock, sync.RLock), isinstance(logging._lock, sync.RLock))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True True"


@pytest.mark.timeout(60)
def test_timer_cancelled_from_another_hub_wakes_and_never_fires():
    out = check(
        """
        fired = []
        with greenpool.Pool(4) as pool:
            def start():
                timer = threading.Timer(30, fired.append, (1,))
                timer.start()
                return timer
            timer = pool.spawn_on(0, start).result(5)
            t0 = time.monotonic()
            pool.spawn_on(2, timer.cancel).result(5)
            timer.join(10)
            assert not timer.is_alive() and time.monotonic() - t0 < 5
            quick = pool.spawn_on(1, lambda: threading.Timer(0.01, fired.append, (2,))).result(5)
            quick.start()  # from the main thread
            quick.join(10)
        assert fired == [2], fired
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_barrier_and_condition_across_hubs_and_a_native_thread():
    out = check(
        """
        barrier = threading.Barrier(6)
        cond, turn = threading.Condition(), [0]
        def party(i):
            assert barrier.wait(10) in range(6)
            for _ in range(30):
                with cond:
                    assert cond.wait_for(lambda: turn[0] % 5 == i, 10), "lost wake-up"
                    turn[0] += 1
                    cond.notify_all()
            return i
        with greenpool.Pool(4) as pool:
            parties = [pool.spawn_on(i, party, i) for i in range(4)]
            parties.append(native(party, 4))
            barrier.wait(10)  # the main thread is the sixth party
            assert [f.result(20) for f in parties] == [0, 1, 2, 3, 4]
        assert turn[0] == 150
        print("OK")
        """
    )
    assert out == "OK"


def test_patched_queue_fast_paths_wake_the_next_waiter_on_their_mutex(pool):
    """A bounded queue's put()/get() release its mutex inline; the next waiter must be woken.

    Runs unpatched: greenpool's queue.Queue uses a greenpool Lock either way.
    Four calls on one hub park on the held mutex; each wakes the next as it
    releases (a release wakes only the longest waiter of each hub).
    """
    from greenpool.monkey.queue import Queue

    from .helpers import wait_until

    q = Queue(10)
    q.mutex.acquire()
    calls = [(q.put, "a"), (q.get,), (q.put, "b"), (q.get,)]
    futures = []
    for n, (fn, *args) in enumerate(calls, 1):
        futures.append(pool.spawn_on(1, fn, *args))
        wait_until(lambda n=n: len(q.mutex._waiters) == n, what=f"call {n} to park")
    q.mutex.release()
    assert [f.result(10) for f in futures] == [None, "a", None, "b"]
    assert q.qsize() == 0 and not q.mutex.locked()


@pytest.mark.timeout(60)
def test_patched_locks_logging_and_queues_work_in_a_forked_child():
    """threading's and logging's at-fork hooks reinitialise greenpool's locks in the child."""
    out = check(
        """
        import logging, os, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        log = logging.getLogger("app")
        q, lock, event = queue.Queue(), threading.Lock(), threading.Event()
        with greenpool.Pool(2) as pool:
            pool.spawn(lambda: (log.info("parent hub"), q.put(1))).result(5)
            pid = os.fork()
            if pid == 0:
                log.info("child")
                with lock:
                    q.put(2)
                ok = q.get(timeout=5) == 1 and q.get(timeout=5) == 2
                event.set()
                os._exit(0 if ok and event.wait(1) else 1)
            _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        """
    )
    assert out.splitlines() == ["parent hub", "child", "child exit 0"]


def test_signal_handler_in_the_main_hub_can_queue_a_sentinel_and_join_the_worker():
    # A SIGTERM arriving while the main thread waits runs its Python handler
    # in the main thread's hub greenlet; the usual graceful shutdown (put a
    # sentinel, join the worker) raised "cannot block in a gevent hub greenlet".
    out = check(
        """
        import os, signal
        from greenlet import getcurrent
        jobs = queue.Queue()
        def worker():
            while jobs.get() is not None:
                pass
        w = threading.Thread(target=worker)
        w.start()
        seen = []
        def on_term(signum, frame):
            seen.append(getcurrent() is gevent.get_hub())
            jobs.put(None)
            w.join(10)
            seen.append(w.is_alive())
        signal.signal(signal.SIGTERM, on_term)
        # Sent once the main thread is parked in join() (its hub runs the handler).
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        w.join(20)
        print(seen)
        """
    )
    assert out == "[True, False]"


def test_fork_hooks_of_concurrent_futures_hold_a_cross_hub_lock():
    # concurrent.futures.thread registers its lock's acquire/release as
    # os.fork() hooks at import. Imported under gevent's patching, they held
    # gevent's one-hub lock: two hubs forking at once could park a thread
    # inside os.fork() for good (test_patch_child has the load test).
    out = check(
        """
        import gc
        from gevent.thread import LockType
        hooked = [
            ref.__func__.__name__
            for lock in gc.get_objects() if isinstance(lock, LockType)
            for ref in gc.get_referrers(lock)
            if getattr(ref, "__self__", None) is lock
        ]
        print(sorted(hooked))
        """
    )
    assert out == "[]"
