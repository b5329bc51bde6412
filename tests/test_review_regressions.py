"""Regressions for defects a review found in the core (each fails without its fix)."""

from __future__ import annotations

import gc
import threading
import weakref

import gevent
import gevent.event
import pytest
from greenlet import getcurrent

import greenpool

from .helpers import run_python


def test_a_task_that_yielded_never_has_its_greenlet_reused(make_pool):
    """Code that kept the greenlet (a registry, a watchdog) must not hit a later task."""
    p = make_pool(1)

    registry = []

    def keeps_its_greenlet():
        registry.append(getcurrent())  # e.g. a connection registry
        event = gevent.event.Event()
        gevent.get_hub().loop.run_callback(event.set)
        event.wait()  # resumed by a loop callback, not by a Waiter
        return "done"

    assert p.spawn(keeps_its_greenlet).result(5) == "done"
    p.spawn(lambda: None).result(5)  # its runner has retired or parked by now
    assert registry[0].dead


def test_a_task_that_never_yields_still_gets_a_fresh_looking_greenlet(make_pool):
    p = make_pool(1)
    first = p.spawn(lambda: id(getcurrent())).result(5)
    assert isinstance(first, int)  # no reference kept: reuse is invisible


def test_join_on_an_idle_pool_from_a_foreign_gevent_hub_leaves_no_watcher(make_pool):
    p = make_pool(2)
    box = {}

    def in_a_gevent_thread():
        gevent.get_hub()  # this thread has a hub: joins wait through it
        for _ in range(20):
            p.join()
        # nothing of ours may keep this thread's loop alive
        box["loop ran dry"] = gevent.wait(timeout=2)

    t = threading.Thread(target=in_a_gevent_thread)
    t.start()
    t.join(10)
    assert box == {"loop ran dry": True}


def test_join_inside_the_pool_with_a_timeout_waits_for_the_other_tasks(make_pool):
    p = make_pool(2)
    release = threading.Event()
    other = p.spawn_on(1, greenpool.blocking, release.wait, 10)

    def joiner():
        assert p.join(timeout=0.05) is False  # the other task still runs
        release.set()
        return p.join(timeout=10)

    assert p.spawn_on(0, joiner).result(10) is True
    assert other.result(5) is True


def test_gevent_stream_server_with_the_pool_stops_from_inside_the_pool():
    from gevent.server import StreamServer

    def main():
        pool = greenpool.current_pool()
        server = StreamServer(("127.0.0.1", 0), lambda s, a: s.close(), spawn=pool)
        server.start()
        server.stop(timeout=1)
        return "stopped"

    assert greenpool.run(main, size=2) == "stopped"


def test_max_pending_holds_against_concurrent_spawners(make_pool):
    p = make_pool(1, max_pending=2)
    release, started = threading.Event(), threading.Event()
    blocker = p.spawn(lambda: (started.set(), release.wait(10)))
    assert started.wait(5)
    done = []

    def spawner():
        for _ in range(5):
            done.append(p.spawn(lambda: None))

    threads = [threading.Thread(target=spawner) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = threading.Event()
    for _ in range(500):  # bounded: until every spawner waits for room
        if len(p._space_waiters) == 4:
            break
        deadline.wait(0.01)
    assert len(p._space_waiters) == 4
    assert p.hubs[0].queued == 2
    release.set()
    for t in threads:
        t.join(10)
    assert len(done) == 20 and all(f.result(5) is None for f in done)
    blocker.result(5)


def test_a_finished_tasks_result_is_not_kept_alive_by_its_parked_runner(make_pool):
    p = make_pool(1)

    class Big:
        pass

    f = p.spawn(Big)
    ref = weakref.ref(f.result(5))
    p.stats()  # a loop callback has run: the runner has parked by now
    del f
    gc.collect()
    assert ref() is None


def test_cancelling_a_hand_made_running_future_works():
    f = greenpool.Future()
    assert f.set_running_or_notify_cancel()
    assert f.cancel() and f.cancelled()


@pytest.mark.timeout(30)
def test_fork_while_the_default_pool_lock_is_held_does_not_hang_the_child():
    result = run_python("""
        import os, threading, greenpool, greenpool.api
        held, release = threading.Event(), threading.Event()
        def creating_the_default_pool():        # holds the lock across the fork
            with greenpool.api._default_lock:
                held.set()
                release.wait()
        threading.Thread(target=creating_the_default_pool).start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if greenpool.spawn(lambda: 2).result(5) == 2 else 1)
        release.set()
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """, timeout=25)
    assert result.stdout.strip() == "child exit 0", result.stderr


@pytest.mark.timeout(30)
def test_fork_from_inside_a_task_gives_broken_pool_and_the_child_exits():
    result = run_python("""
        import os, greenpool
        pool = greenpool.Pool(2)
        def forker():
            pid = os.fork()
            if pid == 0:
                try:
                    greenpool.spawn(lambda: 1)
                    os.write(1, b"child: spawn worked?\\n")
                except greenpool.BrokenPool:
                    os.write(1, b"child: BrokenPool\\n")
                return "child task done"      # the child must then exit, not hang
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        print("parent saw child exit", pool.spawn(forker).result(20), flush=True)
        pool.shutdown()
    """, timeout=25)
    assert result.returncode == 0, result.stderr
    assert "child: BrokenPool" in result.stdout
    assert "parent saw child exit 0" in result.stdout


# -- a third review: the executor and future contracts ----------------------------


def test_a_failing_task_whose_callable_has_a_broken_repr_still_completes(make_pool):
    """Describing the task for the unretrieved-exception log must not run under its lock."""
    import functools

    class Opaque(functools.partial):
        def __repr__(self):
            raise ValueError("no repr for you")

    def boom():
        raise KeyError("from the task")

    p = make_pool(1)
    f = p.spawn(Opaque(boom))
    assert isinstance(f.exception(5), KeyError)
    assert p.join(5)


def test_a_done_callback_raising_systemexit_on_a_hub_is_logged_and_the_hub_goes_on(
    make_pool, caplog
):
    p = make_pool(1)
    release = threading.Event()
    f = p.spawn(release.wait, 10)
    f.add_done_callback(lambda _f: (_ for _ in ()).throw(SystemExit(3)))
    later = []
    f.add_done_callback(later.append)  # the next callback still runs
    with caplog.at_level("ERROR", logger="greenpool"):
        release.set()
        assert f.result(5) is True
        assert p.join(5)
    assert later == [f]
    assert "raised on a hub; ignored" in caplog.text
    assert p.spawn(lambda: "still serving").result(5) == "still serving"
    assert p.hubs[0].live == 0


def test_a_done_callback_raising_systemexit_in_a_plain_thread_propagates():
    """Off the hubs the stdlib's behaviour stands: nothing swallows SystemExit there."""
    f = greenpool.Future()
    f.add_done_callback(lambda _f: (_ for _ in ()).throw(SystemExit(3)))
    with pytest.raises(SystemExit):
        f.set_result(1)


@pytest.mark.timeout(20)
def test_kill_releases_spawners_blocked_on_max_pending(make_pool):
    p = make_pool(1, max_pending=2)
    release, started = threading.Event(), threading.Event()
    blocker = p.spawn(lambda: (started.set(), release.wait(10)))  # holds the hub natively
    assert started.wait(5)
    p.spawn(lambda: None)
    p.spawn(lambda: None)
    assert p.full()
    outcome = []
    spawner = threading.Thread(target=lambda: outcome.append(p.spawn(lambda: "late")))
    spawner.start()
    try:
        p.kill(block=False)  # runs on the hub as soon as it is free: cancels the queue
    finally:
        release.set()
    spawner.join(5)
    assert not spawner.is_alive(), "a spawner blocked on max_pending was never released"
    assert blocker.done()
    assert outcome[0].result(5) == "late"


def test_join_from_inside_returns_when_the_last_other_task_on_its_own_hub_ends(make_pool):
    """The caller's own task keeps its hub at one live task: that must still wake it."""
    import time

    p = make_pool(1)

    def parent():
        greenpool.spawn(gevent.sleep, 0.05)
        began = time.monotonic()
        done = p.join(timeout=10)
        return done, time.monotonic() - began

    done, took = p.spawn(parent).result(15)
    assert done and took < 5


@pytest.mark.timeout(30)
def test_fork_does_not_run_callbacks_of_threads_that_the_child_lost():
    """A pending task's done callback belongs to a thread that is gone in a forked
    child, and may need a lock that thread held at the fork: the child's after-fork
    cleanup fails the task without running it (it used to wait for that lock)."""
    result = run_python("""
        import os, threading, greenpool
        from greenpool._native import allocate_lock
        pool = greenpool.Pool(2)
        release = threading.Event()
        held_by_another_thread = allocate_lock()
        holding = threading.Event()

        def hold():
            with held_by_another_thread:
                holding.set()
                release.wait(20)

        threading.Thread(target=hold).start()
        holding.wait(10)
        pending = pool.spawn_on(1, release.wait, 20)

        def callback(fut):
            with held_by_another_thread:
                pass

        pending.add_done_callback(callback)

        def forker():
            pid = os.fork()
            if pid == 0:
                os.write(1, b"child after fork\\n")
                os._exit(pending.exception(0) is not None and 7)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        print("child exit", pool.spawn_on(0, forker).result(20), flush=True)
        release.set()
        pool.shutdown()
    """, timeout=25)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "child after fork" in result.stdout
    assert "child exit 7" in result.stdout
