"""Parking and posting: how a caller waits on any hub or thread, and how a call reaches a hub.

:class:`_Lot` parks callers until a ``take()`` succeeds (the queues, the
semaphores); :class:`_Flag` parks the waiters of a one-way condition (an
event, a queue's ``join``). :func:`_post_for`/:func:`_post_here` run a call
in a hub's own thread from any thread: through a pool hub's mailbox, or a
:class:`_HubMailbox` on a gevent hub greenpool does not own. :class:`_Links`
and :class:`_Linkable` are the ``rawlink`` protocol the events and
semaphores share: each callback runs in the hub of the greenlet that
registered it (gevent: "in the hub").
"""

from __future__ import annotations

import numbers
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent._hub_local import get_hub_if_exists
from gevent.hub import Hub as _GeventHub
from gevent.timeout import Timeout
from greenlet import getcurrent

from greenpool._compiled import gevent_speedups, waiter_speedups
from greenpool._native import RLock as _NativeRLock
from greenpool._native import allocate_lock, get_ident
from greenpool._waiter import Entry, ParkedCallers, remove_entry


class _PyLot(ParkedCallers):
    """Callers parked until ``take()`` succeeds; never a lost wake-up.

    :class:`~greenpool._waiter.ParkedCallers`'s protocol. A woken caller
    competes with newcomers, as on one gevent hub; one that loses parks again
    at the head. ``take()`` returns ``_EMPTY`` for "not yet"; anything it
    raises (a shut-down queue) ends the wait with that exception. With
    greenpool's C extension, :data:`_Lot` and :func:`_lot_wait` are their C
    twins (``greenpool/_speedups_gevent.c``, ``Lot`` and ``lot_wait``).
    """

    __slots__ = ()


#: What a ``take()`` returns for "not yet", and :func:`_lot_wait` once its timeout expires.
_EMPTY = object()


def _py_lot_wait(lot: _PyLot, take: Callable[[], Any], timeout: float | None) -> Any:
    """Park in ``lot`` until ``take()`` succeeds; its result, or ``_EMPTY`` on timeout.

    ``take()`` returns ``_EMPTY`` for "not yet" (no exception: raising one
    costs more than the rest of a park).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    parked = lot.parked
    mutex = lot._mutex
    woken = False
    while True:
        entry = Entry()
        with mutex:
            if woken:
                parked.appendleft(entry)
            else:
                parked.append(entry)
            try:
                got = take()
            except BaseException:
                remove_entry(parked, entry)
                raise
            if got is not _EMPTY:
                remove_entry(parked, entry)
                return got
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            woke = entry.waiter.wait(left)
        except BaseException:
            with mutex:
                queued = remove_entry(parked, entry)
            if not queued and parked:
                lot.wake_one()  # woken while being killed: pass it on
            raise
        if not woke:
            with mutex:
                queued = remove_entry(parked, entry)
            got = take()  # woken just as the timeout expired, or raced
            if got is _EMPTY and not queued and parked:
                lot.wake_one()
            return got
        got = take()
        if got is not _EMPTY:
            return got
        woken = True  # a newcomer took it first: park again at the head


if gevent_speedups is not None:
    gevent_speedups.configure_lot(_EMPTY, time.monotonic)
    _Lot: Any = gevent_speedups.Lot
    _lot_wait: Callable[[Any, Callable[[], Any], float | None], Any] = gevent_speedups.lot_wait
else:
    _Lot = _PyLot
    _lot_wait = _py_lot_wait


def _in_hub_greenlet() -> bool:
    """True in a hub's own greenlet (a loop callback), where gevent never blocks."""
    return isinstance(getcurrent(), _GeventHub)


class _YieldToWoken:
    """``yield_to_woken()`` of both flags below (``pending`` is theirs)."""

    __slots__ = ()
    pending: list

    def yield_to_woken(self) -> None:
        """In a greenlet, let the waiters a notification woke run first (see _PyFlag)."""
        if self.pending and get_hub_if_exists() is not None and not _in_hub_greenlet():
            gevent.sleep(0)


class _PyFlag(_YieldToWoken):
    """Broadcast waiters of a one-way condition (an Event's flag, an AsyncResult's value).

    ``pending`` holds one token per waiter woken and not yet resumed: a
    ``wait()`` that finds the event already set while some are pending
    yields once first, so it runs after them (gevent issue #1520's order).
    With greenpool's C extension, :data:`_Flag` is its C twin
    (``greenpool/_speedups_gevent.c``), whose critical sections run no
    Python code but ``ready()``, ordered without a native lock.
    """

    __slots__ = ("waiters", "mutex", "pending")

    def __init__(self) -> None:
        # Lists, not deques: an empty deque is 624 bytes, and an event is
        # mostly waited on by one greenlet at a time (a WebSocket connection's,
        # per message). ``pending``'s extend and pop are atomic under the GIL.
        self.waiters: list[Entry] = []
        # Reentrant, as the lot's: a GC run inside a critical section may set
        # this very event (a __del__ or weakref callback).
        self.mutex = _NativeRLock()
        self.pending: list = []

    def wake_all(self) -> None:
        with self.mutex:
            waiters, self.waiters = self.waiters, []
            self.pending.extend([None] * len(waiters))
        for entry in waiters:
            entry.waiter.wake()

    def wait(self, ready: Callable[[], Any], timeout) -> bool:
        """Park until woken (True) or ``timeout`` (False); ``ready()`` is checked after parking.

        ``timeout`` may be a ``gevent.Timeout``: started here, it ends the wait
        with False when it expires (its custom exception, if it has one, is raised).
        """
        if timeout is not None and not isinstance(timeout, (int, float)):
            return _flag_timeout_wait(self, ready, timeout)
        mutex = self.mutex
        with mutex:
            entry = Entry()
            self.waiters.append(entry)
            if ready():
                if not remove_entry(self.waiters, entry):  # woken meanwhile (re-entered)
                    self._drop_pending()
                return True
        woken = False
        try:
            woken = entry.waiter.wait(timeout)
        finally:
            if not woken:
                with mutex:
                    woken = not remove_entry(self.waiters, entry)
            if woken:
                self._drop_pending()
        return woken

    def _drop_pending(self) -> None:
        """This waiter resumed: its token (if a wake-up left one) goes."""
        try:
            self.pending.pop()
        except IndexError:
            pass


def _flag_timeout_wait(flag, ready: Callable[[], Any], timeout) -> bool:
    """``flag.wait(ready, timeout)`` for a ``timeout`` that is not an int or float.

    A ``gevent.Timeout`` is started (unless it is) and ends the wait; another
    real number (a ``Decimal``) counts as its float; anything else is refused.
    """
    if not isinstance(timeout, Timeout):
        if not isinstance(timeout, numbers.Real):
            raise TypeError(
                f"timeout must be a number of seconds or a gevent.Timeout, "
                f"not {type(timeout).__name__}")
        return flag.wait(ready, float(timeout))
    if not timeout.pending:
        timeout.start()
    try:
        return flag.wait(ready, None)
    except Timeout as exc:
        if exc is not timeout:
            raise
        return False
    finally:
        timeout.cancel()


if gevent_speedups is not None:

    class _CFlag(gevent_speedups.Flag, _YieldToWoken):  # type: ignore[name-defined]
        __doc__ = _PyFlag.__doc__
        __slots__ = ()

    gevent_speedups.configure_flag(  # parks a C PoolHubWaiter directly, when there is one
        Entry, _flag_timeout_wait, _CFlag,
        None if waiter_speedups is None else waiter_speedups._C_API)
    _Flag: Any = _CFlag
else:
    _Flag = _PyFlag


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


def _entry_wait(entry: Entry, timeout) -> bool:
    """``entry.waiter.wait(timeout)``; ``timeout`` may be a ``gevent.Timeout`` (see _wait_in)."""
    if not isinstance(timeout, Timeout):
        return entry.waiter.wait(timeout)
    if not timeout.pending:
        timeout.start()
    try:
        return entry.waiter.wait(None)
    finally:
        timeout.cancel()


def _wait_in(lot: Any, take: Callable[[], Any], timeout) -> Any:
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


# -- the rawlink protocol (events, semaphores) ---------------------------------

_lazy_lock = allocate_lock()


def _py_make_flag(obj) -> Any:
    """``obj``'s waiter list, made on first use (most events are set before anyone waits).

    With the C extension, :func:`_make_flag` is its C twin, atomic under the GIL.
    """
    with _lazy_lock:
        flag = obj._gp_waiters
        if flag is None:
            obj._gp_waiters = flag = _Flag()
    return flag


_make_flag: Callable[[Any], Any] = (
    _py_make_flag if gevent_speedups is None else gevent_speedups.make_flag)


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
        _gp_waiters: Any  # a _Flag or None

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
