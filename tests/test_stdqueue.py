"""The patched ``queue`` classes (greenpool.monkey.queue): lock-free unbounded put/get, across hubs.

The stdlib's own specification runs in ``tests/stdlib`` (mostly bounded
queues, which keep the stdlib's locking). These pin the lock-free paths of an
unbounded Queue/LifoQueue: no lost item or wake-up between hubs and native
threads, task accounting with racing puts, what ``q.mutex`` still excludes,
and when a queue (or a subclass) falls back to the locked paths. They run
unpatched: the classes use greenpool's cross-hub locks either way.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import deque

import pytest

from greenpool._native import start_new_thread
from greenpool.monkey.queue import LifoQueue, PriorityQueue, Queue, SimpleQueue

from .helpers import wait_until

ITEMS = 2000


def native(fn, *args) -> threading.Event:
    """Run ``fn(*args)`` in a plain native thread; the event is set when it returns."""
    done = threading.Event()

    def run():
        try:
            fn(*args)
        finally:
            done.set()

    start_new_thread(run, ())
    return done


def test_unbounded_queues_are_lock_free_and_bounded_ones_keep_the_locked_paths():
    expected = not hasattr(queue.Queue, "shutdown")  # 3.13's shutdown(): locked everywhere
    assert Queue()._lock_free is expected and LifoQueue()._lock_free is expected
    assert not Queue(5)._lock_free and not PriorityQueue()._lock_free
    # bounded FIFO/LIFO: the C core's fast path when the mutex is idle (not for heaps)
    assert Queue(5)._bound == LifoQueue(5)._bound == (5 if expected else 0)
    assert PriorityQueue(5)._bound == 0 and Queue()._bound == 0


def test_a_bounded_queue_waits_for_a_held_mutex_and_for_room(pool):
    q = Queue(2)
    q.put(1)
    with q.mutex:
        put = pool.spawn_on(1, q.put, 2)  # fast path declined: the mutex is held
        wait_until(lambda: len(q.mutex._waiters) == 1, what="put to wait for the mutex")
        assert q._items == deque([1])
    put.result(5)
    blocked = pool.spawn_on(2, q.put, 3)  # full: waits on not_full
    wait_until(lambda: len(q.not_full._waiters) == 1, what="put to wait for room")
    assert q.get() == 1  # the fast path declines (a waiter): the locked path notifies
    blocked.result(5)
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]
    with pytest.raises(queue.Full):
        for i in range(3):
            q.put_nowait(i)
    q.maxsize = 5  # raising the bound lets the fast path use it
    q.put_nowait(9)
    assert q.qsize() == 3 and q._bound == (5 if not hasattr(queue.Queue, "shutdown") else 0)


KINDS = {
    "Queue": Queue,
    "LifoQueue": LifoQueue,
    "SimpleQueue": SimpleQueue,
    # bounded: the C core's atomic fast path, and both conditions' waits when full/empty
    "Queue(8)": lambda: Queue(8),
    "LifoQueue(8)": lambda: LifoQueue(8),
    "PriorityQueue(8)": lambda: PriorityQueue(8),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_every_item_reaches_exactly_one_getter_across_hubs_and_native_threads(pool, kind):
    # 4 hubs and 2 native threads each put ITEMS; 4 hub getters and the main
    # thread take them with blocking gets (parked when empty: the wake-up path).
    q = KINDS[kind]()
    producers = 6
    got: list[list] = [[] for _ in range(5)]

    def produce(p):
        for i in range(ITEMS):
            q.put((p, i))

    def consume(k, n):
        for _ in range(n):
            got[k].append(q.get(timeout=10))

    total = producers * ITEMS
    share = total // 5
    getters = [pool.spawn_on(k, consume, k, share) for k in range(4)]
    putters = [pool.spawn_on(p, produce, p) for p in range(4)]
    natives = [native(produce, p) for p in (4, 5)]
    consume(4, total - 4 * share)
    for f in getters + putters:
        f.result(30)
    assert all(done.wait(30) for done in natives)
    items = [item for part in got for item in part]
    assert sorted(items) == sorted((p, i) for p in range(producers) for i in range(ITEMS))
    if kind in ("Queue", "SimpleQueue", "Queue(8)"):  # FIFO: each producer's order kept
        for part in got:
            for p in range(producers):
                mine = [i for (q_p, i) in part if q_p == p]
                assert mine == sorted(mine)
    assert q.qsize() == 0 and q.empty()


@pytest.mark.timeout(60)
def test_join_waits_for_every_task_done_while_puts_race_on_other_hubs(pool):
    q = Queue()
    done_count = [0]
    lock = threading.Lock()

    def worker():
        while True:
            item = q.get(timeout=10)
            if item is None:
                q.task_done()
                return
            with lock:
                done_count[0] += 1
            q.task_done()

    workers = [pool.spawn_on(k, worker) for k in range(4)]
    putters = [pool.spawn_on(k, lambda: [q.put(i) for i in range(500)]) for k in range(4)]
    natives = [native(lambda: [q.put(i) for i in range(500)]) for _ in range(2)]
    for f in putters:
        f.result(30)
    assert all(e.wait(30) for e in natives)
    q.join()  # the main thread; returns only once all 3,000 are done
    assert done_count[0] == 3000 and q.unfinished_tasks == 0
    for _ in workers:
        q.put(None)
    q.join()
    for f in workers:
        f.result(10)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()
    assert q.unfinished_tasks == 0


def test_get_timeouts_empty_and_argument_errors_match_the_stdlib(pool):
    q = Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        pool.spawn(q.get, True, 0.01).result(5)
    q.put(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)  # checked before the item is taken, as in the stdlib
    assert q.get(False) == 1
    q.put(2, timeout=-1)  # unbounded: put ignores block and timeout, as in the stdlib
    assert q.get() == 2


LOCK_FREE = not hasattr(queue.Queue, "shutdown")  # Python 3.13's shutdown(): locked paths
needs_lock_free = pytest.mark.skipif(not LOCK_FREE, reason="Python 3.13+: queues keep the locks")


@needs_lock_free
def test_a_getter_parked_on_one_hub_is_woken_by_a_put_from_another(pool):
    q = LifoQueue()
    getter = pool.spawn_on(0, q.get, True, 10)
    wait_until(lambda: len(q._parked) == 1, what="the getter to park")
    pool.spawn_on(1, q.put, "x").result(5)
    assert getter.result(5) == "x"
    assert not q._parked


@needs_lock_free
def test_holding_the_mutex_excludes_join_and_task_done_but_not_put_or_get(pool):
    q = Queue()
    q.put(1)
    with q.mutex:  # the idiom `with q.mutex: q.queue.clear()` still works
        assert pool.spawn_on(1, q.put, 2).result(5) is None
        q.queue.clear()
        task_done = pool.spawn_on(2, q.task_done)
        wait_until(lambda: len(q.mutex._waiters) == 1, what="task_done to wait for the mutex")
    task_done.result(5)
    assert q.unfinished_tasks == 1 and q.qsize() == 0


def test_a_replaced_container_is_followed_by_put_and_get():
    from collections import deque

    q = Queue()
    q.put(1)
    q.queue = deque([7])
    q.put(8)
    assert [q.get(), q.get()] == [7, 8]


def test_an_unbounded_queue_refuses_a_maxsize_later_and_a_bounded_one_takes_any():
    q = Queue()
    if q._lock_free:  # a caller may be between a look and parking: refused, even unused
        with pytest.raises(ValueError, match=r"queue.Queue\(maxsize\)"):
            q.maxsize = 1
    q.maxsize = 0  # unbounded stays allowed
    bounded = Queue(1)
    bounded.put(1)
    with pytest.raises(queue.Full):
        bounded.put_nowait(2)
    bounded.maxsize = 0  # a bounded queue keeps its locks: any bound, as in the stdlib
    bounded.put_nowait(2)
    assert [bounded.get(), bounded.get()] == [1, 2]


def test_subclasses_that_override_a_method_or_hook_keep_the_locked_paths():
    class Counting(Queue):
        puts = 0

        def put(self, item, block=True, timeout=None):
            type(self).puts += 1
            super().put(item, block, timeout)

    class Plain(Queue):
        pass

    class Own(LifoQueue):
        def _get(self):
            return self.queue.pop(0)  # a FIFO through the hooks

    counting, plain, own = Counting(), Plain(), Own()
    assert not counting._lock_free and not own._lock_free
    assert plain._lock_free is Queue()._lock_free
    for q in (counting, plain, own):
        q.put(1)
        q.put(2)
        assert [q.get(), q.get()] == [1, 2]
        assert q.unfinished_tasks == 2
    assert Counting.puts == 2


def test_the_pure_python_stdlib_helpers_still_see_the_queue(pool):
    # qsize/empty/full/put_nowait/get_nowait are the stdlib's own methods
    q = Queue()
    for i in range(3):
        q.put_nowait(i)
    assert (q.qsize(), q.empty(), q.full()) == (3, False, False)
    assert [q.get_nowait() for _ in range(3)] == [0, 1, 2]
    assert q.unfinished_tasks == 3


def test_put_and_get_take_the_stdlibs_arguments_by_position_and_keyword():
    q = Queue()
    q.put(item=1)
    q.put(2, block=False)
    q.put(3, True, timeout=1)
    assert [q.get(block=False), q.get(True, 1), q.get(timeout=None)] == [1, 2, 3]
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError):
        q.put(1, nonsense=True)
    with pytest.raises(TypeError):
        q.get(1, 2, 3)
    with pytest.raises(TypeError):
        q.put(1, item=2)


def test_put_and_get_keep_no_reference_to_items():
    item = object()
    before = sys.getrefcount(item)
    for q in (Queue(), LifoQueue(), Queue(5)):
        for _ in range(1000):
            q.put(item)
            assert q.get() is item
        with pytest.raises(queue.Empty):
            q.get(False)
    assert sys.getrefcount(item) == before

