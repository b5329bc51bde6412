"""greenpool.monkey.patch_all(): gevent's queues, events, locks, pools and greenlets across hubs.

Libraries with a gevent driver (python-engineio, and so Flask-SocketIO) use
``gevent.queue``/``gevent.event``/``gevent.lock`` and ``gevent.Greenlet``
directly; :mod:`greenpool.monkey.gevent_primitives` replaces them with
cross-hub subclasses. Each test patches, so each runs its scenario in a child
process on a 4-hub pool. Waiters are known to be parked by a bounded poll of
the object's own count of parked callers (``parked()``), never a sleep.
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
import time, threading
import gevent, gevent.queue, gevent.event, gevent.lock, gevent.pool
import greenpool
from gevent.monkey import get_original
from greenpool.monkey import gevent_primitives as gp
native_sleep = get_original("time", "sleep")

def parked(count, n, what="waiters"):
    # Bounded: until count() callers are parked (a state no event reports).
    deadline = time.monotonic() + 10
    while count() < n:
        assert time.monotonic() < deadline, f"timed out waiting for {n} parked {what}"
        native_sleep(0.001)

def hub_index():
    return greenpool.current_hub().index
"""


def check(code: str, timeout: float = 60) -> str:
    return run_python_ok(PRELUDE + NATIVE_THREAD_SOURCE + textwrap.dedent(code), timeout)


def test_patch_all_installs_cross_hub_classes_that_still_pass_gevents_isinstance_checks():
    out = check(
        """
        from gevent import _gevent_cqueue as cq, _gevent_cevent as ce
        from gevent import _gevent_c_semaphore as cs, _gevent_cgreenlet as cg
        q = gevent.queue
        assert q.Queue is q.JoinableQueue is gp.Queue and q.SimpleQueue is gp.SimpleQueue
        assert (q.PriorityQueue, q.LifoQueue, q.UnboundQueue, q.Channel) == (
            gp.PriorityQueue, gp.LifoQueue, gp.UnboundQueue, gp.Channel)
        assert gevent.event.Event is gp.Event and gevent.event.AsyncResult is gp.AsyncResult
        assert gevent.lock.Semaphore is gp.Semaphore
        assert gevent.lock.BoundedSemaphore is gp.BoundedSemaphore
        assert gevent.Greenlet is gevent.greenlet.Greenlet is gp.Greenlet
        assert type(gevent.spawn(int)) is gp.Greenlet
        assert gevent.pool.Group.greenlet_class is gp.Greenlet
        # gevent.pool imported its names at import, before patching: rebound.
        assert gevent.pool.Event is gp.Event and gevent.pool.Semaphore is gp.Semaphore
        # Subclasses of gevent's classes, and gevent's class tree is kept:
        assert isinstance(q.Queue(), cq.Queue) and isinstance(q.Queue(), cq.SimpleQueue)
        assert isinstance(q.Queue(), q.SimpleQueue) and issubclass(q.PriorityQueue, q.Queue)
        assert isinstance(q.LifoQueue(), q.SimpleQueue) and not isinstance(q.Channel(), q.Queue)
        assert isinstance(gevent.lock.BoundedSemaphore(), gevent.lock.Semaphore)
        assert isinstance(gevent.lock.BoundedSemaphore(), cs.BoundedSemaphore)
        assert isinstance(gevent.event.Event(), ce.Event)
        assert isinstance(gevent.spawn(int), cg.Greenlet)
        # A gevent.lock.RLock is built on the (cross-hub) Semaphore.
        assert isinstance(gevent.lock.RLock()._block, gp.Semaphore)
        greenpool.monkey.patch_all()  # again: nothing changes
        assert gevent.queue.Queue is gp.Queue and gp.installed()
        print("OK")
        """
    )
    assert out == "OK"


def test_names_imported_from_gevent_before_patch_all_are_rebound_objects_made_before_are_not(
    tmp_path,
):
    (tmp_path / "early.py").write_text(
        "from gevent.queue import JoinableQueue\n"
        "from gevent.event import Event\n"
        "from gevent.lock import BoundedSemaphore\n"
        "made_early = JoinableQueue()\n"
        "class MyLock(BoundedSemaphore):  # calls its base by name: the name must stay\n"
        "    def acquire(self, *args):\n"
        "        return BoundedSemaphore.acquire(self, *args)\n"
    )
    proc = run_python(
        f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import early
        import greenpool.monkey
        greenpool.monkey.patch_all()
        from greenpool.monkey import gevent_primitives as gp
        print(early.JoinableQueue is gp.Queue, early.Event is gp.Event,
              type(early.made_early) is gp.Queue, early.BoundedSemaphore is gp.BoundedSemaphore,
              early.MyLock().acquire())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "False", "False", "True"]


def test_python_dash_m_greenpool_monkey_installs_the_gevent_classes(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import gevent.queue\n"
        "from greenpool.monkey import gevent_primitives as gp\n"
        "print(gevent.queue.JoinableQueue is gp.Queue)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.monkey", str(script)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


@pytest.mark.timeout(60)
def test_every_queue_class_wakes_a_getter_on_one_hub_with_a_put_on_another():
    out = check(
        """
        kinds = [gevent.queue.Queue, gevent.queue.JoinableQueue, gevent.queue.SimpleQueue,
                 gevent.queue.LifoQueue, gevent.queue.PriorityQueue, gevent.queue.UnboundQueue,
                 gevent.queue.Channel]
        with greenpool.Pool(4) as pool:
            for kind in kinds:
                q = kind()
                got = pool.spawn_on(0, q.get, timeout=10)
                parked(lambda: len(q.getters), 1)
                pool.spawn_on(1, q.put, kind.__name__).result(10)
                assert got.result(10) == kind.__name__, kind
                # from a plain native thread, and to the main thread
                got = pool.spawn_on(2, q.get, timeout=10)
                parked(lambda: len(q.getters), 1)
                native(q.put, "native").result(10)
                assert got.result(10) == "native"
                # the main thread parked, woken by a put on hub 3
                def put_when_parked():
                    parked(lambda: len(q.getters), 1)
                    q.put("to main")
                putter = pool.spawn_on(3, put_when_parked)
                assert q.get(timeout=10) == "to main"
                putter.result(10)
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_channel_put_waits_for_a_getter_on_another_hub_and_hands_the_item_over():
    out = check(
        """
        ch = gevent.queue.Channel()
        with greenpool.Pool(4) as pool:
            put = pool.spawn_on(0, ch.put, "x", timeout=10)
            parked(lambda: ch.balance, 1, "putters")
            assert pool.spawn_on(3, ch.get, timeout=10).result(10) == "x"
            assert put.result(10) is None and ch.balance == 0
            try:
                pool.spawn_on(1, ch.put, "y", timeout=0.01).result(10)
            except gevent.queue.Full:
                print("Full")
            try:
                ch.get_nowait()
            except gevent.queue.Empty:
                print("Empty")
        """
    )
    assert out.split() == ["Full", "Empty"]


@pytest.mark.timeout(60)
def test_bounded_queue_putter_on_one_hub_is_woken_by_a_get_on_another():
    out = check(
        """
        q = gevent.queue.JoinableQueue(2)
        with greenpool.Pool(4) as pool:
            pool.spawn_on(0, lambda: (q.put(1), q.put(2))).result(10)
            assert q.full()
            try:
                pool.spawn_on(0, q.put, 3, timeout=0.01).result(10)
            except gevent.queue.Full:
                pass
            else:
                raise AssertionError("put into a full queue did not time out")
            put = pool.spawn_on(1, q.put, 3, timeout=10)
            parked(lambda: len(q.putters), 1, "putters")
            assert pool.spawn_on(2, q.get).result(10) == 1
            put.result(10)
            assert [q.get_nowait(), q.get_nowait()] == [2, 3] and q.qsize() == 0
            assert q.unfinished_tasks == 3
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(120)
def test_joinable_queue_many_to_many_across_four_hubs_loses_and_duplicates_nothing():
    out = check(
        """
        q = gevent.queue.JoinableQueue(16)
        PRODUCERS, PER = 8, 500
        done_items = gevent.queue.SimpleQueue()
        def produce(p):
            for i in range(PER):
                q.put((p, i), timeout=20)
        def consume():
            n = 0
            for item in q:  # until StopIteration
                done_items.put(item)
                q.task_done()
                n += 1
            q.task_done()
            return n
        with greenpool.Pool(4) as pool:
            consumers = [pool.spawn_on(i % 4, consume) for i in range(8)]
            consumers.append(native(consume))
            producers = [pool.spawn_on(i % 4, produce, i) for i in range(PRODUCERS - 1)]
            producers.append(native(produce, PRODUCERS - 1))
            for f in producers:
                f.result(60)
            # join on one hub returns once consumers on the others marked every task done
            assert pool.spawn_on(2, q.join, 60).result(70) is True
            for _ in consumers:
                q.put(StopIteration)
            counts = [f.result(60) for f in consumers]
        items = [done_items.get_nowait() for _ in range(done_items.qsize())]
        expected = [(p, i) for p in range(PRODUCERS) for i in range(PER)]
        assert len(items) == len(expected), (len(items), len(expected))
        assert sorted(items) == expected  # none lost, none twice
        assert sum(counts) == len(expected) and q.unfinished_tasks == 0 and q.join(0)
        print("OK", len(items))
        """,
        timeout=110,
    )
    assert out == "OK 4000"


def test_priority_queue_whose_comparisons_release_the_gil_stays_a_heap_across_threads():
    # A comparison that runs Python code releasing the GIL (here a native
    # sleep) lets another thread reach the heap mid-push: the heap's lock
    # (in C, a flag under the GIL) must make that thread wait, not interleave.
    out = check(
        """
        import functools
        @functools.total_ordering
        class Slow:
            def __init__(self, n):
                self.n = n
            def __eq__(self, other):
                return self.n == other.n
            def __lt__(self, other):
                native_sleep(0.00001)  # releases the GIL mid-heappush
                return self.n < other.n
        q = gevent.queue.PriorityQueue()
        PER = 150
        def produce(p):
            for i in range(PER):
                q.put(Slow(p * PER + i))
        with greenpool.Pool(4) as pool:
            futures = [pool.spawn_on(i, produce, i) for i in range(4)]
            futures.append(native(produce, 4))
            for f in futures:
                f.result(60)
        got = [q.get_nowait().n for _ in range(q.qsize())]
        assert got == list(range(5 * PER)), got[:20]  # every item, lowest first
        print("OK", len(got))
        """
    )
    assert out == "OK 750"


@pytest.mark.timeout(60)
def test_joinable_queue_join_on_one_hub_waits_for_task_done_on_another():
    out = check(
        """
        q = gevent.queue.JoinableQueue()
        with greenpool.Pool(4) as pool:
            for i in range(3):
                q.put(i)
            joined = pool.spawn_on(0, q.join, 10)
            parked(lambda: len(q._gp_joiners.waiters), 1, "joiners")
            assert pool.spawn_on(1, q.join, 0.01).result(10) is False  # timeout: False
            for _ in range(3):
                pool.spawn_on(2, lambda: (q.get(), q.task_done())).result(10)
            assert joined.result(10) is True
        print("OK")
        """
    )
    assert out == "OK"


def test_gevent_queue_semantics_on_one_hub_are_unchanged():
    out = check(
        """
        import warnings
        from gevent.queue import Queue, SimpleQueue, LifoQueue, PriorityQueue, Empty, Full
        def run():
            q = Queue(2)
            q.put(1); q.put_nowait(2)
            try:
                q.put_nowait(3)
            except Full:
                pass
            try:
                q.put(3, timeout=0.001)
            except Full:
                pass
            assert (q.peek(), q.qsize(), len(q), q.full(), q.maxsize) == (1, 2, 2, True, 2)
            assert [q.get(), q.get_nowait()] == [1, 2] and q.empty()
            for call in (q.get_nowait, q.peek_nowait, lambda: q.get(timeout=0.001)):
                try:
                    call()
                except Empty:
                    pass
                else:
                    raise AssertionError(call)
            try:
                q.get(timeout=-1)
            except ValueError:
                pass
            q.task_done(); q.task_done()
            try:
                q.task_done()
            except ValueError:
                pass
            assert q.join(0) is True and bool(q) is True
            q.maxsize = None
            for i in range(5):
                q.put(i)
            q.put(StopIteration)
            assert list(q) == [0, 1, 2, 3, 4]
            assert Queue(items=[1, 2]).unfinished_tasks == 2
            assert Queue(5, [1, 2]).copy().queue == Queue(5, [1, 2]).queue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert Queue(0).maxsize is None
            assert caught and caught[0].category is DeprecationWarning
            lifo, prio = LifoQueue(), PriorityQueue()
            for i in (2, 3, 1):
                lifo.put(i); prio.put(i)
            assert [lifo.get() for _ in range(3)] == [1, 3, 2]
            assert prio.peek() == 1 and [prio.get() for _ in range(3)] == [1, 2, 3]
            # a getter parked on the same hub, woken by a put
            g = gevent.spawn(q.get)
            gevent.sleep(0)
            q.put("woken")
            assert g.get(timeout=5) == "woken"
            # shutdown wakes parked getters with ShutDown
            sq = Queue()
            g = gevent.spawn(sq.get)
            gevent.sleep(0)
            sq.shutdown()
            g.join(5)
            assert isinstance(g.exception, gevent.queue.ShutDown), g.exception
            try:
                sq.put(1)
            except gevent.queue.ShutDown:
                pass
            else:
                raise AssertionError("put after shutdown")
            s = SimpleQueue()
            s.put(1)
            assert s.get() == 1 and not hasattr(s, "task_done")
            return "OK"
        with greenpool.Pool(1) as pool:
            print(pool.spawn(run).result(30))
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_event_set_on_one_hub_wakes_waiters_on_every_hub_a_native_thread_and_main():
    out = check(
        """
        ev = gevent.event.Event()
        with greenpool.Pool(4) as pool:
            waiters = [pool.spawn_on(i % 4, ev.wait, 10) for i in range(8)]
            waiters.append(native(ev.wait, 10))
            parked(lambda: len(ev._gp_waiters.waiters) if ev._gp_waiters else 0, 9)
            assert pool.spawn_on(1, ev.wait, 0.01).result(10) is False  # timeout: False
            pool.spawn_on(3, ev.set).result(10)
            assert [w.result(10) for w in waiters] == [True] * 9
            assert ev.wait() is True and ev.is_set()  # the main thread
            ev.clear()
            main_wait = native(lambda: ev.wait(10))
            parked(lambda: len(ev._gp_waiters.waiters), 1)
            ev.set()  # from the main thread
            assert main_wait.result(10) is True
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_a_waiter_list_reentered_by_its_own_thread_does_not_hang():
    # A GC run inside a critical section may call a __del__ that sets the same
    # event or puts on the same queue; here ready()/take() come back directly.
    # The C twins' locks (flags under the GIL) are reentrant, as the Python
    # lot's RLock; this runs in-process, on the plain main thread.
    from greenpool.monkey.gevent_primitives import _parking

    flag = _parking._Flag()

    def ready():
        flag.wake_all()  # re-enters the flag's lock
        return True

    assert flag.wait(ready, 5) is True and not flag.waiters and not flag.pending
    lot = _parking._Lot()

    def take():
        lot.wake_one()  # re-enters the lot's lock
        return "item"

    assert _parking._lot_wait(lot, take, 5) == "item" and not lot.parked


def test_event_waits_ended_by_timeout_timeout_object_or_kill_leave_no_waiter_behind():
    out = check(
        """
        def parked_here(count, n):
            # The waiters are greenlets of this hub: let them run until parked.
            for _ in range(1000):
                if count() >= n:
                    return
                gevent.sleep(0)
            raise AssertionError(f"{n} waiters never parked")
        def scenario():
            e = gevent.event.Event()
            assert e.wait(0.01) is False and e.linkcount() == 0   # a number
            assert e.wait(timeout=0) is False and e.linkcount() == 0
            assert e.wait(gevent.Timeout(0.01)) is False and e.linkcount() == 0  # an object
            class Custom(Exception):
                pass
            try:
                e.wait(gevent.Timeout(0.01, Custom))
            except Custom:
                pass
            else:
                raise AssertionError("a Timeout with its own exception raises it")
            assert e.linkcount() == 0
            try:
                e.wait("soon")
            except TypeError:
                pass
            else:
                raise AssertionError("a timeout that is not a number")
            g = gevent.spawn(e.wait)
            parked_here(e.linkcount, 1)
            g.kill()  # GreenletExit into the parked waiter
            assert g.dead and e.linkcount() == 0
            waiters = [gevent.spawn(e.wait) for _ in range(3)]
            parked_here(e.linkcount, 3)
            e.set()
            assert [w.get(timeout=5) for w in waiters] == [True] * 3
            assert e.wait() is True and e.linkcount() == 0
            return "OK"
        with greenpool.Pool(1) as pool:
            print(pool.submit(scenario).result(30))
        """
    )
    assert out == "OK"


def test_async_result_waited_on_one_hub_is_set_on_another_value_exception_and_timeout():
    out = check(
        """
        with greenpool.Pool(4) as pool:
            ar = gevent.event.AsyncResult()
            getters = [pool.spawn_on(i, ar.get, timeout=10) for i in range(4)]
            getters.append(native(ar.get, True, 10))
            parked(lambda: len(ar._gp_waiters.waiters) if ar._gp_waiters else 0, 5)
            pool.spawn_on(2, ar.set, 42).result(10)
            assert [g.result(10) for g in getters] == [42] * 5 and ar.successful()
            bad = gevent.event.AsyncResult()
            waiting = pool.spawn_on(0, bad.get, timeout=10)
            parked(lambda: len(bad._gp_waiters.waiters) if bad._gp_waiters else 0, 1)
            pool.spawn_on(1, bad.set_exception, KeyError("boom")).result(10)
            try:
                waiting.result(10)
            except KeyError as exc:
                assert exc.args == ("boom",)
            assert bad.wait(1) is None and isinstance(bad.exception, KeyError)
            try:
                pool.spawn_on(3, gevent.event.AsyncResult().get, timeout=0.01).result(10)
            except gevent.Timeout:
                print("Timeout")
            assert pool.spawn_on(3, gevent.event.AsyncResult().wait, 0.01).result(10) is None
        print("OK")
        """
    )
    assert out.split() == ["Timeout", "OK"]


@pytest.mark.timeout(60)
def test_rawlink_callbacks_run_on_the_hub_that_registered_them():
    out = check(
        """
        with greenpool.Pool(4) as pool:
            for make, fire in ((gevent.event.Event, lambda o: o.set()),
                               (gevent.event.AsyncResult, lambda o: o.set(1)),
                               (lambda: gevent.lock.Semaphore(0), lambda o: o.release())):
                obj = make()
                ran = gevent.queue.Queue()
                def register(i):
                    obj.rawlink(lambda source: ran.put((i, hub_index(), source is obj)))
                for i in range(4):
                    pool.spawn_on(i, register, i).result(10)
                assert obj.linkcount() == 4
                pool.spawn_on(0, fire, obj).result(10)
                calls = sorted(ran.get(timeout=10) for _ in range(4))
                for i, hub, same in calls:
                    assert hub == i and same, calls
            # gevent.wait / iwait: a rawlink user, across hubs
            ev, ar = gevent.event.Event(), gevent.event.AsyncResult()
            waited = pool.spawn_on(0, gevent.wait, [ev, ar], 10)
            pool.spawn_on(1, ev.set).result(10)
            pool.spawn_on(2, ar.set, 1).result(10)
            assert set(waited.result(10)) == {ev, ar}
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(120)
def test_semaphores_and_rlock_exclude_across_four_hubs_and_a_native_thread():
    out = check(
        """
        sem, bsem = gevent.lock.Semaphore(2), gevent.lock.BoundedSemaphore(1)
        rlock = gevent.lock.RLock()
        inside = {"sem": 0, "bsem": 0, "rlock": 0}
        peak = dict(inside)
        def enter(name):
            inside[name] += 1
            peak[name] = max(peak[name], inside[name])
        def work(n):
            for _ in range(n):
                with sem:
                    enter("sem"); gevent.sleep(0); inside["sem"] -= 1
                with bsem:
                    enter("bsem"); gevent.sleep(0); inside["bsem"] -= 1
                with rlock:
                    with rlock:  # reentrant for its owner
                        enter("rlock"); gevent.sleep(0); inside["rlock"] -= 1
            return n
        with greenpool.Pool(4) as pool:
            futures = [pool.spawn_on(i % 4, work, 200) for i in range(12)]
            futures.append(native(work, 200))
            assert sum(f.result(60) for f in futures) == 13 * 200
            assert peak == {"sem": 2, "bsem": 1, "rlock": 1}, peak
            assert (sem.counter, bsem.counter) == (2, 1)
            try:
                bsem.release()
            except ValueError:
                pass
            else:
                raise AssertionError("over-release not refused")
            # an acquirer parked on hub 0, woken by a release on hub 3; timeouts
            lock = gevent.lock.Semaphore(0)
            got = pool.spawn_on(0, lock.acquire, True, 10)
            parked(lambda: len(lock._gp_parked), 1)
            assert pool.spawn_on(1, lock.acquire, True, 0.01).result(10) is False
            assert pool.spawn_on(2, lock.acquire, False).result(10) is False
            pool.spawn_on(3, lock.release).result(10)
            assert got.result(10) is True and lock.counter == 0
            waiter = pool.spawn_on(1, lock.wait, 10)  # wait() does not take the permit
            parked(lambda: len(lock._gp_waiters.waiters) if lock._gp_waiters else 0, 1)
            pool.spawn_on(2, lock.release).result(10)
            assert waiter.result(10) == 1 and lock.counter == 1
        print("OK")
        """,
        timeout=110,
    )
    assert out == "OK"


def test_greenlet_unlink_from_another_hub_removes_the_link_even_one_already_fired():
    out = check(
        """
        from gevent.monkey import get_original
        native_lock = get_original("threading", "Lock")()
        with greenpool.Pool(2) as pool:
            calls = []
            def cb(source):
                calls.append(source)
            # 1. linked and unlinked on hub 1, the greenlet on hub 0: never called
            ev = gevent.event.Event()
            g = pool.spawn_on(0, gevent.spawn, ev.wait).result(10)
            def link_unlink():
                g.rawlink(cb)
                g.unlink(cb)
            pool.spawn_on(1, link_unlink).result(10)
            pool.spawn_on(0, ev.set).result(10)
            pool.spawn_on(0, g.join, 10).result(10)
            pool.spawn_on(1, gevent.sleep, 0).result(10)  # hub 1's mailbox is drained
            assert calls == [], calls
            # 2. the control: linked on hub 1, not unlinked: called once, on hub 1
            ev = gevent.event.Event()
            g = pool.spawn_on(0, gevent.spawn, ev.wait).result(10)
            pool.spawn_on(1, g.link, lambda source: calls.append(hub_index())).result(10)
            pool.spawn_on(0, ev.set).result(10)
            pool.spawn_on(0, g.join, 10).result(10)
            pool.spawn_on(1, gevent.sleep, 0.01).result(10)
            assert calls == [1], calls
            calls.clear()
            # 3. the link fires while hub 1 is stuck (its call waits in hub 1's
            # mailbox); an unlink on hub 1 before that call runs: not called
            ev = gevent.event.Event()
            g = pool.spawn_on(0, gevent.spawn, ev.wait).result(10)
            linked = threading.Event()
            native_lock.acquire()
            def link_block_unlink():
                g.rawlink(cb)
                linked.set()
                native_lock.acquire()  # hub 1's thread stops here, its loop too
                native_lock.release()
                g.unlink(cb)
            done = pool.spawn_on(1, link_block_unlink)
            linked.wait(10)
            pool.spawn_on(0, ev.set).result(10)
            pool.spawn_on(0, g.join, 10).result(10)  # g is dead: its relay was posted to hub 1
            native_lock.release()
            done.result(10)
            pool.spawn_on(1, gevent.sleep, 0.01).result(10)
            assert calls == [], calls
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_group_and_pool_join_and_wait_available_from_another_hub():
    out = check(
        """
        with greenpool.Pool(4) as pool:
            group = gevent.pool.Group()
            release = gevent.event.Event()
            def spawn_into(i):
                return group.spawn(release.wait, 10)
            greenlets = [pool.spawn_on(i, spawn_into, i).result(10) for i in (1, 2, 3)]
            joined = pool.spawn_on(0, group.join, 10)
            assert pool.spawn_on(0, group.join, 0.01).result(10) is False
            release.set()
            assert joined.result(10) is True and len(group) == 0
            assert all(g.dead for g in greenlets)
            # a gevent.pool.Pool of 2: full on hub 1, wait_available on hub 0
            gpool = pool.spawn_on(1, gevent.pool.Pool, 2).result(10)
            go = gevent.event.Event()
            pool.spawn_on(1, lambda: [gpool.spawn(go.wait, 10) for _ in range(2)]).result(10)
            assert gpool.full() and gpool.free_count() == 0
            available = pool.spawn_on(0, gpool.wait_available, 10)
            assert pool.spawn_on(2, gpool.wait_available, 0.01).result(10) == 0
            go.set()
            assert available.result(10) >= 1
            assert pool.spawn_on(3, gpool.join, 10).result(10) is True
            assert gpool.free_count() == 2
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_a_timed_out_join_or_get_from_another_hub_leaves_no_link_behind():
    """As gevent's own join unlinks: a supervisor polling join(1) must not pile up links."""
    out = check(
        """
        import gc
        from greenpool.monkey.gevent_primitives.greenlet import _Wake
        def wakes():
            gc.collect()
            return sum(1 for o in gc.get_objects() if type(o) is _Wake)
        with greenpool.Pool(2) as pool:
            go = gevent.event.Event()
            g = pool.spawn_on(1, gevent.spawn, go.wait, 10).result(10)
            def poll(n):
                for _ in range(n):
                    g.join(timeout=0.001)
                    try:
                        g.get(timeout=0.001)
                    except gevent.Timeout:
                        pass
            pool.spawn_on(0, poll, 100).result(30)
            deadline = time.monotonic() + 10  # the unlinks run on the greenlet's hub
            while wakes() and time.monotonic() < deadline:
                time.sleep(0.01)
            print(wakes())
            go.set()
        """
    )
    assert out == "0"


def test_greenlet_join_get_link_and_kill_from_another_hub():
    out = check(
        """
        with greenpool.Pool(4) as pool:
            go = gevent.event.Event()
            def answer():
                go.wait(10)
                return 42
            g = pool.spawn_on(1, gevent.spawn, answer).result(10)
            linked = gevent.queue.Queue()
            def link(source):
                linked.put((hub_index(), source.value))
            def rawlink(source):
                linked.put((hub_index(), "raw"))
            pool.spawn_on(2, g.link, link).result(10)
            pool.spawn_on(3, g.rawlink, rawlink).result(10)
            joined = pool.spawn_on(0, g.join, 10)
            got = pool.spawn_on(3, g.get, True, 10)
            from_thread = native(g.get, True, 10)
            try:
                pool.spawn_on(2, g.get, True, 0.01).result(10)
            except gevent.Timeout:
                pass
            else:
                raise AssertionError("get did not time out")
            go.set()
            joined.result(10)
            assert got.result(10) == 42 and from_thread.result(10) == 42 and g.dead
            assert sorted([linked.get(timeout=10), linked.get(timeout=10)]) == [(2, 42), (3, "raw")]
            # get() re-raises the greenlet's exception on another hub
            bad = pool.spawn_on(1, gevent.spawn, lambda: 1 / 0).result(10)
            try:
                pool.spawn_on(2, bad.get, True, 10).result(10)
            except ZeroDivisionError:
                print("ZeroDivisionError")
            # kill from another hub
            sleeper = pool.spawn_on(1, gevent.spawn, gevent.sleep, 60).result(10)
            pool.spawn_on(0, sleeper.kill, gevent.GreenletExit, True, 10).result(10)
            assert sleeper.dead and isinstance(sleeper.value, gevent.GreenletExit)
            # gevent.joinall on another hub
            gs = [pool.spawn_on(i, gevent.spawn, int, i).result(10) for i in range(4)]
            done = pool.spawn_on(0, gevent.joinall, gs, 10).result(10)
            assert sorted(g.value for g in done) == [0, 1, 2, 3]
        print("OK")
        """
    )
    assert out.split() == ["ZeroDivisionError", "OK"]


@pytest.mark.timeout(60)
def test_engineio_gevent_driver_queue_event_and_thread_work_across_hubs():
    pytest.importorskip("engineio")
    out = check(
        """
        from engineio.async_drivers.gevent import _async
        Queue, Event, Thread = _async["queue"], _async["event"], _async["thread"]
        assert Queue is gp.Queue and Event is gp.Event and issubclass(Thread, gp.Greenlet)
        with greenpool.Pool(4) as pool:
            q = Queue()
            got = pool.spawn_on(0, q.get, timeout=10)  # engineio's socket.poll()
            parked(lambda: len(q.getters), 1)
            pool.spawn_on(1, q.put, "packet").result(10)  # engineio's socket.send() elsewhere
            assert got.result(10) == "packet"
            pool.spawn_on(2, q.task_done).result(10)
            assert pool.spawn_on(3, q.join, 10).result(10) is True
            event = Event()
            waiting = pool.spawn_on(2, event.wait, 10)
            pool.spawn_on(3, event.set).result(10)
            assert waiting.result(10) is True
            def start_thread():
                t = Thread(target=lambda x: q.put(x), args=["from thread"])
                t.start()
                return t
            t = pool.spawn_on(1, start_thread).result(10)
            pool.spawn_on(0, t.join).result(10)
            assert t.dead and q.get(timeout=10) == "from thread"
        print("OK")
        """
    )
    assert out == "OK"


@pytest.mark.timeout(60)
def test_blocking_in_a_hub_greenlet_is_refused_and_queues_there_stay_non_blocking():
    out = check(
        """
        from gevent.queue import Queue, Empty
        def in_loop_callback():
            hub = gevent.get_hub()
            result = gevent.event.AsyncResult()
            def callback():
                q = Queue()
                try:
                    q.get()
                except Empty:
                    outcome = ["Empty"]
                try:
                    gevent.event.Event().wait()
                except RuntimeError as exc:
                    outcome.append("cannot block" in str(exc))
                result.set(outcome)
            hub.loop.run_callback(callback)
            return result.get(timeout=10)
        with greenpool.Pool(2) as pool:
            print(*pool.spawn_on(1, in_loop_callback).result(10))
        """
    )
    assert out == "Empty True"


@pytest.mark.timeout(120)
def test_getters_that_time_out_or_are_killed_while_parked_strand_no_item_and_no_wake_up():
    out = check(
        """
        q = gevent.queue.Queue()
        ITEMS = 2000
        def impatient():
            got = []
            while True:
                try:
                    item = q.get(timeout=0.0005)  # times out often, racing the puts
                except gevent.queue.Empty:
                    continue
                if item is None:
                    return got
                got.append(item)
        def producer(start):
            for i in range(start, ITEMS, 4):
                q.put(i)
                if i % 50 == 0:
                    gevent.sleep(0)
        with greenpool.Pool(4) as pool:
            # Getters killed while parked: their wake-ups must go to the next getter.
            victims = [pool.spawn_on(i % 4, gevent.spawn, q.get).result(10) for i in range(8)]
            parked(lambda: len(q.getters), 8)
            for g in victims:
                pool.spawn_on(0, g.kill, gevent.GreenletExit, True, 10).result(10)
            getters = [pool.spawn_on(i % 4, impatient) for i in range(6)]
            producers = [pool.spawn_on(i, producer, i) for i in range(4)]
            for f in producers:
                f.result(60)
            for _ in getters:
                q.put(None)
            got = sorted(x for f in getters for x in f.result(60))
        assert got == list(range(ITEMS)), (len(got), len(set(got)))
        assert q.qsize() == 0 and not q.getters
        print("OK")
        """,
        timeout=110,
    )
    assert out == "OK"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "module, skip",
    [
        # LoopExit for a lone waiter on the main hub: greenpool waits (another hub may wake it).
        ("test__queue", "test_peek_empty"),
        ("test__pool", ""),
        ("test__greenlet", "test_c_extension"),  # checks for gevent's compiled class
        ("test__iwait", ""),
        ("test__joinall", ""),
        ("test__greenletset", ""),
    ],
)
def test_gevents_own_tests_pass_with_the_cross_hub_classes(module, skip):
    """gevent's own specification of these classes, run after greenpool.monkey.patch_all()."""
    proc = run_python(
        f"""
        import unittest
        import greenpool.monkey
        greenpool.monkey.patch_all()
        import gevent.queue
        from greenpool.monkey import gevent_primitives as gp
        assert gevent.queue.Queue is gp.Queue
        import gevent.tests.{module} as mod
        def flat(suite):
            for test in suite:
                if isinstance(test, unittest.TestSuite):
                    yield from flat(test)
                else:
                    yield test
        tests = [t for t in flat(unittest.defaultTestLoader.loadTestsFromModule(mod))
                 if t._testMethodName != {skip!r}]
        result = unittest.TextTestRunner(verbosity=0).run(unittest.TestSuite(tests))
        print("RESULT", result.testsRun, len(result.failures), len(result.errors))
        """,
        timeout=110,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stdout + proc.stderr[-3000:]
    run, failures, errors = map(int, line[0].split()[1:])
    assert run > 0 and failures == errors == 0, proc.stderr[-4000:]
