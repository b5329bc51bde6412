"""gevent's own queues, events, locks, pools and greenlet joins, made to work across hubs.

Libraries that ship a gevent driver (python-engineio's gevent mode, which
Flask-SocketIO picks when gevent is installed) use ``gevent.queue``,
``gevent.event`` and ``gevent.lock`` directly, not the stdlib names
:mod:`greenpool.monkey.sync` patches. gevent's classes belong to one hub: a
``JoinableQueue`` getter on hub 0 was never woken by a put on hub 1 (gevent
asserted "Can only use Waiter.switch method from the Hub greenlet"), an
``Event`` waited on by two hubs raised ``InvalidThreadUseError``, and a
``Greenlet.join()`` from another hub tried to switch into a foreign thread.

**Why replacement classes, not gevent's classes fixed in place.** gevent's
classes are compiled Cython types: immutable (no attribute can be set on
them, no object's ``__class__`` changed), their internals are ``cdef``
methods called in C, and they ``cimport`` their ``Waiter`` and
``getcurrent``, so nothing reachable from Python can redirect a wake-up.
Making them cross-hub in place would mean forcing gevent's pure-Python mode
(chosen before gevent is imported, i.e. before ``import greenpool``, and
several times slower on every hub-local operation) or rewriting C type flags.
So :func:`install` puts subclasses in the modules' names instead
(``gevent.queue.JoinableQueue``, ``gevent.event.Event``, ``gevent.spawn``...),
and then rebinds module-level references to the old classes in modules
already imported (``from gevent.queue import Queue`` done before
``patch_all()``, ``gevent.pool``'s own imports; :func:`_rebind_module_globals`
says where not) and ``gevent.pool.Group``'s ``greenlet_class``. Being
subclasses, they pass ``isinstance`` checks against gevent's classes (and
:class:`_FamilyMeta` keeps gevent's tree: a ``Queue`` is a ``SimpleQueue``),
and classes that subclass them after patching (engineio's
``Thread(gevent.Greenlet)``) inherit the cross-hub methods.
What cannot be reached: objects made before ``patch_all()`` and classes
defined by subclassing gevent's before it; both stay one-hub objects.

**How they wake across hubs.** The queues, events and semaphores keep their
state in structures whose hot operations are single C calls, atomic under the
GIL (a deque's ``append``/``pop``), so the uncontended same-hub path takes no
lock (``benchmarks/gevent_primitives.py`` compares it with gevent's). Only a
caller that must wait parks, through :func:`greenpool._waiter.make_waiter`:
on its own pool hub (woken through that hub's thread-safe mailbox), on a
foreign gevent hub (an ``async_`` watcher) or natively in a plain thread. A
waiter parks first and then looks again, a waker changes the state first and
then looks for parked waiters, so one always sees the other: no lost
wake-ups. A woken waiter competes with newcomers, as on one gevent hub.

``rawlink`` callbacks run in the hub of the greenlet that registered them
(gevent: "in the hub"), so ``gevent.wait``/``iwait`` and ``AsyncResult``
links work across hubs too. A :class:`Greenlet` joined, got, linked or
killed from another hub asks its own hub (through the pool hub's mailbox) to
register the link; the result is delivered back the same way.
``gevent.pool.Group``'s bookkeeping gets a lock, so a ``join()`` on one hub
is not released early by greenlets added on another as others finish.
"""

from __future__ import annotations

import sys
import time
import types
import warnings
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event as _gevent_event
import gevent.greenlet as _gevent_greenlet
import gevent.lock as _gevent_lock
import gevent.pool as _gevent_pool
import gevent.queue as _gevent_queue
from gevent import monkey
from gevent._hub_local import get_hub_if_exists
from gevent._tblib import dump_traceback, load_traceback
from gevent._util import _NONE as _GEVENT_NONE
from gevent.hub import Hub as _GeventHub
from gevent.timeout import Timeout
from greenlet import GreenletExit, getcurrent

from greenpool._native import allocate_lock, get_ident
from greenpool.errors import WrongHubError
from greenpool.sync import _Entry, _remove

__all__ = [
    "AsyncResult",
    "BoundedSemaphore",
    "Channel",
    "Event",
    "Greenlet",
    "JoinableQueue",
    "LifoQueue",
    "PriorityQueue",
    "Queue",
    "Semaphore",
    "SimpleQueue",
    "UnboundQueue",
    "install",
    "installed",
]

Empty = _gevent_queue.Empty
Full = _gevent_queue.Full
ShutDown = _gevent_queue.ShutDown
_NativeRLock = monkey.get_original("_thread", "RLock")

# gevent's classes, kept before install() replaces the names.
_GSimpleQueue: Any = _gevent_queue.SimpleQueue
_GQueue: Any = _gevent_queue.Queue  # JoinableQueue is the same class
_GUnboundQueue: Any = _gevent_queue.UnboundQueue
_GPriorityQueue: Any = _gevent_queue.PriorityQueue
_GLifoQueue: Any = _gevent_queue.LifoQueue
_GChannel: Any = _gevent_queue.Channel
_GEvent: Any = _gevent_event.Event
_GAsyncResult: Any = _gevent_event.AsyncResult
_GSemaphore: Any = _gevent_lock.Semaphore
_GBoundedSemaphore: Any = _gevent_lock.BoundedSemaphore
_GGreenlet: Any = _gevent_greenlet.Greenlet

_NONE = object()


# -- parking and posting ---------------------------------------------------------


class _Lot:
    """Callers parked until ``take()`` succeeds; never a lost wake-up.

    The waker changes the state (appends an item, a permit) and *then* looks
    for parked callers; a caller parks and *then* tries ``take()`` again, so
    one of the two always sees the other. A woken caller competes with
    newcomers, as on one gevent hub; one that loses parks again at the head.
    ``take()`` returns ``_EMPTY`` for "not yet"; anything it raises (a
    shut-down queue) ends the wait with that exception.
    """

    __slots__ = ("parked", "_mutex")

    def __init__(self) -> None:
        self.parked: deque[_Entry] = deque()
        # Reentrant: a put() may run inside wait()'s critical section on the
        # same thread (a __del__ or weakref callback during a GC run there).
        self._mutex = _NativeRLock()

    def wake_one(self) -> None:
        with self._mutex:
            if not self.parked:
                return
            entry = self.parked.popleft()
        entry.waiter.wake()

    def wake_all(self) -> None:
        with self._mutex:
            entries = list(self.parked)
            self.parked.clear()
        for entry in entries:
            entry.waiter.wake()


#: What a ``take()`` returns for "not yet", and :func:`_lot_wait` once its timeout expires.
_EMPTY = object()


def _lot_wait(lot: _Lot, take: Callable[[], Any], timeout: float | None) -> Any:
    """Park in ``lot`` until ``take()`` succeeds; its result, or ``_EMPTY`` on timeout.

    ``take()`` returns ``_EMPTY`` for "not yet" (no exception: raising one
    costs more than the rest of a park).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    parked = lot.parked
    mutex = lot._mutex
    woken = False
    while True:
        entry = _Entry()
        with mutex:
            if woken:
                parked.appendleft(entry)
            else:
                parked.append(entry)
            try:
                got = take()
            except BaseException:
                _remove(parked, entry)
                raise
            if got is not _EMPTY:
                _remove(parked, entry)
                return got
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            woke = entry.waiter.wait(left)
        except BaseException:
            with mutex:
                queued = _remove(parked, entry)
            if not queued and parked:
                lot.wake_one()  # woken while being killed: pass it on
            raise
        if not woke:
            with mutex:
                queued = _remove(parked, entry)
            got = take()  # woken just as the timeout expired, or raced
            if got is _EMPTY and not queued and parked:
                lot.wake_one()
            return got
        got = take()
        if got is not _EMPTY:
            return got
        woken = True  # a newcomer took it first: park again at the head


def _in_hub_greenlet() -> bool:
    """True in a hub's own greenlet (a loop callback), where gevent never blocks."""
    return isinstance(getcurrent(), _GeventHub)


class _Flag:
    """Broadcast waiters of a one-way condition (an Event's flag, an AsyncResult's value).

    ``pending`` holds one token per waiter woken and not yet resumed: a
    ``wait()`` that finds the event already set while some are pending
    yields once first, so it runs after them (gevent issue #1520's order).
    """

    __slots__ = ("waiters", "mutex", "pending")

    def __init__(self) -> None:
        self.waiters: deque[_Entry] = deque()
        self.mutex = allocate_lock()
        self.pending: deque = deque()

    def wake_all(self) -> None:
        with self.mutex:
            waiters, self.waiters = self.waiters, deque()
            self.pending.extend([None] * len(waiters))
        for entry in waiters:
            entry.waiter.wake()

    def yield_to_woken(self) -> None:
        """In a greenlet, let the waiters a notification woke run first (see above)."""
        if self.pending and get_hub_if_exists() is not None and not _in_hub_greenlet():
            gevent.sleep(0)

    def wait(self, ready: Callable[[], Any], timeout) -> bool:
        """Park until woken (True) or ``timeout`` (False); ``ready()`` is checked after parking.

        ``timeout`` may be a ``gevent.Timeout``: started here, it ends the wait
        with False when it expires (its custom exception, if it has one, is raised).
        """
        if isinstance(timeout, Timeout):
            if not timeout.pending:
                timeout.start()
            try:
                return self.wait(ready, None)
            except Timeout as exc:
                if exc is not timeout:
                    raise
                return False
            finally:
                timeout.cancel()
        mutex = self.mutex
        with mutex:
            entry = _Entry()
            self.waiters.append(entry)
            if ready():
                self.waiters.remove(entry)
                return True
        woken = False
        try:
            woken = entry.waiter.wait(timeout)
        finally:
            if not woken:
                with mutex:
                    woken = not _remove(self.waiters, entry)
            if woken:
                try:
                    self.pending.pop()
                except IndexError:
                    pass
        return woken


class _HubMailbox:
    """Calls run in one gevent hub that greenpool does not own (the main thread's, say).

    Made in that hub's thread, the first time something there registers a
    link; its ``async_`` watcher is the one libev object safe to signal from
    another thread (gevent issue #1489). Unref'd: it never keeps the loop alive.
    """

    __slots__ = ("_hub", "_ident", "_calls", "_lock", "_watcher")

    def __init__(self, hub) -> None:
        self._hub = hub
        self._ident = get_ident()
        self._calls: deque = deque()
        self._lock = allocate_lock()
        self._watcher = hub.loop.async_(ref=False)
        self._watcher.start(self._drain)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        if get_ident() == self._ident:
            self._hub.loop.run_callback(fn, *args)
            return
        self._calls.append((fn, args))
        with self._lock:
            if self._watcher is not None:
                self._watcher.send()

    def _drain(self) -> None:
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - reported like a loop callback's error
                self._hub.handle_error(fn, *sys.exc_info())


def _post_for(hub) -> Callable[..., Any] | None:
    """How to run a call in ``hub``'s thread from any thread, or None if nothing can."""
    if hub is None:
        return None
    pool_hub = getattr(hub, "greenpool_hub", None)
    if pool_hub is not None:
        return pool_hub.call_soon_threadsafe
    mailbox = getattr(hub, "_greenpool_mailbox", None)
    return None if mailbox is None else mailbox.post


def _post_here() -> Callable[..., Any] | None:
    """How to run a call later in the calling thread's hub (None: a plain thread)."""
    hub = get_hub_if_exists()
    if hub is None or hub.loop is None:
        return None
    post = _post_for(hub)
    if post is None:
        hub._greenpool_mailbox = mailbox = _HubMailbox(hub)
        post = mailbox.post
    return post


class _Links:
    """``rawlink`` callbacks, each run in the hub of the greenlet that registered it.

    A notification moves the links to ``firing`` and posts each to its hub;
    a link unlinked before its turn (by an earlier callback, say) is not
    called, and counts in ``linkcount()`` until it runs, as in gevent.
    ``notify_all`` is False for semaphores: a callback runs only while the
    semaphore is ready, else it stays registered (gevent's rule).
    """

    __slots__ = ("owner", "links", "firing", "mutex", "notify_all")

    def __init__(self, owner, notify_all: bool = True) -> None:
        self.owner = owner
        self.links: list = []  # [callback, post] pairs (lists: compared by identity below)
        self.firing: list = []
        self.mutex = allocate_lock()
        self.notify_all = notify_all

    def __len__(self) -> int:
        return len(self.links) + len(self.firing)

    def add(self, callback: Callable[[Any], Any]) -> None:
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        post = _post_here()
        with self.mutex:
            self.links.append([callback, post])
        if self.owner.ready():
            self.notify()

    def remove(self, callback) -> None:
        with self.mutex:
            for queue in (self.links, self.firing):
                for i, link in enumerate(queue):
                    if link[0] == callback:
                        del queue[i]
                        return

    def notify(self) -> None:
        with self.mutex:
            links, self.links = self.links, []
            self.firing.extend(links)
        for link in links:
            post = link[1]
            if post is None:  # registered from a plain thread: run here and now
                self._call(link)
            else:
                post(self._call, link)

    def _call(self, link: list) -> None:
        with self.mutex:
            for i, pending in enumerate(self.firing):
                if pending is link:
                    del self.firing[i]
                    break
            else:
                return  # unlinked meanwhile
            requeue = not self.notify_all and not self.owner.ready()
            if requeue:
                self.links.append(link)  # not ready now: wait for the next release
        if requeue:
            if self.owner.ready():
                self.notify()
            return
        link[0](self.owner)


def _timeout_error(seconds: float | None = None) -> Timeout:
    """A ``gevent.Timeout`` to raise, made without a timer (no hub needed in a plain thread)."""
    error = Timeout()
    error.seconds = seconds
    return error


def _check_timeout(block: bool, timeout) -> None:
    if block and timeout is not None and not isinstance(timeout, Timeout) and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _entry_wait(entry: _Entry, timeout) -> bool:
    """``entry.waiter.wait(timeout)``; ``timeout`` may be a ``gevent.Timeout`` (see _wait_in)."""
    if not isinstance(timeout, Timeout):
        return entry.waiter.wait(timeout)
    if not timeout.pending:
        timeout.start()
    try:
        return entry.waiter.wait(None)
    finally:
        timeout.cancel()


def _wait_in(lot: _Lot, take: Callable[[], Any], timeout) -> Any:
    """:func:`_lot_wait`; ``timeout`` may also be a ``gevent.Timeout``, as gevent's queues allow.

    Such a timeout is started (if it is not) and raised into the waiter when
    it expires, instead of ``Empty``/``Full``; it is cancelled after the wait.
    """
    if not isinstance(timeout, Timeout):
        return _lot_wait(lot, take, timeout)
    if not timeout.pending:
        timeout.start()
    try:
        return _lot_wait(lot, take, None)
    finally:
        timeout.cancel()


# -- gevent.queue --------------------------------------------------------------


class _FamilyMeta(type):
    """Keeps gevent's class tree visible to ``isinstance``/``issubclass``.

    In gevent, ``Queue`` subclasses ``SimpleQueue`` and ``BoundedSemaphore``
    subclasses ``Semaphore``. Here each class needs ``__slots__`` (attributes
    in an instance ``__dict__`` of a Cython subclass cost ~7 ns per access
    on the hot paths), and two slotted subclasses of different gevent bases
    cannot be combined, so the family tree is declared instead: ``family``
    names the classes that count as subclasses.
    """

    def __instancecheck__(cls, obj) -> bool:
        return cls.__subclasscheck__(type(obj))

    def __subclasscheck__(cls, sub) -> bool:
        if type.__subclasscheck__(cls, sub):
            return True
        return any(
            isinstance(member, type) and type.__subclasscheck__(member, sub)
            for member in cls.__dict__.get("_gp_family", ())
        )


class _QueueCore:
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

    def __iter__(self):
        return self

    def __next__(self):
        result = self.get()
        if result is StopIteration:
            raise result
        return result

    __class_getitem__: Any = classmethod(types.GenericAlias)


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


class Channel(_GChannel):
    """``gevent.queue.Channel`` across hubs: ``put`` waits until a getter takes the item."""

    def __init__(self, maxsize=1) -> None:
        if maxsize != 1:
            raise ValueError("Channels have a maxsize of 1")
        self._gp_mutex = allocate_lock()
        self._gp_getters: deque[_Entry] = deque()  # entry.value: the item handed over
        self._gp_putters: deque[_Entry] = deque()  # entry.value: the item offered

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
                entry = _Entry((item,))
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
                _remove(self._gp_putters, entry)
            raise  # if a getter took it already, it is delivered: nothing to undo
        with self._gp_mutex:
            if _remove(self._gp_putters, entry):
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
                entry = _Entry()
                self._gp_getters.append(entry)
        if putter is not None:
            putter.waiter.wake()
            return item
        try:
            got = _entry_wait(entry, timeout)
        except BaseException:
            with self._gp_mutex:
                if _remove(self._gp_getters, entry):
                    raise
            self._gp_give_back(entry.value[0])  # handed an item while being killed
            raise
        if not got:
            with self._gp_mutex:
                if _remove(self._gp_getters, entry):
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
                offer: Any = _Entry.__new__(_Entry)
                offer.waiter, offer.value, offer.place = _NoWaiter, (item,), None
                self._gp_putters.appendleft(offer)
                return
        getter.waiter.wake()

    def get_nowait(self):
        return self.get(False)

    def __iter__(self):
        return self

    def __next__(self):
        result = self.get()
        if result is StopIteration:
            raise result
        return result

    __class_getitem__: Any = classmethod(types.GenericAlias)


class _NoWaiterType:
    """The waiter of an offer nobody waits for (an item passed on by a killed getter)."""

    def wake(self) -> None:
        pass

    def wait(self, timeout=None) -> bool:
        return True


_NoWaiter = _NoWaiterType()


# -- gevent.event --------------------------------------------------------------

_lazy_lock = allocate_lock()


def _make_flag(obj) -> _Flag:
    """``obj``'s waiter list, made on first use (most events are set before anyone waits)."""
    with _lazy_lock:
        flag = obj._gp_waiters
        if flag is None:
            obj._gp_waiters = flag = _Flag()
    return flag


def _make_links(obj, notify_all: bool = True) -> _Links:
    """``obj``'s rawlink callbacks, made on first use."""
    with _lazy_lock:
        links = obj._gp_links
        if links is None:
            obj._gp_links = links = _Links(obj, notify_all)
    return links


class _Linkable:
    """The ``rawlink`` protocol for the classes below (``_gp_links`` made on first use)."""

    if not TYPE_CHECKING:  # mypy: the attributes live in the concrete classes' slots
        __slots__ = ()
    else:
        _gp_links: _Links | None
        _gp_waiters: _Flag | None

        def ready(self) -> bool:
            raise NotImplementedError

    @property
    def hub(self):
        return None  # owned by no hub

    def linkcount(self) -> int:
        """Links not yet called, and waiters parked (gevent counts both)."""
        links, waiters = self._gp_links, self._gp_waiters
        parked = 0 if waiters is None else len(waiters.waiters)
        return (0 if links is None else len(links)) + parked

    def rawlink(self, callback) -> None:
        """Call ``callback(self)`` in the registering greenlet's hub once this is ready."""
        links = self._gp_links or _make_links(self, self._gp_notify_all)
        links.add(callback)

    def unlink(self, callback) -> None:
        links = self._gp_links
        if links is not None:
            links.remove(callback)

    def _gp_notify(self) -> None:
        waiters = self._gp_waiters
        if waiters is not None and waiters.waiters:
            waiters.wake_all()
        links = self._gp_links
        if links is not None and links.links:
            links.notify()

    def _gp_wait(self, timeout) -> bool:
        if self.ready():
            return True
        flag = self._gp_waiters or _make_flag(self)
        return flag.wait(self.ready, timeout)

    _gp_notify_all = True


class Event(_Linkable, _GEvent):
    """``gevent.event.Event`` that greenlets on any hubs, and plain threads, may wait on.

    ``set()`` wakes every waiter wherever it is; ``wait()`` returns True if it
    was woken by ``set()`` (even if cleared since), False on timeout, as gevent's.
    """

    __slots__ = ("_gp_flag", "_gp_waiters", "_gp_links")

    def __init__(self) -> None:
        self._gp_flag = False
        self._gp_waiters = None
        self._gp_links = None

    def __str__(self) -> str:
        return (f"<{type(self).__module__}.{type(self).__name__} at 0x{id(self):x} "
                f"{'set' if self._gp_flag else 'clear'} _links[{self.linkcount()}]>")

    def is_set(self) -> bool:
        return self._gp_flag

    isSet = is_set
    ready = is_set

    def set(self) -> None:
        """Set the flag; wake every waiter and run the links."""
        self._gp_flag = True
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()

    def clear(self) -> None:
        self._gp_flag = False

    def wait(self, timeout=None) -> bool:
        """Wait until the flag is set; True if it was, False if ``timeout`` expired first."""
        if self._gp_flag:
            waiters = self._gp_waiters
            if waiters is not None and waiters.pending:
                waiters.yield_to_woken()
            return True
        return self._gp_wait(timeout)

    def _reset_internal_locks(self) -> None:
        pass

    def _at_fork_reinit(self) -> None:
        self._gp_waiters = None
        self._gp_links = None


class AsyncResult(_Linkable, _GAsyncResult):
    """``gevent.event.AsyncResult`` that greenlets on any hubs, and plain threads, may wait on."""

    __slots__ = ("_gp_value", "_gp_exc_info", "_gp_waiters", "_gp_links", "_gp_imap_index")

    def __init__(self) -> None:
        self._gp_value = _NONE
        self._gp_exc_info: tuple = ()
        self._gp_waiters = None
        self._gp_links = None
        self._gp_imap_index = -1

    def __str__(self) -> str:
        result = f"<{type(self).__name__} at 0x{id(self):x} "
        if self._gp_value is not _NONE:
            result += f"value={self.value!r} "
        elif self._gp_exc_info:
            result += f"exception={self.exception!r} "
        else:
            result += "unset "
        return result + f"_links[{self.linkcount()}]>"

    __repr__ = __str__

    @property
    def _imap_task_index(self) -> int:  # gevent's imap bookkeeping
        return self._gp_imap_index

    @_imap_task_index.setter
    def _imap_task_index(self, value: int) -> None:
        self._gp_imap_index = value

    @property
    def value(self):
        return self._gp_value if self._gp_value is not _NONE else None

    @property
    def _value(self):
        return self._gp_value if self._gp_value is not _NONE else _GEVENT_NONE

    @property
    def _exc_info(self) -> tuple:
        return self._gp_exc_info

    @property
    def exc_info(self) -> tuple:
        exc_info = self._gp_exc_info
        if exc_info:
            return (exc_info[0], exc_info[1], load_traceback(exc_info[2]))
        return ()

    @property
    def exception(self):
        return self._gp_exc_info[1] if self._gp_exc_info else None

    def ready(self) -> bool:
        return self._gp_value is not _NONE or bool(self._gp_exc_info)

    def successful(self) -> bool:
        return self._gp_value is not _NONE

    def done(self) -> bool:
        return self.ready()

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def set(self, value=None) -> None:
        """Store ``value``; wake every waiter and run the links."""
        self._gp_value = value
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()

    def set_exception(self, exception, exc_info=None) -> None:
        """Store ``exception`` (raised by ``get()``); wake every waiter and run the links."""
        if exc_info:
            self._gp_exc_info = (exc_info[0], exc_info[1], dump_traceback(exc_info[2]))
        else:
            self._gp_exc_info = (type(exception), exception, dump_traceback(None))
        self._gp_notify()

    def _raise_exception(self):
        exc_type, exc, tb = self.exc_info
        if exc is None:
            exc = exc_type()
        raise exc.with_traceback(tb)

    def get(self, block=True, timeout=None):
        """Return the value or raise the exception; wait for it, or raise ``gevent.Timeout``."""
        if self._gp_value is not _NONE:
            return self._gp_value
        if self._gp_exc_info:
            return self._raise_exception()
        if not block:
            raise _timeout_error()
        if not self._gp_wait(timeout):
            raise timeout if isinstance(timeout, Timeout) else _timeout_error(timeout)
        return self.get(block=False)

    def get_nowait(self):
        return self.get(block=False)

    def wait(self, timeout=None):
        """Wait until ready; the value (None for an exception or a timeout)."""
        self._gp_wait(timeout)
        return self.value

    def result(self, timeout=None):
        return self.get(timeout=timeout)

    def __call__(self, source) -> None:
        if source.successful():
            self.set(source.value)
        else:
            self.set_exception(source.exception, getattr(source, "exc_info", None))


# -- gevent.lock -----------------------------------------------------------------


class _SemaphoreCore(_Linkable):
    """``gevent.lock.Semaphore`` whose acquirers may be on any hubs or threads.

    The permits are the entries of a deque, so an uncontended
    ``acquire()``/``release()`` is one C call each. ``counter`` reads (and,
    as gevent allows, sets) the number of permits. Links registered with
    ``rawlink`` run while a permit is free, as gevent's.
    """

    if not TYPE_CHECKING:  # mypy: the attributes live in the concrete classes' slots
        __slots__ = ()
    _gp_notify_all = False

    def __init__(self, value=1, hub=None) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._gp_permits = permits = deque([None] * value)
        self._gp_take = permits.pop
        self._gp_acquirers = lot = _Lot()
        self._gp_parked = lot.parked
        self._gp_waiters = None
        self._gp_links = None

    def __str__(self) -> str:
        return (f"<{type(self).__name__} at 0x{id(self):x} counter={self.counter} "
                f"_links[{self.linkcount()}]>")

    @property
    def counter(self) -> int:
        return len(self._gp_permits)

    @counter.setter
    def counter(self, value: int) -> None:
        permits = self._gp_permits
        while len(permits) < value:
            self.release()
        while len(permits) > value:
            try:
                permits.pop()
            except IndexError:
                break

    def locked(self) -> bool:
        return not self._gp_permits

    def ready(self) -> bool:
        return bool(self._gp_permits)

    def acquire(self, blocking=True, timeout=None) -> bool:
        """Take a permit; False if not ``blocking`` or ``timeout`` expires first."""
        try:
            self._gp_take()
            return True
        except IndexError:
            pass
        if not blocking:
            return False
        if isinstance(timeout, Timeout):  # gevent: its expiry means False, not an exception
            try:
                return _wait_in(self._gp_acquirers, self._gp_try_take, timeout) is not _EMPTY
            except Timeout as exc:
                if exc is not timeout:
                    raise
                return False
        return _lot_wait(self._gp_acquirers, self._gp_try_take, timeout) is not _EMPTY

    def _gp_try_take(self):
        if self._gp_permits:
            try:
                return self._gp_take()
            except IndexError:  # raced
                pass
        return _EMPTY

    _py3k_acquire = acquire

    def __enter__(self) -> None:
        try:
            self._gp_take()
        except IndexError:
            self.acquire()

    def release(self) -> int:
        """Return a permit, waking a waiter; the new counter."""
        self._gp_permits.append(None)
        if self._gp_parked:
            self._gp_acquirers.wake_one()
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()
        return len(self._gp_permits)

    def __exit__(self, t, v, tb) -> None:
        self._gp_permits.append(None)
        if self._gp_parked:
            self._gp_acquirers.wake_one()
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()

    def wait(self, timeout=None) -> int:
        """Wait until a permit is free (without taking it) or ``timeout``; the counter."""
        if not self._gp_permits:
            self._gp_wait(timeout)
        return len(self._gp_permits)

    def _start_notify(self) -> None:
        if self.ready():
            self._gp_notify()

    def _at_fork_reinit(self) -> None:
        self._gp_acquirers = lot = _Lot()
        self._gp_parked = lot.parked
        self._gp_waiters = None
        self._gp_links = None


_SEMAPHORE_SLOTS = (
    "_gp_permits", "_gp_take", "_gp_acquirers", "_gp_parked", "_gp_waiters", "_gp_links",
)


class Semaphore(_SemaphoreCore, _GSemaphore, metaclass=_FamilyMeta):
    __doc__ = _SemaphoreCore.__doc__
    __slots__ = _SEMAPHORE_SLOTS


class BoundedSemaphore(_SemaphoreCore, _GBoundedSemaphore, metaclass=_FamilyMeta):
    """``gevent.lock.BoundedSemaphore`` across hubs: over-releasing raises ``ValueError``."""

    __slots__ = (*_SEMAPHORE_SLOTS, "_gp_initial")
    _OVER_RELEASE_ERROR = ValueError

    def __init__(self, value=1, hub=None) -> None:
        _SemaphoreCore.__init__(self, value)
        self._gp_initial = value

    @property
    def _initial_value(self) -> int:
        return self._gp_initial

    def release(self) -> int:
        permits = self._gp_permits
        if len(permits) >= self._gp_initial:
            raise self._OVER_RELEASE_ERROR("Semaphore released too many times")
        permits.append(None)
        if self._gp_parked:
            self._gp_acquirers.wake_one()
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()
        return len(permits)

    def __exit__(self, t, v, tb) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        _SemaphoreCore._at_fork_reinit(self)
        self._gp_permits = permits = deque([None] * self._gp_initial)
        self._gp_take = permits.pop


Semaphore._gp_family = (BoundedSemaphore,)  # gevent's BoundedSemaphore subclasses Semaphore


# -- gevent.Greenlet ---------------------------------------------------------------


class Greenlet(_GGreenlet):
    """``gevent.Greenlet`` whose ``join``/``get``/``link``/``rawlink``/``kill`` work from any hub.

    On the greenlet's own hub these are gevent's. From another hub (or a
    plain thread) the link is registered by the greenlet's own hub, through
    its pool hub's mailbox, and the wake-up or callback comes back to the
    caller's hub the same way. A greenlet of a hub that has no such mailbox
    (a native thread running its own gevent hub) raises WrongHubError there.
    """

    @classmethod
    def spawn(cls, *args, **kwargs):
        """Create and start a greenlet (``gevent.spawn``); TypeError without a function."""
        if cls is Greenlet and not args and "run" not in kwargs:
            raise TypeError("")
        g = cls(*args, **kwargs)
        g.start()
        return g

    @classmethod
    def spawn_later(cls, seconds, *args, **kwargs):
        """Create a greenlet started ``seconds`` later (``gevent.spawn_later``)."""
        if cls is Greenlet and not args and "run" not in kwargs:
            raise TypeError("")
        g = cls(*args, **kwargs)
        g.start_later(seconds)
        return g

    def _gp_owner_post(self) -> Callable[..., Any] | None:
        """None on the greenlet's own hub; else how to run a call there."""
        hub = self.parent
        if hub is None or getattr(hub, "thread_ident", None) == get_ident():
            return None
        post = _post_for(hub)
        if post is None:
            raise WrongHubError(
                f"{self!r} belongs to the gevent hub of another native thread that "
                "greenpool does not run: join, get, link or kill it from that thread"
            )
        return post

    def rawlink(self, callback) -> None:
        """Call ``callback(self)`` once the greenlet ends, in the registering greenlet's hub."""
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.rawlink(self, callback)
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        back = _post_here()
        relay = callback if back is None else _Relay(callback, back)
        post(_GGreenlet.rawlink, self, relay)

    def join(self, timeout=None) -> None:
        """Wait until the greenlet ends (or ``timeout``), from any hub."""
        if self.dead or self.ready():
            return
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.join(self, timeout)
        self._gp_wait_elsewhere(post, timeout)

    def _gp_wait_elsewhere(self, post, timeout) -> bool:
        entry = _Entry()
        post(_GGreenlet.rawlink, self, _Wake(entry.waiter))
        return entry.waiter.wait(timeout) or self.ready()

    def get(self, block=True, timeout=None):
        """Return the result or raise the exception, from any hub (or ``gevent.Timeout``)."""
        if self.ready():
            return _GGreenlet.get(self, block=False)
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.get(self, block, timeout)
        if not block:
            raise _timeout_error()
        if not self._gp_wait_elsewhere(post, timeout):
            raise _timeout_error(timeout)
        return _GGreenlet.get(self, block=False)

    def kill(self, exception=GreenletExit, block=True, timeout=None) -> None:
        """Raise ``exception`` in the greenlet (in its own hub); wait for its end if ``block``."""
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.kill(self, exception, block, timeout)
        post(_GGreenlet.kill, self, exception, False)
        if block:
            self.join(timeout)


class _Relay:
    """A link registered from another hub: called in the owner's hub, run in the linker's."""

    __slots__ = ("callback", "post")

    def __init__(self, callback, post) -> None:
        self.callback = callback
        self.post = post

    def __call__(self, source) -> None:
        self.post(self.callback, source)

    def __eq__(self, other) -> bool:
        return other is self or other == self.callback

    __hash__ = None  # type: ignore[assignment]


class _Wake:
    """A link that wakes one cross-hub waiter."""

    __slots__ = ("waiter",)

    def __init__(self, waiter) -> None:
        self.waiter = waiter

    def __call__(self, _source) -> None:
        self.waiter.wake()


# -- gevent.pool ---------------------------------------------------------------


def _group_lock(group) -> Any:
    """The group's own native lock, made on first use (``dict.setdefault`` is atomic)."""
    lock = group.__dict__.get("_greenpool_lock")
    if lock is None:
        lock = group.__dict__.setdefault("_greenpool_lock", _NativeRLock())
    return lock


def _locked(method):
    """A ``Group`` method run under the group's lock: its set and its empty-event move together.

    Otherwise a ``discard`` of the last greenlet on one hub, racing an ``add`` on
    another, could set the "empty" event after the add cleared it, and a
    ``join()`` return while a greenlet runs.
    """

    def locked(self, *args, **kwargs):
        with _group_lock(self):
            return method(self, *args, **kwargs)

    locked.__name__ = method.__name__
    locked.__qualname__ = method.__qualname__
    locked.__doc__ = method.__doc__
    locked._greenpool_original = method
    return locked


# -- installing --------------------------------------------------------------------

_installed = False


def installed() -> bool:
    """True once :func:`install` has run in this process."""
    return _installed


def _replacements() -> dict[Any, Any]:
    """gevent's classes and functions -> greenpool's."""
    return {
        _GSimpleQueue: SimpleQueue,
        _GQueue: Queue,  # also JoinableQueue: the same class in gevent
        _GUnboundQueue: UnboundQueue,
        _GPriorityQueue: PriorityQueue,
        _GLifoQueue: LifoQueue,
        _GChannel: Channel,
        _GEvent: Event,
        _GAsyncResult: AsyncResult,
        _GSemaphore: Semaphore,
        _GBoundedSemaphore: BoundedSemaphore,
        _GGreenlet: Greenlet,
    }


#: gevent's own modules whose names are rebound: those that only make objects of these
#: classes. Others keep gevent's classes: ``gevent.thread`` subclasses
#: ``BoundedSemaphore`` and calls ``BoundedSemaphore.acquire(self)`` by name, which
#: must stay gevent's method for its (gevent) objects.
_GEVENT_MODULES = frozenset({
    "gevent", "gevent.queue", "gevent.event", "gevent.lock", "gevent.greenlet", "gevent.pool",
})


def _rebind_module_globals(replace: dict[Any, Any]) -> None:
    """Point already-imported modules' references to gevent's classes at ours.

    For names a module imported before ``patch_all()`` (``from gevent.queue
    import JoinableQueue``). Skipped: greenpool's modules (they choose their
    primitives for the hub they run on), gevent's others (see
    :data:`_GEVENT_MODULES`), and a name in a module that subclasses the old
    class itself (its methods may call the base by that name).
    """
    wanted = {id(old): new for old, new in replace.items()}
    for name, module in list(sys.modules.items()):
        if module is None or name == "greenpool" or name.startswith("greenpool."):
            continue
        if (name == "gevent" or name.startswith("gevent.")) and name not in _GEVENT_MODULES:
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        items = list(namespace.items())
        for attr, value in items:
            new = wanted.get(id(value))
            if new is None or value is new or _subclassed_here(items, value, new):
                continue
            try:
                setattr(module, attr, new)
            except (AttributeError, TypeError):
                pass


def _subclassed_here(items: list, old: type, new: type) -> bool:
    """True if a class among a module's ``items`` subclasses ``old`` (and not ``new``)."""
    for _attr, value in items:
        if (isinstance(value, type) and value is not old and type.__subclasscheck__(old, value)
                and not type.__subclasscheck__(new, value)):
            return True
    return False


def install() -> None:
    """Idempotent: put the cross-hub classes in ``gevent.queue``/``event``/``lock``/``pool``."""
    global _installed
    if _installed:
        return
    replace = _replacements()
    for module, name, value in (
        (_gevent_queue, "SimpleQueue", SimpleQueue),
        (_gevent_queue, "Queue", Queue),
        (_gevent_queue, "JoinableQueue", JoinableQueue),
        (_gevent_queue, "UnboundQueue", UnboundQueue),
        (_gevent_queue, "PriorityQueue", PriorityQueue),
        (_gevent_queue, "LifoQueue", LifoQueue),
        (_gevent_queue, "Channel", Channel),
        (_gevent_event, "Event", Event),
        (_gevent_event, "AsyncResult", AsyncResult),
        (_gevent_lock, "Semaphore", Semaphore),
        (_gevent_lock, "BoundedSemaphore", BoundedSemaphore),
        (_gevent_greenlet, "Greenlet", Greenlet),
        (gevent, "Greenlet", Greenlet),
        (gevent, "spawn", Greenlet.spawn),
        (gevent, "spawn_later", Greenlet.spawn_later),
    ):
        setattr(module, name, value)
    _rebind_module_globals(replace)
    if _gevent_pool.Group.greenlet_class is _GGreenlet:
        _gevent_pool.Group.greenlet_class = Greenlet
    for name in ("add", "discard"):
        method = _gevent_pool.Group.__dict__[name]
        if not hasattr(method, "_greenpool_original"):
            setattr(_gevent_pool.Group, name, _locked(method))
    _installed = True
