"""``wait()`` and ``as_completed()`` for greenpool futures, cooperative everywhere.

The stdlib's :func:`concurrent.futures.wait` and ``as_completed`` accept
greenpool futures, but they block on a ``threading.Event``: inside a pool
greenlet of an unpatched process that blocks the hub's whole thread (every
other greenlet on it stalls, and a child spawned on the same hub can never
finish, so the wait can only time out). These two have the same signatures
and results, and wait the way :meth:`Future.result` does: cooperatively on a
pool hub or a foreign gevent hub, natively in a plain thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from concurrent.futures._base import DoneAndNotDoneFutures

from greenpool._native import allocate_lock
from greenpool._waiter import make_waiter
from greenpool.errors import TimeoutError
from greenpool.future import _DONE_STATES, FINISHED, Future

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "as_completed", "wait"]

_RETURN_WHEN = (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED)


def _futures(fs: Iterable, caller: str) -> set:
    if isinstance(fs, Future):
        raise TypeError(f"{caller}() takes an iterable of futures, not one future: wrap it in [ ]")
    fs = set(fs)
    for f in fs:
        if not isinstance(f, Future):
            raise TypeError(
                f"{caller}() waits on greenpool futures, got {type(f).__name__}; "
                f"use concurrent.futures.{caller}() for other futures"
            )
    return fs


class _Collector:
    """Collects the futures of one wait() or as_completed() call as they finish.

    It is registered once on each future, through the stdlib's ``_waiters``
    protocol (``add_result``/``add_exception``/``add_cancelled``, called under
    the future's lock when it completes), so N futures cost N registrations
    however many times the caller wakes. Each wait arms a fresh one-shot
    waiter from :func:`~greenpool._waiter.make_waiter`.
    """

    __slots__ = ("finished", "_lock", "_waiter")

    def __init__(self) -> None:
        self.finished: deque = deque()
        self._lock = allocate_lock()
        self._waiter = None

    def _add(self, future: Future) -> None:
        self.finished.append(future)
        with self._lock:
            waiter = self._waiter
        if waiter is not None:
            waiter.wake()

    add_result = add_exception = add_cancelled = _add

    def register(self, fs: Iterable[Future]) -> list:
        """Register on every unfinished future; finished ones are collected at once."""
        registered = []
        for f in fs:
            with f._condition:
                if f._state in _DONE_STATES:
                    self.finished.append(f)
                else:
                    f._waiters.append(self)
                    registered.append(f)
        return registered

    def unregister(self, registered: list) -> None:
        for f in registered:
            with f._condition:
                try:
                    f._waiters.remove(self)
                except ValueError:
                    pass

    def wait(self, deadline: float | None) -> bool:
        """Until something was collected (True) or ``deadline`` passed (False)."""
        waiter = make_waiter()
        with self._lock:
            self._waiter = waiter  # armed before the check: no wake-up is lost
        try:
            if self.finished:
                return True
            waiter.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return bool(self.finished)
        finally:
            with self._lock:
                self._waiter = None


def _failed(f: Future) -> bool:
    return f._state == FINISHED and f._exception is not None


def wait(
    fs: Iterable[Future], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> DoneAndNotDoneFutures:
    """Wait for greenpool futures as :func:`concurrent.futures.wait` does.

    Returns ``(done, not_done)`` sets once ``return_when`` holds
    (``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``) or
    ``timeout`` seconds have passed.
    """
    if return_when not in _RETURN_WHEN:
        raise ValueError(
            f"return_when must be one of {', '.join(_RETURN_WHEN)}; got {return_when!r}"
        )
    fs = _futures(fs, "wait")
    deadline = None if timeout is None else time.monotonic() + timeout
    collector = _Collector()
    registered = collector.register(fs)
    done: set = set()
    failed = False
    try:
        while True:
            while collector.finished:
                f = collector.finished.popleft()
                done.add(f)
                failed = failed or _failed(f)
            if (
                len(done) == len(fs)
                or (return_when == FIRST_COMPLETED and done)
                or (return_when == FIRST_EXCEPTION and failed)
            ):
                break
            if not collector.wait(deadline):
                break
        while collector.finished:
            done.add(collector.finished.popleft())
    finally:
        collector.unregister(registered)
    return DoneAndNotDoneFutures(done, fs - done)


def as_completed(fs: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
    """Yield greenpool futures as they finish, as :func:`concurrent.futures.as_completed` does.

    Raises ``TimeoutError`` if some are still pending ``timeout`` seconds
    after this call (not after the first ``next()``, as in the stdlib).
    """
    fs = _futures(fs, "as_completed")
    deadline = None if timeout is None else time.monotonic() + timeout
    return _completed(fs, deadline)


def _completed(fs: set, deadline: float | None) -> Iterator[Future]:
    collector = _Collector()
    registered = collector.register(fs)  # on the first next(): a generator never run holds none
    total, yielded = len(fs), 0
    try:
        while yielded < total:
            if not collector.finished and not collector.wait(deadline):
                raise TimeoutError(f"{total - yielded} (of {total}) futures unfinished")
            while collector.finished:
                yielded += 1
                yield collector.finished.popleft()
    finally:
        collector.unregister(registered)
