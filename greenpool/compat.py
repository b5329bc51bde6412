"""What gevent's servers expect of the pool they are given as ``spawn=``.

``gevent.baseserver.BaseServer`` accepts any object with ``spawn`` as its
spawner and then relies on three more things: ``full()`` (stop accepting while
it is true), ``join(timeout)`` / ``kill(block, timeout)`` (in ``stop()``), and
``_semaphore.rawlink(callback)`` / ``unlink(callback)``: the callback must run,
on the *server's* hub, once the pool has room again so accepting resumes.
:class:`RoomNotifier` is that ``_semaphore``. The server's hub is usually not
one of the pool's (a ``StreamServer(..., spawn=pool)`` on the main thread is
the natural set-up), so each link delivers its callback through an ``async_``
watcher on the hub that registered it, the one cross-thread-safe libev wake-up.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent

from greenpool._native import allocate_lock
from greenpool.hub import current_hub


class _Link:
    """One rawlinked callback, delivered once on the hub that registered it."""

    __slots__ = ("callback", "notifier", "_hub", "_watcher", "_lock", "_fired")

    def __init__(self, callback: Callable, notifier: RoomNotifier) -> None:
        self.callback = callback
        self.notifier = notifier
        self._lock = allocate_lock()
        self._fired = False
        self._hub = current_hub()
        self._watcher = None
        if self._hub is None:
            self._watcher = gevent.get_hub().loop.async_()
            self._watcher.start(self._run)

    def _run(self) -> None:
        with self._lock:
            self._fired = True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            # Not close() here, inside its own callback: on the next pass of
            # this (the registering) thread's loop.
            watcher.loop.run_callback(watcher.close)
        self.callback(self.notifier)

    def wake(self) -> None:
        with self._lock:
            if self._fired:
                return
            self._fired = True
            if self._hub is not None:
                self._hub.call_soon_threadsafe(self.callback, self.notifier)
            elif self._watcher is not None:
                self._watcher.send()

    def close(self) -> None:
        """Stop and free the watcher; only from the registering thread."""
        with self._lock:
            self._fired = True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()


class RoomNotifier:
    """The ``pool._semaphore`` gevent servers rawlink to; fires when the pool has room."""

    def __init__(self, pool) -> None:
        self._pool = pool

    def rawlink(self, callback: Callable) -> None:
        if not callable(callback):
            raise TypeError(f"rawlink() needs a callable, got {type(callback).__name__}")
        link = _Link(callback, self)
        self._pool._add_space_waiter(link)
        if not self._pool.full():
            link.wake()

    def unlink(self, callback: Callable) -> None:
        def mine(waiter) -> bool:
            return getattr(waiter, "callback", None) == callback

        for link in self._pool._remove_space_waiters(mine):
            link.close()
