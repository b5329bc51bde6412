"""The ``queue`` classes ``greenpool.monkey.patch_all()`` installs: the stdlib's, made fast.

:class:`Queue`, :class:`LifoQueue` and :class:`PriorityQueue` *are* the
stdlib's pure-Python classes (subclasses, with its ``mutex``, ``not_empty``,
``not_full``, ``all_tasks_done``, ``unfinished_tasks``, ``_init``/``_qsize``/
``_put``/``_get`` hooks and every method), on a cross-hub
:class:`greenpool.sync.Lock`. Two things make the hot calls cheap:

* **Lock-free unbounded queues.** An unbounded :class:`Queue` or
  :class:`LifoQueue` whose class keeps the stdlib's hooks and methods keeps
  its items in a deque (a list for LIFO) whose ``append`` and ``pop`` are
  single C calls, atomic under the GIL. ``put()`` counts the task, appends
  and wakes a parked getter if there is one (and notifies code waiting on
  ``q.not_empty`` itself, as the stdlib's put does); ``get()`` pops, and
  only an empty queue parks the caller (:class:`_Getters`: a getter queues
  itself and then looks again, so it and a putter always see each other).
  Neither takes ``mutex``: holding ``q.mutex`` still excludes the waiting
  paths, ``task_done()`` and ``join()``, but not another hub's put/get.
  (gevent's patched ``queue.Queue`` has no ``mutex`` at all.)
  ``unfinished_tasks`` is the count of puts minus ``task_done()`` calls, so
  a racing put is never lost. Such a queue refuses a later ``maxsize``.
* **Bounded and priority queues**, and subclasses that override a hook or a
  method, keep the stdlib's locking. A bounded FIFO/LIFO queue's ``put()``
  and ``get()`` first try, in C, the step the locked path would take when
  the lock is free, in normal mode, with nobody waiting on it or on the
  condition it would notify; otherwise they take the lock with one C call
  and skip ``notify()`` when nobody waits, and everything that has to wait
  runs the stdlib's own code.

``put()``/``get()`` live in ``greenpool._speedups.QueueCore`` (C, see
``greenpool/_speedups.c``) or, without the extension, :class:`_PyQueueCore`
(the lock-free paths only; pure Python cannot make the bounded step atomic).
On Python 3.13+ every queue keeps the locked paths (the stdlib checks
``shutdown()`` inside them).

:class:`SimpleQueue` replaces the C ``_queue.SimpleQueue``, which blocks a
hub's whole thread natively.
"""

from __future__ import annotations

import itertools
import sys
import time
import types
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gevent import monkey

from greenpool._compiled import speedups
from greenpool._waiter import Entry, ParkedCallers, remove_entry
from greenpool.sync import Empty, Lock

if TYPE_CHECKING:
    from queue import LifoQueue as _StdlibLifo
    from queue import PriorityQueue as _StdlibPriority
    from queue import Queue as _StdlibQueue
    from threading import Condition as _StdlibCondition
else:  # the stdlib's classes even when gevent has patched the names
    _StdlibQueue = monkey.get_original("queue", "Queue")
    _StdlibLifo = monkey.get_original("queue", "LifoQueue")
    _StdlibPriority = monkey.get_original("queue", "PriorityQueue")
    _StdlibCondition = monkey.get_original("threading", "Condition")

#: Python 3.13's ``Queue.shutdown()`` is checked inside the stdlib's locked
#: put/get; there, every queue keeps the locked paths.
_HAS_SHUTDOWN = hasattr(_StdlibQueue, "shutdown")
_LOCK_FREE_POSSIBLE = not _HAS_SHUTDOWN

#: What a subclass must not override to keep its parent's lock-free paths.
_LOCK_FREE_NAMES = (
    "__init__", "_init", "_qsize", "_put", "_get", "put", "get", "put_nowait", "get_nowait",
    "task_done", "join", "qsize", "empty", "full",
)


#: The C core's members (plain attributes of the pure-Python core): copied by __copy__.
_CORE_FIELDS = (
    "_items", "_push", "_pop", "_parked", "_getters", "_fast_mutex", "_not_empty_waiters",
    "_not_full_waiters", "_bound", "_puts", "_lock_free",
)


def _count_value(counter: itertools.count) -> int:
    """How many times ``next()`` was called on a fresh ``itertools.count()``."""
    return int(repr(counter)[6:-1])  # "count(N)": its only non-consuming read


class _Getters(ParkedCallers):
    """Getters parked on a queue whose put/get take no lock; never a lost wake-up.

    :class:`~greenpool._waiter.ParkedCallers`'s protocol: a putter appends and
    *then* wakes a parked getter; a getter parks and *then* looks for an item.
    A woken getter competes with newcomers (as :class:`greenpool.sync.Lock`'s
    waiters do); one that loses queues again at the head. (The reentrant mutex
    is what the stdlib's SimpleQueue.put allows: concurrent.futures' executor
    puts from a weakref callback.)
    """

    __slots__ = ()

    def wait_pop(self, pop: Callable[[], Any], timeout: float | None) -> Any:
        """Park until ``pop()`` finds an item; Empty once ``timeout`` expires."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parked = self.parked
        woken = False
        while True:
            entry = Entry()
            with self._mutex:
                if woken:
                    parked.appendleft(entry)
                else:
                    parked.append(entry)
                try:
                    item = pop()
                except IndexError:
                    pass
                else:
                    remove_entry(parked, entry)
                    return item
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got = entry.waiter.wait(left)
            except BaseException:
                with self._mutex:
                    queued = remove_entry(parked, entry)
                if not queued and parked:
                    self.wake_one()  # woken while being killed: pass it on
                raise
            if not got:
                with self._mutex:
                    remove_entry(parked, entry)
                try:
                    return pop()  # woken just as the timeout expired, or raced
                except IndexError:
                    raise Empty from None
            try:
                return pop()
            except IndexError:
                woken = True  # a newcomer took it first: queue again at the head


class _Condition(_StdlibCondition):
    """The stdlib's Condition; its per-wait lock is a cross-hub Lock even unpatched."""

    def wait(self, timeout=None):
        # threading.Condition.wait (PSF licence), with Lock() for _allocate_lock().
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved_state = self._release_save()
        gotit = False
        try:
            if timeout is None:
                waiter.acquire()
                gotit = True
            elif timeout > 0:
                gotit = waiter.acquire(True, timeout)
            else:
                gotit = waiter.acquire(False)
            return gotit
        finally:
            self._acquire_restore(saved_state)
            if not gotit:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass


class _PyQueueCore:
    """The pure-Python twin of ``greenpool._speedups.QueueCore``: :class:`Queue`'s put/get.

    Used where the C extension was not built, or with ``GREENPOOL_PURE_PYTHON=1``.
    The count of puts is an ``itertools.count``: ``next()`` is one C call.
    """

    _lock_free = False
    # Set by Queue.__init__ (the C type's members):
    _items: Any
    _push: Callable[[Any], Any]
    _pop: Callable[[], Any]
    _parked: deque
    _getters: _Getters
    _not_empty_waiters: deque

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._counter = itertools.count()
        return self

    @property
    def _puts(self) -> int:
        return _count_value(self._counter)

    @_puts.setter
    def _puts(self, value: int) -> None:  # the locked paths, under the mutex
        self._counter = itertools.count(value)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if self._lock_free:
            next(self._counter)  # before the item is visible: task_done() can't get ahead
            self._push(item)
            if self._parked:
                self._getters.wake_one()
            if self._not_empty_waiters:  # code waiting on q.not_empty itself, as a peek
                self._notify_not_empty()  # type: ignore[attr-defined]
            return None
        return self._put_locked(item, block, timeout)  # type: ignore[attr-defined]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._lock_free:
            if timeout is not None and block and timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            try:
                return self._pop()
            except IndexError:
                if not block:
                    raise Empty from None
            return self._wait_get(timeout)  # type: ignore[attr-defined]
        return self._get_locked(block, timeout)  # type: ignore[attr-defined]


_QueueCore: Any = _PyQueueCore if speedups is None else speedups.QueueCore
if speedups is not None:
    speedups.configure_lock(Lock)  # the lock whose slots the bounded fast path reads


class Queue(_QueueCore, _StdlibQueue):
    """``queue.Queue`` with a cross-hub lock and fast ``put``/``get`` (see the module)."""

    #: The container's atomic (push, pop) method names, or None: locked paths only.
    _atomic_ops: tuple[str, str] | None = ("append", "popleft")
    #: True while _init/_qsize/_put/_get are the deque ones: the locked paths inline them.
    _plain = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        hooks = ("_init", "_qsize", "_put", "_get")
        cls._plain = all(getattr(cls, name) is getattr(Queue, name) for name in hooks)
        if "_atomic_ops" not in cls.__dict__:  # a user's subclass
            parent = next(c for c in cls.__mro__[1:] if "_atomic_ops" in c.__dict__)
            if any(getattr(cls, n) is not getattr(parent, n) for n in _LOCK_FREE_NAMES):
                cls._atomic_ops = None

    def __init__(self, maxsize: int = 0) -> None:
        self._lock_free = False
        self._init(maxsize)  # binds _push and _pop (see queue)
        self.mutex = Lock()  # type: ignore[assignment]  # a threading.Lock stand-in
        self.not_empty = _Condition(self.mutex)
        self.not_full = _Condition(self.mutex)
        self.all_tasks_done = _Condition(self.mutex)
        self._done = 0
        if _HAS_SHUTDOWN:  # Python 3.13+
            self.is_shutdown = False
        if type(self)._atomic_ops is not None:
            # What the C core's bounded fast path reads (see _speedups.c).
            self._fast_mutex = self.mutex
            self._not_empty_waiters = self.not_empty._waiters  # type: ignore[attr-defined]
            self._not_full_waiters = self.not_full._waiters  # type: ignore[attr-defined]
            getters = _Getters()
            self._getters = getters
            self._parked = getters.parked
            self._lock_free = _LOCK_FREE_POSSIBLE and not maxsize > 0
        self.maxsize = maxsize

    @property
    def queue(self) -> Any:
        """The container (a deque; a list for LIFO, a heap for priority), as in the stdlib."""
        return self._items

    @queue.setter
    def queue(self, container: Any) -> None:
        self._items = container
        ops = type(self)._atomic_ops
        if ops is not None:  # also a replaced container: the fast paths follow it
            self._push = getattr(container, ops[0])
            self._pop = getattr(container, ops[1])

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        if self._lock_free and value > 0:
            # Its put()/get() take no lock: a caller on another hub may be between
            # a look at the queue and parking, whatever the queue looks like now.
            raise ValueError(
                "greenpool's queue.Queue: an unbounded queue cannot be given a maxsize "
                "after it is made (its put/get take no lock); create it with "
                "queue.Queue(maxsize)"
            )
        self._maxsize = value
        fast = (
            not self._lock_free and not _HAS_SHUTDOWN and type(value) is int
            and 0 < value < sys.maxsize and getattr(self, "_fast_mutex", None) is not None
        )
        self._bound = value if fast else 0  # the C core's bounded fast path, or none

    @property
    def unfinished_tasks(self) -> int:
        return self._puts - self._done

    @unfinished_tasks.setter
    def unfinished_tasks(self, value: int) -> None:
        # The stdlib's waiting put() adds one under the mutex. (A lock-free put()
        # racing a caller that sets a value it computed earlier is lost, as it
        # would be in the stdlib without the mutex: task_done() never sets it.)
        self._done = self._puts - value

    def task_done(self) -> None:
        """As the stdlib's; counts done tasks instead of setting ``unfinished_tasks``.

        A lock-free ``put()`` only ever adds to the count of puts, so counting
        down the other counter keeps it.
        """
        with self.all_tasks_done:
            unfinished = self.unfinished_tasks - 1
            if unfinished < 0:
                raise ValueError("task_done() called too many times")
            self._done += 1
            if unfinished == 0:
                self.all_tasks_done.notify_all()

    # put() and get() are _QueueCore's: lock-free, or these.

    def _notify_not_empty(self) -> None:
        """A lock-free put() and a waiter on ``q.not_empty`` itself: notify it, as the stdlib."""
        with self.not_empty:
            self.not_empty.notify()

    def _pop_now(self) -> Any:
        return self._pop()  # the current container's (q.queue may be replaced meanwhile)

    def _wait_get(self, timeout: float | None) -> Any:
        """A lock-free get() found the queue empty: park until an item comes."""
        return self._getters.wait_pop(self._pop_now, timeout)

    def __copy__(self) -> Any:
        """A shallow copy, sharing the container, lock and conditions, as the stdlib's."""
        cls = type(self)
        new = cls.__new__(cls)
        for name in _CORE_FIELDS:
            try:
                setattr(new, name, getattr(self, name))
            except AttributeError:
                pass
        new.__dict__.update(self.__dict__)
        return new

    def _put_locked(self, item: Any, block: bool, timeout: float | None) -> None:
        maxsize = self._maxsize
        if _HAS_SHUTDOWN or maxsize > 0 and (
            block and timeout is not None or self._qsize() >= maxsize
        ):
            return _StdlibQueue.put(self, item, block, timeout)  # may wait, checks timeout
        mutex: Any = self.mutex  # a greenpool Lock: its fast paths are used inline
        if not mutex._try(False):
            mutex._acquire_slow(True, -1)
        try:
            if 0 < self._maxsize <= self._qsize():
                full = True  # filled up while this call waited for the mutex
            else:
                full = False
                if self._plain:
                    self._items.append(item)
                else:
                    self._put(item)
                self._puts += 1
                not_empty: Any = self.not_empty
                if not_empty._waiters:
                    not_empty.notify()
        finally:
            if mutex._starving:
                mutex._release_slow()
            else:  # Lock.release() inlined
                mutex._free()
                if mutex._waiters:
                    mutex._wake_waiters()
        if full:
            _StdlibQueue.put(self, item, block, timeout)

    def _get_locked(self, block: bool, timeout: float | None) -> Any:
        if _HAS_SHUTDOWN or block and timeout is not None:
            return _StdlibQueue.get(self, block, timeout)  # checks the timeout first
        mutex: Any = self.mutex  # a greenpool Lock: its fast paths are used inline
        if not mutex._try(False):
            mutex._acquire_slow(True, -1)
        try:
            if self._plain:
                if self._items:
                    item = self._items.popleft()
                    not_full: Any = self.not_full
                    if not_full._waiters:
                        not_full.notify()
                    return item
            elif self._qsize():
                item = self._get()
                not_full = self.not_full
                if not_full._waiters:
                    not_full.notify()
                return item
        finally:
            if mutex._starving:
                mutex._release_slow()
            else:
                mutex._free()
                if mutex._waiters:
                    mutex._wake_waiters()
        return _StdlibQueue.get(self, block, timeout)  # empty: the stdlib's waiting code


class LifoQueue(Queue):
    """``queue.LifoQueue`` on the fast, cross-hub :class:`Queue`."""

    _atomic_ops = ("append", "pop")
    _init = _StdlibLifo._init
    _qsize = _StdlibLifo._qsize
    _put = _StdlibLifo._put
    _get = _StdlibLifo._get


class PriorityQueue(Queue):
    """``queue.PriorityQueue`` on the fast, cross-hub :class:`Queue` (heap order: locked)."""

    _atomic_ops = None  # heappush compares items: Python code, not one C call
    _init = _StdlibPriority._init
    _qsize = _StdlibPriority._qsize
    _put = _StdlibPriority._put
    _get = _StdlibPriority._get


class SimpleQueue:
    """``queue.SimpleQueue``: unbounded FIFO; ``put`` never blocks, ``get`` waits on any hub.

    ``put`` appends and then wakes one parked getter (:class:`_Getters`).
    """

    __slots__ = ("_items", "_getters", "_parked", "__weakref__")

    __class_getitem__: Any = classmethod(types.GenericAlias)

    def __init__(self) -> None:
        self._items: deque = deque()
        self._getters = _Getters()
        self._parked = self._getters.parked

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._items.append(item)
        if self._parked:
            self._getters.wake_one()

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block and timeout is not None and timeout < 0:  # non-blocking: ignored, as in C
            raise ValueError("'timeout' must be a non-negative number")
        try:
            return self._items.popleft()
        except IndexError:
            if not block:
                raise Empty from None
        return self._getters.wait_pop(self._items.popleft, timeout)

    def get_nowait(self) -> Any:
        return self.get(False)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")  # as the C one

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)
