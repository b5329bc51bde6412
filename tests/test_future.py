"""Future: cooperative waits in hubs, native waits outside, cancellation, stdlib compatibility."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import gevent
import pytest
from gevent.event import Event as GeventEvent

import greenpool
from greenpool.errors import CancelledError, TimeoutError


def test_result_inside_a_pool_greenlet_lets_siblings_on_the_same_hub_run(make_pool):
    """The waiting greenlet parks; a sibling on its hub keeps making progress meanwhile."""
    p = make_pool(2)
    release = threading.Event()
    ticks = []

    def sibling():
        for i in range(5):
            ticks.append(i)
            gevent.sleep(0)
        release.set()  # only reachable if the hub kept running while main waited

    def main():
        slow = p.spawn_on(1, greenpool.blocking, release.wait, 10)
        greenpool.spawn(sibling)  # same hub as main
        assert slow.result(10) is True
        return ticks[:]

    assert p.spawn_on(0, main).result(10) == [0, 1, 2, 3, 4]


def test_result_from_a_plain_thread_blocks_natively(pool):
    f = pool.spawn(lambda: (gevent.sleep(0.01), 7)[1])
    box = []
    t = threading.Thread(target=lambda: box.append(f.result(10)))
    t.start()
    t.join(10)
    assert box == [7]


def test_result_timeout_raises_timeout_error_in_thread_and_in_hub(pool):
    release = threading.Event()
    slow = pool.spawn_on(0, greenpool.blocking, release.wait, 10)
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.01)
    waiter = pool.spawn_on(1, lambda: slow.result(timeout=0.01))
    with pytest.raises(TimeoutError):
        waiter.result(10)
    release.set()
    assert slow.result(10) is True


def test_exception_returns_none_on_success(pool):
    assert pool.spawn(lambda: 1).exception(5) is None


def test_cancel_a_running_task_kills_its_greenlet_with_greenlet_exit(pool):
    started = threading.Event()
    seen = []

    def forever():
        started.set()
        try:
            gevent.sleep(60)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    f = pool.spawn(forever)
    assert started.wait(5)
    assert f.running()
    assert f.cancel() is True
    assert f.cancelled() and f.done()
    with pytest.raises(CancelledError):
        f.result(0)
    assert pool.join(5)
    assert seen == ["GreenletExit"]


def test_cancel_a_queued_task_means_it_never_runs(make_pool):
    p = make_pool(1)
    release, started = threading.Event(), threading.Event()
    # an unpatched wait holds the hub itself, so the next task stays queued
    blocker = p.spawn(lambda: (started.set(), release.wait(10)))
    assert started.wait(5)
    ran = []
    queued = p.spawn(ran.append, 1)
    assert queued.cancel()
    release.set()
    blocker.result(5)
    assert p.join(5)
    assert ran == [] and queued.cancelled()


def test_cancel_a_finished_task_returns_false(pool):
    f = pool.spawn(lambda: 1)
    f.result(5)
    assert f.cancel() is False
    assert f.result() == 1


def test_cancelling_one_task_leaves_its_siblings_alone(make_pool):
    p = make_pool(1)
    started = threading.Event()
    victim = p.spawn(lambda: (started.set(), gevent.sleep(60)))
    sibling = p.spawn(lambda: (gevent.sleep(0.01), "alive")[1])
    assert started.wait(5)
    victim.cancel()
    assert sibling.result(5) == "alive"


def test_a_task_waiting_on_its_own_future_raises_instead_of_deadlocking(pool):
    box = {}

    def selfwait():
        return box["f"].result()

    gate = threading.Event()

    def start():
        gate.wait(5)
        return selfwait()

    box["f"] = f = pool.spawn(start)
    gate.set()
    with pytest.raises(RuntimeError, match="own future"):
        f.result(5)


def test_done_callbacks_run_once_with_the_future(pool):
    called = []
    done = threading.Event()
    f = pool.spawn(lambda: 5)
    f.add_done_callback(lambda fut: (called.append(fut.result()), done.set()))
    assert done.wait(5)
    assert called == [5]


def test_works_with_concurrent_futures_wait_and_as_completed(pool):
    futures = [pool.spawn(lambda i=i: (gevent.sleep(0.001 * i), i)[1]) for i in range(10)]
    done, not_done = cf.wait(futures, timeout=10)
    assert len(done) == 10 and not not_done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == list(range(10))
    cancelled = pool.spawn(gevent.sleep, 60)
    cancelled.cancel()
    done, _ = cf.wait([cancelled], timeout=5)
    assert cancelled in done


def test_set_result_twice_raises_invalid_state():
    f = greenpool.Future()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)


def test_result_on_a_foreign_gevent_hub_waits_cooperatively(pool):
    """The calling thread's own gevent hub keeps running its greenlets during the wait."""
    release = threading.Event()
    slow = pool.spawn(greenpool.blocking, release.wait, 10)
    progressed = GeventEvent()

    def other():
        progressed.set()
        release.set()

    results = []

    def in_this_thread():
        gevent.spawn(other)
        results.append(slow.result(10))

    # a plain thread with its own gevent hub, like a patched main thread
    t = threading.Thread(target=lambda: gevent.spawn(in_this_thread).join())
    t.start()
    t.join(10)
    assert results == [True] and progressed.is_set()


def test_many_waiters_from_every_context_all_wake(pool):
    release = threading.Event()
    target = pool.spawn(greenpool.blocking, release.wait, 10)
    in_hubs = [pool.spawn(target.result, 10) for _ in range(20)]
    thread_results = []
    threads = [threading.Thread(target=lambda: thread_results.append(target.result(10)))
               for _ in range(5)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert [f.result(10) for f in in_hubs] == [True] * 20
    assert thread_results == [True] * 5
