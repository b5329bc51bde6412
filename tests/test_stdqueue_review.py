"""Review findings on the patched ``queue`` classes (greenpool.monkey.queue, greenpool._speedups).

Each test pins the stdlib's behaviour where greenpool's differed when an
adversarial review found it (each fixed since: regression tests). Patched code
runs in a subprocess (a deadlock or a crash there fails the test instead of
the run); a subprocess
that could hang arms ``faulthandler`` to exit with its stacks.
"""

from __future__ import annotations

import copy
import queue
import textwrap

import pytest

from greenpool._compiled import speedups
from greenpool.monkey.queue import Queue, SimpleQueue

from .helpers import run_python_ok

needs_c_core = pytest.mark.skipif(speedups is None, reason="the C core (greenpool._speedups)")
#: Python 3.13's Queue.shutdown(): every queue keeps the stdlib's locked paths there.
needs_lock_free = pytest.mark.skipif(hasattr(queue.Queue, "shutdown"),
                                     reason="Python 3.13+: queues keep the locks")

PRELUDE = """
import faulthandler, os, sys
faulthandler.dump_traceback_later(20, exit=True)  # a deadlock exits 1, with its stacks
import greenpool.monkey
greenpool.monkey.patch_all()
import gc, queue, threading, time, weakref
from collections import deque
from greenpool._compiled import speedups

def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.002)
"""


def check(code: str, timeout: float = 60) -> str:
    return run_python_ok(PRELUDE + textwrap.dedent(code), timeout)


@pytest.mark.timeout(90)
def test_lock_free_put_notifies_a_waiter_on_not_empty_as_the_stdlib():
    out = check(
        """
        for cls in (queue.Queue, queue.LifoQueue):
            q = cls()
            notified = []
            def peek():
                with q.not_empty:  # the stdlib's put() notifies this condition
                    if not q._qsize():
                        notified.append(q.not_empty.wait(timeout=5))
            t = threading.Thread(target=peek)
            t.start()
            wait_until(lambda: q.not_empty._waiters, "the peeker to wait")
            q.put("item")
            t.join()
            assert notified == [True], (cls, notified)
        print("ok")
        """
    )
    assert out == "ok"


@pytest.mark.timeout(90)
def test_simplequeue_put_from_a_gc_callback_during_get_does_not_deadlock():
    # concurrent.futures.ThreadPoolExecutor wakes its workers exactly so: a weakref
    # callback put(None) on its SimpleQueue, run by whichever collection frees the
    # executor. A collection does run inside that region: the IndexError the empty
    # pop() raises is allocated there.
    out = check(
        """
        q = queue.SimpleQueue()
        refs, fired, got = [], [], []
        class Executor:
            pass
        def collecting(phase, info):
            # Garbage made as a collection starts inside get(): this collection frees it.
            if phase == "start" and not fired and q._parked and q._getters._mutex._is_owned():
                fired.append(True)
                ex = Executor()
                ex.cycle = ex
                refs.append(weakref.ref(ex, lambda _: q.put("woken")))
        gc.callbacks.append(collecting)
        gc.set_threshold(1)
        for _ in range(10000):
            if fired:
                break
            try:
                got.append(q.get(timeout=0))  # the put may land in this very get
            except queue.Empty:
                pass
        gc.set_threshold(700)
        gc.callbacks.remove(collecting)
        assert fired, "no collection ran inside get()'s locked region"
        gc.collect()  # the cycle, if the collection that made it did not free it
        print(got[0] if got else q.get(timeout=5))
        """
    )
    assert out == "woken"


@pytest.mark.timeout(90)
def test_getter_parked_before_the_container_is_replaced_gets_the_next_item():
    out = check(
        """
        for cls in (queue.Queue, queue.LifoQueue):
            q = cls()
            got = []
            t = threading.Thread(target=lambda: got.append(q.get(timeout=5)), daemon=True)
            t.start()
            wait_until(lambda: getattr(q, "_parked", None) or q.not_empty._waiters,
                       "the getter to park")
            with q.mutex:
                q.queue = cls().queue  # a fresh container, as the stdlib allows
            q.put("item")
            t.join()
            assert got == ["item"], (cls, got, q.qsize())
        print("ok")
        """
    )
    assert out == "ok"


@needs_lock_free
@pytest.mark.timeout(90)
def test_maxsize_set_while_a_getter_is_about_to_park_loses_no_wake_up():
    # The window (a GIL switch between get()'s failed pop and wait_pop's parking)
    # is held open by wrapping the queue's _Getters.
    out = check(
        """
        q = queue.Queue()
        real = q._getters
        in_transit, go = threading.Event(), threading.Event()
        class Held:
            def __getattr__(self, name):
                return getattr(real, name)
            def wait_pop(self, pop, timeout):
                in_transit.set()
                go.wait()
                return real.wait_pop(pop, timeout)
        q._getters = Held()
        got = []
        t = threading.Thread(target=lambda: got.append(q.get(timeout=60)), daemon=True)
        t.start()
        in_transit.wait()
        try:
            q.maxsize = 5  # the stdlib allows it; greenpool refuses it on a queue in use
            refused = False
        except ValueError:
            refused = True
        go.set()
        wait_until(lambda: real.parked or q.not_empty._waiters, "the getter to park")
        q.put("item")
        t.join(10)
        print("refused" if refused else got)
        sys.stdout.flush()
        os._exit(0)  # the getter may still wait: don't wait for it at exit
        """
    )
    assert out in ("refused", "['item']"), out


@needs_lock_free
@needs_c_core
@pytest.mark.timeout(90)
def test_c_core_put_with_a_deleted_getters_member_raises_instead_of_crashing():
    out = check(
        """
        q = queue.Queue()
        q._parked.append(object())  # as if a getter were parked
        del q._getters
        try:
            q.put(1)
        except (AttributeError, SystemError) as exc:
            print(type(exc).__name__)
        """
    )
    assert out in ("AttributeError", "SystemError")


@needs_lock_free
@needs_c_core
@pytest.mark.timeout(30)
def test_c_core_put_propagates_an_error_from_the_parked_container():
    class Broken:
        def __bool__(self):
            raise ZeroDivisionError

    q = Queue()
    q._parked = Broken()
    with pytest.raises(ZeroDivisionError):
        q.put(1)


@pytest.mark.timeout(30)
def test_simplequeue_nonblocking_get_ignores_a_negative_timeout():
    with pytest.raises(queue.Empty):
        SimpleQueue().get(False, -1)


@needs_c_core
@pytest.mark.timeout(30)
def test_copy_copy_of_a_queue_works_as_the_stdlibs():
    q = Queue()
    q.put(1)
    assert copy.copy(q).qsize() == 1
