"""Exceptions greenpool raises, each named for what went wrong."""

from __future__ import annotations

from concurrent.futures import BrokenExecutor, CancelledError, TimeoutError

__all__ = [
    "BrokenPool",
    "CancelledError",
    "PatchingError",
    "PoolFull",
    "TimeoutError",
    "WrongHubError",
    "check_callable",
]


class BrokenPool(BrokenExecutor):
    """The pool can no longer run tasks (its hub threads are gone, e.g. after fork)."""


class PoolFull(RuntimeError):
    """Every hub already holds ``max_pending`` queued tasks and the pool fails fast."""


class PatchingError(RuntimeError):
    """gevent monkey patching was attempted after greenpool had started hub threads."""


class WrongHubError(RuntimeError):
    """A hub-bound object (socket, greenlet, server) was used from another hub's thread."""


def check_callable(fn: object, where: str) -> None:
    """Raise at the call, not later in a hub, when a task is not callable."""
    if not callable(fn):
        raise TypeError(f"{where}() needs a callable, got {type(fn).__name__} {fn!r}")
