"""The ``queue`` classes ``greenpool.monkey.patch_all()`` installs: the stdlib's, made fast.

:class:`Queue`, :class:`LifoQueue` and :class:`PriorityQueue` *are* the
stdlib's pure-Python classes (subclasses, with its ``mutex``, ``not_empty``,
``not_full``, ``all_tasks_done``, ``_init``/``_qsize``/``_put``/``_get`` hooks
and every method), on a cross-hub :class:`greenpool.sync.Lock`. Only the two
hot calls get a fast path: an unbounded ``put()`` and a ``get()`` that finds an
item take the lock with one C call and skip ``notify()`` when nobody waits
(which the stdlib's ``notify()`` would find out more slowly); everything that
has to wait runs the stdlib's own code. :class:`SimpleQueue` replaces the C
``_queue.SimpleQueue``, which blocks a hub's whole thread natively.
"""

from __future__ import annotations

import types
from collections import deque
from typing import TYPE_CHECKING, Any

from gevent import monkey

from greenpool.sync import Empty, Lock, _Entry, _remove

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


class Queue(_StdlibQueue):
    """``queue.Queue`` with a cross-hub lock and fast uncontended ``put``/``get``."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init(maxsize)
        self.mutex = Lock()  # type: ignore[assignment]  # a threading.Lock stand-in
        self.not_empty = _Condition(self.mutex)
        self.not_full = _Condition(self.mutex)
        self.all_tasks_done = _Condition(self.mutex)
        self.unfinished_tasks = 0

    #: True while _init/_qsize/_put/_get are the deque ones: the fast paths inline them.
    _plain = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        hooks = ("_init", "_qsize", "_put", "_get")
        cls._plain = all(getattr(cls, name) is getattr(Queue, name) for name in hooks)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if self.maxsize > 0:
            return _StdlibQueue.put(self, item, block, timeout)
        mutex: Any = self.mutex  # a greenpool Lock: its fast paths are used inline
        if not mutex._try(False):
            mutex._acquire_slow(True, -1)
        try:
            if self._plain:
                self.queue.append(item)
            else:
                self._put(item)
            self.unfinished_tasks += 1
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

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block and timeout is not None:
            return _StdlibQueue.get(self, block, timeout)  # checks the timeout first
        mutex: Any = self.mutex  # a greenpool Lock: its fast paths are used inline
        if not mutex._try(False):
            mutex._acquire_slow(True, -1)
        try:
            if self._plain:
                if self.queue:
                    item = self.queue.popleft()
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

    _init = _StdlibLifo._init
    _qsize = _StdlibLifo._qsize
    _put = _StdlibLifo._put
    _get = _StdlibLifo._get


class PriorityQueue(Queue):
    """``queue.PriorityQueue`` on the fast, cross-hub :class:`Queue`."""

    _init = _StdlibPriority._init
    _qsize = _StdlibPriority._qsize
    _put = _StdlibPriority._put
    _get = _StdlibPriority._get


class SimpleQueue:
    """``queue.SimpleQueue``: unbounded FIFO; ``put`` never blocks, ``get`` waits on any hub.

    ``put`` appends and then wakes one parked getter; a getter queues itself
    and then looks again, so one of the two always sees the other (no lost
    wake-up). A woken getter competes with newcomers, like :class:`Lock`.
    """

    __slots__ = ("_items", "_getters", "_mutex", "__weakref__")

    __class_getitem__: Any = classmethod(types.GenericAlias)

    def __init__(self) -> None:
        from greenpool._native import allocate_lock

        self._items: deque = deque()
        self._getters: deque[_Entry] = deque()
        self._mutex = allocate_lock()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._items.append(item)
        if self._getters:
            self._wake_one()

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            return self._items.popleft()
        except IndexError:
            if not block:
                raise Empty from None
        return self._get_slow(timeout)

    def get_nowait(self) -> Any:
        return self.get(False)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def _wake_one(self) -> None:
        with self._mutex:
            if not self._getters:
                return
            entry = self._getters.popleft()
        entry.waiter.wake()

    def _get_slow(self, timeout: float | None) -> Any:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        items, getters = self._items, self._getters
        woken = False
        while True:
            entry = _Entry()
            with self._mutex:
                if woken:
                    getters.appendleft(entry)
                else:
                    getters.append(entry)
                try:
                    item = items.popleft()
                except IndexError:
                    pass
                else:
                    _remove(getters, entry)
                    return item
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got = entry.waiter.wait(left)
            except BaseException:
                with self._mutex:
                    queued = _remove(getters, entry)
                if not queued and items and getters:
                    self._wake_one()  # woken while being killed: wake the next getter
                raise
            if not got:
                with self._mutex:
                    queued = _remove(getters, entry)
                try:
                    return items.popleft()  # woken just as the timeout expired, or raced
                except IndexError:
                    raise Empty from None
            try:
                return items.popleft()
            except IndexError:
                woken = True  # a newcomer took it first: queue again at the head
