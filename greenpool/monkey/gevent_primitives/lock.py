"""``gevent.lock`` across hubs: ``Semaphore``, ``BoundedSemaphore`` (and so gevent's ``RLock``)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import gevent.lock as _gevent_lock
from gevent.timeout import Timeout

from greenpool._compiled import gevent_speedups
from greenpool.monkey.gevent_primitives._family import _FamilyMeta
from greenpool.monkey.gevent_primitives._parking import (
    _EMPTY,
    _Linkable,
    _Lot,
    _lot_wait,
    _wait_in,
)

# gevent's classes, kept before install() replaces the names.
_GSemaphore: Any = _gevent_lock.Semaphore
_GBoundedSemaphore: Any = _gevent_lock.BoundedSemaphore


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

if gevent_speedups is not None:  # release() and the with statement in C (the same steps)
    Semaphore.release, Semaphore.__enter__, Semaphore.__exit__ = (  # type: ignore[method-assign]
        gevent_speedups.semaphore_methods(Semaphore, False))
    BoundedSemaphore.release, BoundedSemaphore.__enter__, BoundedSemaphore.__exit__ = (  # type: ignore[method-assign]
        gevent_speedups.semaphore_methods(BoundedSemaphore, True))
