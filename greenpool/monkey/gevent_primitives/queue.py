"""``gevent.queue`` across hubs: ``SimpleQueue``, ``Queue`` (``JoinableQueue``), ``UnboundQueue``,
``PriorityQueue``, ``LifoQueue`` and ``Channel``.

Getters and putters may be on any hubs or plain threads; the uncontended
put and get take no lock. With greenpool's C extension (``greenpool/_speedups_gevent.c``)
``put()`` and ``get()`` are C method descriptors that read the same slots and
call back into the Python methods below for every wait, wake-up, timeout and
shutdown (those methods are also the pure-Python twin), and a priority
queue's heap and its lock are one C object (``Heap``).
"""

from __future__ import annotations

import types
import warnings
from collections import deque
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any

import gevent
import gevent.queue as _gevent_queue
from gevent._hub_local import get_hub_if_exists
from gevent.hub import Hub as _GeventHub
from greenlet import getcurrent

from greenpool._compiled import gevent_speedups
from greenpool._native import allocate_lock
from greenpool._waiter import Entry, remove_entry
from greenpool.monkey.gevent_primitives._family import _FamilyMeta
from greenpool.monkey.gevent_primitives._parking import (
    _EMPTY,
    _check_timeout,
    _entry_wait,
    _Flag,
    _in_hub_greenlet,
    _Lot,
    _NativeRLock,
    _wait_in,
)

Empty = _gevent_queue.Empty
Full = _gevent_queue.Full
ShutDown = _gevent_queue.ShutDown

# gevent's classes, kept before install() replaces the names.
_GSimpleQueue: Any = _gevent_queue.SimpleQueue
_GQueue: Any = _gevent_queue.Queue  # JoinableQueue is the same class
_GUnboundQueue: Any = _gevent_queue.UnboundQueue
_GPriorityQueue: Any = _gevent_queue.PriorityQueue
_GLifoQueue: Any = _gevent_queue.LifoQueue
_GChannel: Any = _gevent_queue.Channel


class _Iterating:
    """gevent's queues are iterators: ``get()`` until an item is ``StopIteration``."""

    __slots__ = ()

    def __iter__(self):
        return self

    def __next__(self):
        result = self.get()
        if result is StopIteration:
            raise result
        return result

    __class_getitem__: Any = classmethod(types.GenericAlias)


class _QueueCore(_Iterating):
    """``gevent.queue.SimpleQueue``'s behaviour, for getters and putters on any hubs or threads.

    Same API and semantics as gevent's (``maxsize``, ``peek``, ``put_nowait``,
    ``Empty``/``Full``, iteration until ``StopIteration``, the ``_put``/``_get``/
    ``_peek``/``_qsize``/``_create_queue`` hooks); ``getters``/``putters`` are
    the parked callers. A FIFO or LIFO queue whose class keeps the hooks puts
    and gets without a lock (a deque's or list's ``append``/``pop`` is one C
    call, atomic under the GIL); others (priority queues, overridden hooks)
    run their hooks under a native lock. A bounded queue's free places are
    the entries of a second deque, so ``put()`` takes one atomically too.
    """

    if not TYPE_CHECKING:  # mypy: the attributes live in the concrete classes' slots
        __slots__ = ()
    _gp_order = "fifo"  # "fifo", "lifo", "heap" or "locked" (hooks under _gp_mutex)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "_gp_order" in cls.__dict__:
            return  # the class says how its hooks behave
        for hook in ("_create_queue", "_put", "_get", "_peek", "_qsize", "_init"):
            if hook in cls.__dict__:
                cls._gp_order = "locked"

    def __init__(self, maxsize=None, items=(), _warn_depth=2) -> None:
        if maxsize is not None and maxsize <= 0:
            if maxsize == 0:
                warnings.warn(
                    "Queue(0) now equivalent to Queue(None); if you want a channel, use Channel",
                    DeprecationWarning, stacklevel=_warn_depth)
            maxsize = None
        self._gp_getters = getters = _Lot()
        self._gp_parked_getters = getters.parked
        self._gp_putters = _Lot()
        self._gp_mutex = _NativeRLock()
        self._gp_heap_lock = allocate_lock()
        self._gp_shutdown = False
        self._gp_slots: deque | None = None
        self._gp_plain = True  # unbounded and not shut down: put() checks nothing
        self._gp_maxsize = -1
        if items:
            self._init(maxsize, items)
        else:
            self._init(maxsize)  # a subclass's _init may take maxsize only (gevent calls it so)
        self._gp_bind()
        self.maxsize = maxsize

    def _gp_bind(self) -> None:
        """Point the fast paths at the items container."""
        order = self._gp_order
        items = self.queue
        if order == "fifo" and type(items) is deque:
            self._gp_push = items.append
            self._gp_pop = items.popleft
        elif order in ("fifo", "lifo") and type(items) in (deque, list):
            self._gp_push = items.append
            self._gp_pop = items.pop
        elif order == "heap" and type(items) is list and gevent_speedups is not None:
            heap = gevent_speedups.Heap(items)  # its lock serves peek() too
            self._gp_heap_lock = heap
            self._gp_push = heap.push
            self._gp_pop = heap.pop
        elif order == "heap" and type(items) is list:
            self._gp_push = self._gp_heap_push
            self._gp_pop = self._gp_heap_pop
        else:
            self._gp_push = self._gp_locked_put
            self._gp_pop = self._gp_locked_get

    # The hooks gevent documents for subclasses.
    def _init(self, maxsize, items=()) -> None:
        self.queue = self._create_queue(items)

    def _create_queue(self, items=()):
        return deque(items)

    def _put(self, item) -> None:
        self.queue.append(item)

    def _get(self):
        return self.queue.popleft()

    def _peek(self):
        return self.queue[0]

    def _qsize(self) -> int:
        return len(self.queue)

    def _gp_locked_put(self, item) -> None:
        with self._gp_mutex:
            self._put(item)

    def _gp_locked_get(self):
        with self._gp_mutex:
            if not self._qsize():
                raise IndexError("empty")
            return self._get()

    def _gp_heap_push(self, item) -> None:
        # Comparisons may run Python code (and switch threads): under a lock.
        with self._gp_heap_lock:
            heappush(self.queue, item)

    def _gp_heap_pop(self):
        with self._gp_heap_lock:
            return heappop(self.queue)  # IndexError when empty

    def _gp_peek(self):
        if self._gp_order in ("fifo", "lifo"):
            return self._peek()
        with self._gp_heap_lock if self._gp_order == "heap" else self._gp_mutex:
            if not self._qsize():
                raise IndexError("empty")
            return self._peek()

    # -- size ----------------------------------------------------------------

    @property
    def maxsize(self):
        return self._gp_maxsize if self._gp_maxsize > 0 else None

    @maxsize.setter
    def maxsize(self, value) -> None:
        new = -1 if value is None or value <= 0 else value
        with self._gp_mutex:
            old = self._gp_maxsize
            if new == old:
                return
            self._gp_maxsize = new
            if new == -1:
                self._gp_slots = None
            elif self._gp_slots is None:
                self._gp_slots = deque([None] * max(0, new - self.qsize()))
            elif new > old:
                self._gp_slots.extend([None] * (new - old))
            else:
                for _ in range(old - new):
                    try:
                        self._gp_slots.pop()
                    except IndexError:
                        break
            self._gp_plain = self._gp_slots is None and not self._gp_shutdown
        self._gp_putters.wake_all()  # the bound changed: let them look again

    def qsize(self) -> int:
        return self._qsize()

    def __len__(self) -> int:
        return self._qsize()

    def __bool__(self) -> bool:
        return True

    def empty(self) -> bool:
        return not self._qsize()

    def full(self) -> bool:
        return self._gp_maxsize > 0 and self._qsize() >= self._gp_maxsize

    @property
    def getters(self) -> deque:
        return self._gp_getters.parked

    @property
    def putters(self) -> deque:
        return self._gp_putters.parked

    @property
    def hub(self):
        return None  # owned by no hub

    @property
    def is_shutdown(self) -> bool:
        return self._gp_shutdown

    def copy(self):
        return type(self)(self.maxsize, self.queue)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {hex(id(self))}{self._format()}>"

    def __str__(self) -> str:
        return f"<{type(self).__name__}{self._format()}>"

    def _format(self) -> str:
        result = []
        if self.maxsize is not None:
            result.append(f"maxsize={self.maxsize!r}")
        if getattr(self, "queue", None):
            result.append(f"queue={self.queue!r}")
        if self.getters:
            result.append(f"getters[{len(self.getters)}]")
        if self.putters:
            result.append(f"putters[{len(self.putters)}]")
        return " " + " ".join(result) if result else ""

    # -- put/get ---------------------------------------------------------------

    def put(self, item, block=True, timeout=None) -> None:
        """Put ``item``; if the queue is full, wait for room (``timeout``) or raise ``Full``."""
        if not self._gp_plain or timeout is not None:
            self._gp_before_put(block, timeout)
        self._gp_push(item)
        if self._gp_parked_getters:
            self._gp_getters.wake_one()

    def _gp_before_put(self, block, timeout) -> None:
        """A put's checks when the queue is bounded or shut down, or a timeout is given."""
        if self._gp_shutdown:
            raise ShutDown
        if timeout is not None:
            _check_timeout(block, timeout)
        slots = self._gp_slots
        if slots is not None:
            try:
                slots.pop()
            except IndexError:
                self._gp_wait_room(slots, block, timeout)

    def _gp_wait_room(self, slots: deque, block, timeout) -> None:
        if not block or _in_hub_greenlet():
            raise Full

        def take():
            if self._gp_shutdown:
                raise ShutDown
            if slots:
                try:
                    return slots.pop()
                except IndexError:  # raced
                    pass
            return _EMPTY

        if _wait_in(self._gp_putters, take, timeout) is _EMPTY:
            raise Full

    def put_nowait(self, item) -> None:
        self.put(item, False)

    def get(self, block=True, timeout=None):
        """Remove and return an item; wait for one (``timeout``) or raise ``Empty``."""
        try:
            item = self._gp_pop()
        except IndexError:
            item = self._gp_wait_item(self._gp_pop, block, timeout)
        slots = self._gp_slots
        if slots is not None:  # bounded: give the place back, wake a putter waiting for it
            slots.append(None)
            if self._gp_putters.parked:
                self._gp_putters.wake_one()
        return item

    def _gp_wait_item(self, take, block, timeout):
        if self._gp_shutdown:
            raise ShutDown
        _check_timeout(block, timeout)
        if not block or _in_hub_greenlet():
            raise Empty

        def checked():
            if self._qsize():
                try:
                    return take()
                except IndexError:  # raced
                    pass
            if self._gp_shutdown:
                raise ShutDown
            return _EMPTY

        item = _wait_in(self._gp_getters, checked, timeout)
        if item is _EMPTY:
            raise Empty
        return item

    def get_nowait(self):
        return self.get(False)

    def peek(self, block=True, timeout=None):
        """Return the next item without removing it; wait for one like :meth:`get`."""
        try:
            return self._gp_peek()
        except IndexError:
            pass
        item = self._gp_wait_item(self._gp_peek, block, timeout)
        # It woke for an item it did not take: the next getter may take it.
        if self._gp_parked_getters and self._qsize():
            self._gp_getters.wake_one()
        return item

    def peek_nowait(self):
        return self.peek(False)


_QUEUE_SLOTS = (
    "_gp_getters", "_gp_parked_getters", "_gp_putters", "_gp_mutex", "_gp_heap_lock",
    "_gp_shutdown", "_gp_slots", "_gp_plain", "_gp_maxsize", "_gp_push", "_gp_pop",
)


class SimpleQueue(_QueueCore, _GSimpleQueue, metaclass=_FamilyMeta):
    __doc__ = _QueueCore.__doc__
    __slots__ = _QUEUE_SLOTS


class _JoinableCore(_QueueCore):
    """``gevent.queue.Queue`` (alias ``JoinableQueue``) across hubs, with ``task_done``/``join``.

    ``unfinished_tasks`` is counted by single C calls (one entry per put in a
    deque), so puts and ``task_done()`` on different hubs never lose a count.
    """

    if not TYPE_CHECKING:  # mypy: the attributes live in the concrete classes' slots
        __slots__ = ()

    def __init__(self, maxsize=None, items=(), unfinished_tasks=None) -> None:
        self._gp_tasks: deque = deque()
        self._gp_joiners = _Flag()
        _QueueCore.__init__(self, maxsize, items, _warn_depth=3)
        count = unfinished_tasks if unfinished_tasks else len(items) if items else 0
        self._gp_tasks.extend([None] * count)

    def copy(self):
        return type(self)(self.maxsize, self.queue, self.unfinished_tasks)

    def _format(self) -> str:
        result = _QueueCore._format(self)
        if self.unfinished_tasks:
            result += f" tasks={self.unfinished_tasks}"
        return result

    @property
    def unfinished_tasks(self) -> int:
        return len(self._gp_tasks)

    def put(self, item, block=True, timeout=None) -> None:
        # _QueueCore.put, counting the task before the item can be got (the hot path).
        if not self._gp_plain or timeout is not None:
            self._gp_before_put(block, timeout)
        self._gp_tasks.append(None)
        self._gp_push(item)
        if self._gp_parked_getters:
            self._gp_getters.wake_one()

    def task_done(self) -> None:
        """Mark one item got earlier as processed; ``ValueError`` if called too often."""
        tasks = self._gp_tasks
        try:
            tasks.pop()
        except IndexError:
            raise ValueError("task_done() called too many times") from None
        if not tasks and self._gp_joiners.waiters:
            self._gp_joiners.wake_all()

    def join(self, timeout=None) -> bool:
        """Wait until every item put has been marked done; False if ``timeout`` expires first."""
        if not self._gp_tasks:
            return True
        return self._gp_joiners.wait(self._gp_all_done, timeout) or not self._gp_tasks

    def _gp_all_done(self) -> bool:
        return not self._gp_tasks

    def shutdown(self, immediate=False) -> None:
        """Make puts raise ``ShutDown``, and gets once empty (at once if ``immediate``)."""
        self._gp_shutdown = True
        self._gp_plain = False
        if immediate:
            while True:
                try:
                    self._gp_pop()
                except IndexError:
                    break
                if self._gp_slots is not None:
                    self._gp_slots.append(None)
                self.task_done()
        self._gp_getters.wake_all()
        self._gp_putters.wake_all()


class Queue(_JoinableCore, _GQueue, metaclass=_FamilyMeta):
    __doc__ = _JoinableCore.__doc__
    __slots__ = (*_QUEUE_SLOTS, "_gp_tasks", "_gp_joiners")


JoinableQueue = Queue


class UnboundQueue(Queue, _GUnboundQueue):
    """``gevent.queue.UnboundQueue`` across hubs: never full."""

    __slots__ = ()

    def __init__(self, maxsize=None, items=()) -> None:
        if maxsize is not None:
            raise ValueError("UnboundQueue has no maxsize")
        Queue.__init__(self, maxsize, items)


class PriorityQueue(Queue, _GPriorityQueue):
    """``gevent.queue.PriorityQueue`` across hubs (lowest first; its heap runs under a lock)."""

    __slots__ = ()
    _gp_order = "heap"

    def _create_queue(self, items=()):
        q = list(items)
        heapify(q)
        return q

    def _put(self, item) -> None:
        heappush(self.queue, item)

    def _get(self):
        return heappop(self.queue)

    def _peek(self):
        return self.queue[0]


class LifoQueue(Queue, _GLifoQueue):
    """``gevent.queue.LifoQueue`` across hubs (newest first)."""

    __slots__ = ()
    _gp_order = "lifo"

    def _create_queue(self, items=()):
        return list(items)

    def _get(self):
        return self.queue.pop()

    def _peek(self):
        return self.queue[-1]


SimpleQueue._gp_family = (Queue,)  # gevent's Queue subclasses its SimpleQueue

if gevent_speedups is not None:  # the same put/get in C (see the module's docstring)
    gevent_speedups.configure_queue(Empty, ShutDown, getcurrent, _GeventHub)
    SimpleQueue.put, SimpleQueue.get = (  # type: ignore[method-assign]
        gevent_speedups.queue_methods(SimpleQueue, False))
    Queue.put, Queue.get = gevent_speedups.queue_methods(Queue, True)  # type: ignore[method-assign]


class Channel(_Iterating, _GChannel):
    """``gevent.queue.Channel`` across hubs: ``put`` waits until a getter takes the item."""

    def __init__(self, maxsize=1) -> None:
        if maxsize != 1:
            raise ValueError("Channels have a maxsize of 1")
        self._gp_mutex = allocate_lock()
        self._gp_getters: deque[Entry] = deque()  # entry.value: the item handed over
        self._gp_putters: deque[Entry] = deque()  # entry.value: the item offered

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {hex(id(self))} {self._format()}>"

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self._format()}>"

    def _format(self) -> str:
        result = ""
        if self._gp_getters:
            result += f" getters[{len(self._gp_getters)}]"
        if self._gp_putters:
            result += f" putters[{len(self._gp_putters)}]"
        return result

    @property
    def getters(self) -> deque:
        return self._gp_getters

    @property
    def putters(self) -> deque:
        return self._gp_putters

    @property
    def hub(self):
        return None

    @property
    def balance(self) -> int:
        return len(self._gp_putters) - len(self._gp_getters)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def full(self) -> bool:
        return True

    def put(self, item, block=True, timeout=None) -> None:
        with self._gp_mutex:
            if self._gp_getters:
                getter = self._gp_getters.popleft()
                getter.value = (item,)
            elif not block or _in_hub_greenlet():
                raise Full
            else:
                getter = None
                entry = Entry((item,))
                self._gp_putters.append(entry)
        if getter is not None:
            getter.waiter.wake()
            # gevent's put always waits for its hub, which runs the getter first.
            if get_hub_if_exists() is not None and not _in_hub_greenlet():
                gevent.sleep(0)
            return
        try:
            if _entry_wait(entry, timeout):
                return
        except BaseException:
            with self._gp_mutex:
                remove_entry(self._gp_putters, entry)
            raise  # if a getter took it already, it is delivered: nothing to undo
        with self._gp_mutex:
            if remove_entry(self._gp_putters, entry):
                raise Full

    def put_nowait(self, item) -> None:
        self.put(item, False)

    def get(self, block=True, timeout=None):
        with self._gp_mutex:
            if self._gp_putters:
                putter = self._gp_putters.popleft()
                item = putter.value[0]
                putter.value = None
            elif not block or _in_hub_greenlet():
                raise Empty
            else:
                putter = None
                entry = Entry()
                self._gp_getters.append(entry)
        if putter is not None:
            putter.waiter.wake()
            return item
        try:
            got = _entry_wait(entry, timeout)
        except BaseException:
            with self._gp_mutex:
                if remove_entry(self._gp_getters, entry):
                    raise
            self._gp_give_back(entry.value[0])  # handed an item while being killed
            raise
        if not got:
            with self._gp_mutex:
                if remove_entry(self._gp_getters, entry):
                    raise Empty
        value, entry.value = entry.value, None
        return value[0]

    def _gp_give_back(self, item) -> None:
        """An item a dying getter was handed goes to the next getter, or waits as an offer."""
        with self._gp_mutex:
            if self._gp_getters:
                getter = self._gp_getters.popleft()
                getter.value = (item,)
            else:
                offer: Any = Entry.__new__(Entry)
                offer.waiter, offer.value, offer.place = _NoWaiter, (item,), None
                self._gp_putters.appendleft(offer)
                return
        getter.waiter.wake()

    def get_nowait(self):
        return self.get(False)


class _NoWaiterType:
    """The waiter of an offer nobody waits for (an item passed on by a killed getter)."""

    def wake(self) -> None:
        pass

    def wait(self, timeout=None) -> bool:
        return True


_NoWaiter = _NoWaiterType()
