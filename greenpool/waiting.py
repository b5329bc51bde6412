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
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from concurrent.futures._base import DoneAndNotDoneFutures

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


def _wait_for_any(pending: Iterable[Future], deadline: float | None) -> bool:
    """Wait until one of ``pending`` is done; False if ``deadline`` passed first."""
    waiter = make_waiter()
    registered = []
    try:
        for f in pending:
            with f._condition:
                if f._state in _DONE_STATES:
                    return True
                if f._wakers is None:
                    f._wakers = [waiter]
                else:
                    f._wakers.append(waiter)
            registered.append(f)
        if deadline is None:
            return waiter.wait(None)
        return waiter.wait(max(0.0, deadline - time.monotonic()))
    finally:
        for f in registered:
            with f._condition:
                if f._wakers is not None and waiter in f._wakers:
                    f._wakers.remove(waiter)


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
    pending = _futures(fs, "wait")
    done: set = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        finished = {f for f in pending if f._state in _DONE_STATES}
        done |= finished
        pending -= finished
        if (
            not pending
            or (return_when == FIRST_COMPLETED and done)
            or (return_when == FIRST_EXCEPTION and any(_failed(f) for f in done))
        ):
            break
        if not _wait_for_any(pending, deadline):
            finished = {f for f in pending if f._state in _DONE_STATES}
            done |= finished
            pending -= finished
            break
    return DoneAndNotDoneFutures(done, pending)


def as_completed(fs: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
    """Yield greenpool futures as they finish, as :func:`concurrent.futures.as_completed` does.

    Raises ``TimeoutError`` if some are still pending ``timeout`` seconds
    after this call (not after the first ``next()``, as in the stdlib).
    """
    pending = _futures(fs, "as_completed")
    deadline = None if timeout is None else time.monotonic() + timeout
    return _completed(pending, deadline, len(pending))


def _completed(pending: set, deadline: float | None, total: int) -> Iterator[Future]:
    while pending:
        finished = [f for f in pending if f._state in _DONE_STATES]
        if finished:
            for f in finished:
                pending.discard(f)
                yield f
            continue
        if not _wait_for_any(pending, deadline):
            if not any(f._state in _DONE_STATES for f in pending):
                raise TimeoutError(f"{len(pending)} (of {total}) futures unfinished")
