"""``greenpool.monkey.patch_all()``: gevent's patching, made safe for N hubs.

gevent's ``patch_all()`` assumes one hub: its locks, events and queues wake
waiters through one loop, its sockets belong to the hub that made them, and
its "threads" are greenlets on the creating hub. A thread-style app run on
several greenpool hubs shares all of those between hubs. This module does
everything ``gevent.monkey.patch_all(**kwargs)`` does, then puts greenpool's
cross-hub versions in their place:

* ``greenpool._patch_sync``: ``threading``/``_thread``/``queue`` primitives
  that work between greenlets on any hubs, the main thread and native threads;
* ``greenpool._socket_follow``: gevent sockets move to the hub of the greenlet
  that uses them;
* ``greenpool._patch_threads``: ``threading.Thread`` started outside the pool
  runs on a hub the dispatcher picks.

Usage: call :func:`patch_all` first thing in the main module, or run
``python -m greenpool.monkey script.py [args]``.
"""

from __future__ import annotations

__all__ = ["patch_all", "is_patched"]

_patched = False


def is_patched() -> bool:
    """True once :func:`patch_all` has completed in this process."""
    return _patched


def patch_all(**kwargs) -> None:
    """Patch like ``gevent.monkey.patch_all(**kwargs)``, then install the cross-hub pieces.

    Calling it again is harmless. Called after greenpool started hub threads,
    it raises :class:`greenpool.PatchingError` (nothing is patched).
    """
    global _patched
    from gevent import monkey

    monkey.patch_all(**kwargs)
    from greenpool import _patch_sync, _patch_threads, _socket_follow

    if kwargs.get("thread", True):
        _patch_sync.install()
    if kwargs.get("socket", True):
        _socket_follow.install()
    if kwargs.get("thread", True):
        _patch_threads.install()
    _patched = True
