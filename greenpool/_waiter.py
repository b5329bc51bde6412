"""One-shot wake-ups that block the right way for whoever waits.

A greenpool object (a Future, a pool being joined, a full queue) can be waited
on from three kinds of context, and each needs a different way to block:

* a greenlet on a **pool hub**: park the greenlet and let the hub run others;
  the wake-up comes through that hub's mailbox (or its callback queue when the
  waker is on the same thread, which costs no syscall);
* a greenlet on a **foreign gevent hub** (the main thread after
  ``patch_all()``, a locust runner...): park it on a temporary ``async_``
  watcher, the one libev object that is safe to signal from another thread
  (gevent issue #1489); this also keeps that hub's loop from raising LoopExit;
* a **plain thread**: block on a native lock, never a patched one.

:func:`make_waiter` picks the implementation from the calling context; every
waiter has the same two methods, ``wait(timeout) -> bool`` (called once, by the
waiter's owner) and ``wake()`` (thread-safe, idempotent, callable from
anywhere).

:class:`Entry` and :class:`PoolHubWaiter`, made on every park, are C types
when greenpool's extension is built (``greenpool/_speedups_waiter.c``: the
pool-hub case in C, every other context through :func:`_entry_waiter`); the
classes below are their pure-Python twins.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gevent import Timeout
from gevent._hub_local import get_hub_if_exists
from gevent.hub import Hub as _GeventHub
from gevent.hub import Waiter as _GeventWaiter
from greenlet import getcurrent

from greenpool import _patchstate
from greenpool._compiled import waiter_speedups
from greenpool._native import RLock, allocate_lock, get_ident


class NativeWaiter:
    """Blocks a plain OS thread on a native lock."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(True, max(timeout, 0.0))

    def wake(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already woken
            pass


class PoolHubWaiter:
    """Parks a greenlet on its greenpool hub; woken through the hub's mailbox."""

    __slots__ = ("_hub", "_waiter", "_woken")

    def __init__(self, hub) -> None:
        self._hub = hub
        self._waiter = _GeventWaiter(hub.gevent_hub)
        self._woken = False

    def wait(self, timeout: float | None = None) -> bool:
        if self._woken:
            return True
        if timeout is None:  # no Timeout object to make, enter and close: ~1 us a wait
            self._waiter.get()
        else:
            _timed_get(self._waiter, timeout)
        return self._woken

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            self._hub.call_soon_threadsafe(self._waiter.switch, None)


def _timed_get(waiter: _GeventWaiter, timeout: float) -> None:
    """``waiter.get()``, given up after ``timeout`` seconds."""
    with Timeout(timeout, False):
        waiter.get()


class ForeignHubWaiter:
    """Parks a greenlet on a gevent hub greenpool does not own, via an async watcher.

    The watcher exists only while :meth:`wait` runs, so a waiter that is made
    but never waited on (an already idle pool's ``join()``) leaves no active
    watcher behind to keep its loop alive. A native lock orders ``wake()``
    against starting and closing it: a wake-up before the start is seen as
    ``_woken``, and ``send()`` never touches a closed watcher.
    """

    __slots__ = ("_hub", "_watcher", "_waiter", "_woken", "_lock")

    def __init__(self, gevent_hub) -> None:
        self._hub = gevent_hub
        self._waiter = _GeventWaiter(gevent_hub)
        self._watcher: Any = None
        self._woken = False
        self._lock = allocate_lock()

    def wait(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._woken:
                return True
            self._watcher = self._hub.loop.async_()
            self._watcher.start(self._waiter.switch, None)
        try:
            with Timeout(timeout, False):
                self._waiter.get()
            return self._woken
        finally:
            with self._lock:
                watcher, self._watcher = self._watcher, None
                watcher.stop()
                watcher.close()

    def wake(self) -> None:
        with self._lock:
            if not self._woken:
                self._woken = True
                if self._watcher is not None:
                    if get_ident() == self._hub.thread_ident:
                        # Woken from its own thread (another greenlet of that hub):
                        # a loop callback, as gevent's own wake-ups, with no round
                        # trip through the watcher.
                        self._hub.loop.run_callback(self._waiter.switch, None)
                    else:
                        self._watcher.send()


def make_waiter():
    """Return a waiter suited to the calling greenlet or thread."""
    return _waiter_for(get_hub_if_exists(), getcurrent())


def _waiter_for(gevent_hub, current):
    """:func:`make_waiter` for ``current`` (the running greenlet) on ``gevent_hub`` (or None)."""
    if gevent_hub is not None and current is gevent_hub:
        if getattr(gevent_hub, "greenpool_hub", None) is not None:
            raise RuntimeError(
                "cannot wait inside a hub's event loop (a loop callback): it would stall "
                "every greenlet on the hub; spawn a greenlet to do the waiting"
            )
    elif gevent_hub is not None:
        pool_hub = getattr(gevent_hub, "greenpool_hub", None)
        # A hub whose wake-up is gone (the forking hub in a child after
        # os.fork()) can no longer be woken through its mailbox: such a
        # greenlet parks on its own watcher, like one on a foreign hub.
        if pool_hub is not None and pool_hub._wakeup is not None:
            return PoolHubWaiter(pool_hub)
        if gevent_hub.loop is not None:
            return ForeignHubWaiter(gevent_hub)
    return NativeWaiter()


class Signal:
    """A latch set once from any thread and waited on from any context."""

    __slots__ = ("_lock", "_is_set", "_waiters")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._is_set = False
        self._waiters: list = []

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        with self._lock:
            if self._is_set:
                return
            self._is_set = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.wake()

    def wait(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._is_set:
                return True
            waiter = make_waiter()
            self._waiters.append(waiter)
        if not waiter.wait(timeout):
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._is_set


class Entry:
    """One parked caller: its waiter, what a waker handed it, and where it runs.

    What the cross-hub primitives queue (``greenpool.sync``'s and
    ``greenpool.monkey.gevent_primitives``'): the waiter fits the caller's
    context (:func:`make_waiter`; a hub's own loop greenlet gets
    :func:`hub_callback_waiter`'s answer), ``value`` carries what a hand-off
    gives it, ``place`` is where it runs (its hub, or the waiter itself for a
    plain thread), so a waker can wake one waiter per place.
    """

    __slots__ = ("waiter", "value", "place")

    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.waiter = waiter = _entry_waiter()
        # Where the waiter runs: its hub (one thread runs all its greenlets), or itself.
        self.place = getattr(waiter, "_hub", waiter)


def _entry_waiter():
    """The waiter of an :class:`Entry` made in the calling context."""
    current = current_greenlet()
    if current is None:
        # A thread whose greenlets are being torn down can only block natively.
        return NativeWaiter()
    if isinstance(current, _GeventHub):
        return hub_callback_waiter(current)
    return _waiter_for(get_hub_if_exists(), current)


class ParkedCallers:
    """Callers parked on a primitive (:class:`Entry` each, oldest first), woken one or all.

    The protocol of every primitive that uses it: a waker changes the state
    (appends an item, returns a permit) and *then* wakes parked callers; a
    caller parks and *then* looks at the state again, so one of the two always
    sees the other. ``_mutex`` orders parking against waking; it is reentrant:
    a put() may run inside a parking caller's critical section on the same
    thread (a ``__del__`` or weakref callback during a GC run there).
    """

    __slots__ = ("parked", "_mutex")

    def __init__(self) -> None:
        self.parked: deque[Entry] = deque()
        self._mutex = RLock()

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


def hub_callback_waiter(hub) -> NativeWaiter:
    """A waiter for a caller running in a hub greenlet (a loop callback), or RuntimeError.

    On a pool hub, blocking would stall every greenlet of that hub, maybe
    the one that would wake it: refused. After ``greenpool.monkey.patch_all()``
    the main thread's hub runs none of the app's threads (they are on pool
    hubs), and a Python signal handler runs in that hub's greenlet when the
    signal arrives while the main thread waits (``time.sleep``, ``join()``):
    a SIGTERM handler that puts a sentinel on a queue and joins the worker
    thread blocks the main thread natively there, as it would under CPython.
    """
    if getattr(hub, "greenpool_hub", None) is None and _patchstate.is_patched():
        return NativeWaiter()
    raise RuntimeError(
        "cannot block in a gevent hub greenlet (a loop callback); "
        "spawn a greenlet to wait, or use the non-blocking call"
    )


def current_greenlet():
    """The running greenlet, or None while greenlet tears this thread down.

    Then (a weakref callback of ``logging`` at thread or interpreter exit,
    say) ``getcurrent()`` raises; nothing can switch, so callers fall back to
    the native thread.
    """
    try:
        return getcurrent()
    except RuntimeError:
        return None


def remove_entry(waiters: deque | list, entry: Entry) -> bool:
    """Remove ``entry`` if still queued; False means a waker already popped it."""
    try:
        waiters.remove(entry)
    except ValueError:
        return False
    return True


if waiter_speedups is not None:  # the same types in C (see the module's docstring)
    waiter_speedups.configure(
        get_hub_if_exists, getcurrent, _GeventHub, _GeventWaiter, _entry_waiter, _timed_get)
    PoolHubWaiter = waiter_speedups.PoolHubWaiter  # type: ignore[misc]  # noqa: F811
    Entry = waiter_speedups.Entry  # type: ignore[misc]  # noqa: F811
