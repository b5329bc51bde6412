"""greenpool.wait / as_completed: concurrent.futures' contract, cooperative on a hub."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import gevent
import pytest

import greenpool
from tests.helpers import wait_until


def test_wait_inside_a_pool_greenlet_lets_children_on_the_same_hub_finish(make_pool):
    """The stdlib's wait() would block the hub's thread, so these children could never run."""
    p = make_pool(1)

    def parent():
        kids = [greenpool.spawn(gevent.sleep, 0.01 * i) for i in range(3)]
        done, not_done = greenpool.wait(kids, timeout=10)
        return len(done), len(not_done)

    assert p.spawn(parent).result(15) == (3, 0)


def test_as_completed_inside_a_pool_greenlet_yields_in_completion_order(make_pool):
    p = make_pool(1)

    def parent():
        kids = {greenpool.spawn(lambda d=d: (gevent.sleep(d), d)[1]): d for d in (0.06, 0.0, 0.03)}
        return [f.result() for f in greenpool.as_completed(kids, timeout=10)]

    assert p.spawn(parent).result(15) == [0.0, 0.03, 0.06]


def test_wait_return_when_matches_the_stdlib_from_a_plain_thread(make_pool):
    p = make_pool(2)
    release = threading.Event()
    quick = p.spawn(lambda: "quick")
    failing = p.spawn(lambda: 1 / 0)
    slow = p.spawn(greenpool.blocking, release.wait, 10)
    try:
        done, not_done = greenpool.wait([quick, slow], return_when=greenpool.FIRST_COMPLETED)
        assert done == {quick} and not_done == {slow}
        done, not_done = greenpool.wait([failing, slow], return_when=greenpool.FIRST_EXCEPTION)
        assert done == {failing} and not_done == {slow}
        began = time.monotonic()
        done, not_done = greenpool.wait([quick, slow], timeout=0.1)
        assert done == {quick} and not_done == {slow}
        assert time.monotonic() - began < 5
    finally:
        release.set()
    done, not_done = greenpool.wait([quick, failing, slow], timeout=10)
    assert done == {quick, failing, slow} and not not_done


def test_as_completed_times_out_with_the_stdlib_message(make_pool):
    p = make_pool(1)
    release = threading.Event()
    slow = p.spawn(greenpool.blocking, release.wait, 10)
    quick = p.spawn(lambda: 1)
    try:
        got = []
        with pytest.raises(greenpool.TimeoutError, match=r"1 \(of 2\) futures unfinished"):
            for f in greenpool.as_completed([slow, quick], timeout=0.2):
                got.append(f)
        assert got == [quick]
    finally:
        release.set()
    assert isinstance(greenpool.TimeoutError(), cf.TimeoutError)


def test_wait_leaves_no_waiter_registered_on_futures_it_gave_up_on(make_pool):
    p = make_pool(1)
    release = threading.Event()
    slow = p.spawn(greenpool.blocking, release.wait, 10)
    for _ in range(20):
        greenpool.wait([slow], timeout=0.001)
    list(greenpool.as_completed([p.spawn(lambda: 1)], timeout=5))
    assert not slow._waiters and not slow._wakers
    release.set()
    assert slow.result(5) is True


@pytest.mark.parametrize("how", ["wait", "as_completed"])
def test_waiting_registers_once_per_future_however_often_it_wakes(how):
    """Linear in the number of futures: re-registering on every wake-up is quadratic."""
    futures = [greenpool.Future() for _ in range(200)]
    result = []

    def waiter():
        if how == "wait":
            result.append(greenpool.wait(futures, timeout=30))
        else:
            result.append(list(greenpool.as_completed(futures, timeout=30)))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: futures[-1]._waiters, what="the waiter to register")
    registrations = []
    for f in futures:  # one at a time: the waiter wakes many times
        registrations.append(sum(len(g._waiters) for g in futures if not g.done()))
        f.set_result(None)
    thread.join(30)
    assert registrations[0] == len(futures)  # exactly one registration per future
    assert all(n == len(futures) - i for i, n in enumerate(registrations))
    assert all(not f._waiters for f in futures)
    if how == "wait":
        assert result[0].done == set(futures) and not result[0].not_done
    else:
        assert sorted(map(id, result[0])) == sorted(map(id, futures))


def test_bad_arguments_raise_at_the_call():
    with pytest.raises(TypeError, match="greenpool futures"):
        greenpool.wait([cf.Future()])
    with pytest.raises(TypeError, match="not one future"):
        greenpool.as_completed(greenpool.Future())
    with pytest.raises(ValueError, match="return_when"):
        greenpool.wait([], return_when="SOMETIMES")
    assert greenpool.wait([]) == (set(), set())
