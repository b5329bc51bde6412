"""``gevent.pool.Group`` across hubs: its bookkeeping under a lock.

So a ``join()`` on one hub is not released early by greenlets added on
another as others finish. :func:`~greenpool.monkey.gevent_primitives.install`
wraps ``Group.add``/``discard`` with :func:`_locked`.
"""

from __future__ import annotations

from typing import Any

from greenpool.monkey.gevent_primitives._parking import _NativeRLock


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
