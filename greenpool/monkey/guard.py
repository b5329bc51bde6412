"""Monkey patching and greenpool: patch first, or get an error that says so.

``gevent.monkey.patch_all()`` must run before greenpool starts any hub. What
goes wrong otherwise (tried on gevent 26.9): the hubs themselves keep working,
but every lock, socket or server created before the patch stays a *native*
object. A ``threading.Lock`` made before patching and taken by two greenlets
of one hub after it blocks the hub's thread natively while the other greenlet
holds it: the hub deadlocks for good, silently. Patching while hub threads run
also races with them (gevent rewrites the owners of locks held at that moment,
assuming a single thread, and hub threads are invisible to
``threading.enumerate()``).

So greenpool subscribes to gevent's will-patch events: a ``patch_all()`` (or
``patch_socket()``...) that would patch something new while any pool has live
hubs raises :class:`PatchingError` before anything is patched, naming the fix.
Patching again with what is already patched is a no-op in gevent and stays
allowed, so calling ``patch_all()`` twice is fine.

Importing this module (``import greenpool`` does, through :mod:`greenpool.monkey`)
subscribes to those events and registers :func:`warn_if_half_patched` as a
start check of every :class:`~greenpool.Pool`.
"""

from __future__ import annotations

import warnings

from gevent import events
from gevent import monkey as gevent_monkey

from greenpool import _patchstate
from greenpool.errors import PatchingError
from greenpool.pool import add_start_check, live_pools

__all__ = ["PatchingError", "install", "refuse_if_hubs_run", "running_pools",
           "warn_if_half_patched"]

_warned_half_patched = False


def running_pools() -> list:
    """Pools (the default pool included) with at least one live hub thread."""
    return live_pools()


def _modules_to_patch(event) -> list[str]:
    if isinstance(event, events.GeventWillPatchAllEvent):
        return sorted(name for name, on in event.patch_all_arguments.items() if on)
    if isinstance(event, events.GeventWillPatchModuleEvent):
        return [event.module_name]
    return []


def _forget_patch_all_settings(refused: dict) -> None:
    """Undo gevent's note that these patch_all() settings were applied.

    gevent records the settings *before* notifying subscribers, so without
    this a later, correctly placed ``patch_all()`` would silently patch
    nothing. The record is private to gevent (pinned to 26.x); if its shape
    is not the expected one, leave it alone.
    """
    try:
        from gevent.monkey._state import saved
    except ImportError:
        return
    recorded = saved.get("_gevent_saved_patch_all_module_settings")
    if isinstance(recorded, dict):
        for name in refused:
            recorded.pop(name, None)


def _refuse_late_patching(event) -> None:
    """gevent event subscriber: raise if new patching would happen under live hubs."""
    modules = _modules_to_patch(event)
    if not modules:
        return
    pools = running_pools()
    if not pools:
        return
    if isinstance(event, events.GeventWillPatchAllEvent):
        _forget_patch_all_settings(event.patch_all_arguments)
    hubs = sum(len(pool.hubs) for pool in pools)
    names = ", ".join(repr(pool.name) for pool in pools)
    raise PatchingError(
        f"gevent monkey patching ({', '.join(modules)}) was called after greenpool started "
        f"{hubs} hub thread(s) (pool {names}); nothing was patched. Locks, sockets and "
        "servers created before patching stay native and can deadlock a hub. Fix: call "
        "gevent.monkey.patch_all() first, at the very top of the main module, before "
        "importing greenpool or creating any Pool (or run `python -m gevent.monkey app.py`)."
    )


def refuse_if_hubs_run(what: str) -> None:
    """Raise :class:`PatchingError` if any pool has live hubs (``what`` is the late call)."""
    pools = running_pools()
    if pools:
        names = ", ".join(repr(pool.name) for pool in pools)
        raise PatchingError(
            f"{what} was called after greenpool started hub threads (pool {names}); "
            "nothing was patched. Fix: call greenpool.monkey.patch_all() first, at the very "
            "top of the main module, before creating any Pool (or run "
            "`python -m greenpool.monkey app.py`)."
        )


def warn_if_half_patched(size: int) -> None:
    """Warn once when gevent patched threading but greenpool.monkey did not, and size > 1.

    gevent's locks, events and queues serve one hub; shared by several they
    lose wake-ups (see :mod:`greenpool.sync`). Warning rather than completing
    the patching here: locks, queues and sockets the app made since gevent's
    patching are already gevent's, and replacing the classes now would leave
    those behind, half and half.
    """
    global _warned_half_patched
    if size <= 1 or _warned_half_patched:
        return
    if not gevent_monkey.is_module_patched("threading") or _patchstate.is_patched():
        return
    _warned_half_patched = True
    warnings.warn(
        f"gevent.monkey.patch_all() alone patched this process, and a Pool of {size} hubs "
        "is starting: gevent's patched locks, events, queues and sockets serve one hub and "
        "break when shared across hubs. Call greenpool.monkey.patch_all() instead (or run "
        "`python -m greenpool.monkey app.py`).",
        RuntimeWarning,
        stacklevel=3,
    )


def install() -> None:
    """Subscribe to gevent's patch events and check each starting pool (done once, at import)."""
    if _refuse_late_patching not in events.subscribers:
        events.subscribers.append(_refuse_late_patching)
    add_start_check(warn_if_half_patched)


install()
