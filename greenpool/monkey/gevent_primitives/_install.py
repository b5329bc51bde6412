"""Installing: the cross-hub classes put in gevent's modules, and rebound where already imported."""

from __future__ import annotations

import sys
from typing import Any

import gevent
import gevent.event as _gevent_event
import gevent.greenlet as _gevent_greenlet
import gevent.lock as _gevent_lock
import gevent.pool as _gevent_pool
import gevent.queue as _gevent_queue

from greenpool.monkey.gevent_primitives.event import AsyncResult, Event, _GAsyncResult, _GEvent
from greenpool.monkey.gevent_primitives.greenlet import Greenlet, _GGreenlet
from greenpool.monkey.gevent_primitives.lock import (
    BoundedSemaphore,
    Semaphore,
    _GBoundedSemaphore,
    _GSemaphore,
)
from greenpool.monkey.gevent_primitives.pool import _locked
from greenpool.monkey.gevent_primitives.queue import (
    Channel,
    JoinableQueue,
    LifoQueue,
    PriorityQueue,
    Queue,
    SimpleQueue,
    UnboundQueue,
    _GChannel,
    _GLifoQueue,
    _GPriorityQueue,
    _GQueue,
    _GSimpleQueue,
    _GUnboundQueue,
)

_installed = False


def installed() -> bool:
    """True once :func:`install` has run in this process."""
    return _installed


def _replacements() -> dict[Any, Any]:
    """gevent's classes and functions -> greenpool's."""
    return {
        _GSimpleQueue: SimpleQueue,
        _GQueue: Queue,  # also JoinableQueue: the same class in gevent
        _GUnboundQueue: UnboundQueue,
        _GPriorityQueue: PriorityQueue,
        _GLifoQueue: LifoQueue,
        _GChannel: Channel,
        _GEvent: Event,
        _GAsyncResult: AsyncResult,
        _GSemaphore: Semaphore,
        _GBoundedSemaphore: BoundedSemaphore,
        _GGreenlet: Greenlet,
    }


#: gevent's own modules whose names are rebound: those that only make objects of these
#: classes. Others keep gevent's classes: ``gevent.thread`` subclasses
#: ``BoundedSemaphore`` and calls ``BoundedSemaphore.acquire(self)`` by name, which
#: must stay gevent's method for its (gevent) objects.
_GEVENT_MODULES = frozenset({
    "gevent", "gevent.queue", "gevent.event", "gevent.lock", "gevent.greenlet", "gevent.pool",
})


def _rebind_module_globals(replace: dict[Any, Any]) -> None:
    """Point already-imported modules' references to gevent's classes at ours.

    For names a module imported before ``patch_all()`` (``from gevent.queue
    import JoinableQueue``). Skipped: greenpool's modules (they choose their
    primitives for the hub they run on), gevent's others (see
    :data:`_GEVENT_MODULES`), and a name in a module that subclasses the old
    class itself (its methods may call the base by that name).
    """
    wanted = {id(old): new for old, new in replace.items()}
    for name, module in list(sys.modules.items()):
        if module is None or name == "greenpool" or name.startswith("greenpool."):
            continue
        if (name == "gevent" or name.startswith("gevent.")) and name not in _GEVENT_MODULES:
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        items = list(namespace.items())
        for attr, value in items:
            new = wanted.get(id(value))
            if new is None or value is new or _subclassed_here(items, value, new):
                continue
            try:
                setattr(module, attr, new)
            except (AttributeError, TypeError):
                pass


def _subclassed_here(items: list, old: type, new: type) -> bool:
    """True if a class among a module's ``items`` subclasses ``old`` (and not ``new``)."""
    for _attr, value in items:
        if (isinstance(value, type) and value is not old and type.__subclasscheck__(old, value)
                and not type.__subclasscheck__(new, value)):
            return True
    return False


def install() -> None:
    """Idempotent: put the cross-hub classes in ``gevent.queue``/``event``/``lock``/``pool``."""
    global _installed
    if _installed:
        return
    replace = _replacements()
    for module, name, value in (
        (_gevent_queue, "SimpleQueue", SimpleQueue),
        (_gevent_queue, "Queue", Queue),
        (_gevent_queue, "JoinableQueue", JoinableQueue),
        (_gevent_queue, "UnboundQueue", UnboundQueue),
        (_gevent_queue, "PriorityQueue", PriorityQueue),
        (_gevent_queue, "LifoQueue", LifoQueue),
        (_gevent_queue, "Channel", Channel),
        (_gevent_event, "Event", Event),
        (_gevent_event, "AsyncResult", AsyncResult),
        (_gevent_lock, "Semaphore", Semaphore),
        (_gevent_lock, "BoundedSemaphore", BoundedSemaphore),
        (_gevent_greenlet, "Greenlet", Greenlet),
        (gevent, "Greenlet", Greenlet),
        (gevent, "spawn", Greenlet.spawn),
        (gevent, "spawn_later", Greenlet.spawn_later),
    ):
        setattr(module, name, value)
    _rebind_module_globals(replace)
    if _gevent_pool.Group.greenlet_class is _GGreenlet:
        _gevent_pool.Group.greenlet_class = Greenlet
    for name in ("add", "discard"):
        method = _gevent_pool.Group.__dict__[name]
        if not hasattr(method, "_greenpool_original"):
            setattr(_gevent_pool.Group, name, _locked(method))
    _installed = True
