"""Cross-hub ``threading``, ``_thread`` and ``queue`` primitives for ``greenpool.monkey``.

gevent's patched locks, events and queues assume one hub (see the table in
:mod:`greenpool.sync`). Rather than a second implementation of every stdlib
primitive, this puts greenpool's cross-hub :class:`~greenpool.sync.Lock` and
:class:`~greenpool.sync.RLock` under the stdlib's own pure-Python classes:
``threading.Condition``, ``Semaphore``, ``BoundedSemaphore``,
``Barrier``, ``queue.Queue``, ``LifoQueue``,
``PriorityQueue`` and ``queue._PySimpleQueue`` are written on ``Lock`` and
``_allocate_lock`` and behave exactly as the stdlib's, because they *are* the
stdlib's: CPython's ``lock_tests.py`` and ``test_queue.py`` pass with their
threads on different hubs (``tests/stdlib``). Only the lock underneath is new.
``threading.Event`` (and so ``Timer``) is, as gevent's ``patch_all`` makes it,
``gevent.event.Event``, here its cross-hub subclass
(:mod:`greenpool.monkey.gevent_primitives`): CPython's ``EventTests`` pass
with it across hubs too, but for its internals (``_cond``) and ``repr``, and
it costs no lock and no deque per wait, as the stdlib's ``Condition`` does.

The queues get a little more, for speed (see :mod:`greenpool.monkey.queue`):
``queue.Queue`` and its Lifo/Priority subclasses are the stdlib's classes with
fast uncontended ``put``/``get`` paths (same lock, conditions and hooks), and
``SimpleQueue`` replaces the C ``_queue.SimpleQueue`` (which blocks a hub's
thread natively). ``benchmarks/sync.py`` has the figures.
"""

from __future__ import annotations

import sys

from gevent import monkey

from greenpool import sync
from greenpool.monkey import queue as greenqueue
from greenpool.monkey.gevent_primitives.event import Event as CrossHubEvent

_installed = False


def _original(module: str, name: str):
    """The stdlib object gevent replaced (or the current one if it did not)."""
    return monkey.get_original(module, name)


def prepare() -> None:
    """Before gevent patches: import ``concurrent.futures.thread`` with a cross-hub lock.

    That module registers its ``_global_shutdown_lock``'s ``acquire`` and
    ``release`` as ``os.fork()`` hooks, at import, for good. gevent imports it
    right after patching ``threading``, so the hooks held one of gevent's
    one-hub locks; replacing the module's global later (as gevent and
    :func:`install` do) cannot reach them. Two hubs forking at once (a
    ``subprocess`` call in two request handlers) met on that lock, and a lost
    wake-up left a thread parked inside ``os.fork()`` for good. Imported
    first with greenpool's lock as ``threading.Lock``, the hooks get a lock
    that works between hubs.
    """
    if "concurrent.futures.thread" in sys.modules:
        return  # imported before any patching: the hooks hold a native lock
    import threading

    saved = threading.Lock
    setattr(threading, "Lock", sync.Lock)  # noqa: B010 - read once, by the import below
    try:
        import concurrent.futures.thread  # noqa: F401
    finally:
        setattr(threading, "Lock", saved)  # noqa: B010


def install() -> None:
    """Idempotent: put greenpool's primitives into ``threading``, ``_thread`` and ``queue``."""
    global _installed
    if _installed:
        return
    import _queue
    import _thread
    import concurrent.futures.thread as cf_thread
    import queue
    import threading

    Lock, RLock = sync.Lock, sync.RLock
    for module, name, value in (
        (_thread, "allocate_lock", Lock),
        (_thread, "LockType", Lock),
        (threading, "Lock", Lock),
        (threading, "_allocate_lock", Lock),
        (threading, "RLock", RLock),
        (threading, "_PyRLock", RLock),
        (threading, "_CRLock", None),
        # gevent swapped Event for its one-hub version; greenpool's subclass of
        # it wakes waiters on any hub (CPython's EventTests pass with it across
        # hubs: tests/stdlib). The stdlib's own (a Condition on Lock) works too
        # but costs a lock and a deque per wait: every message of a
        # simple-websocket connection sets and waits on one.
        (threading, "Event", CrossHubEvent),
        # Locks made at import that threads of any hub take: gevent already gave
        # them its (one-hub) lock while no other thread existed, so neither is held.
        (threading, "_active_limbo_lock", Lock()),
        (queue, "Queue", greenqueue.Queue),
        (queue, "LifoQueue", greenqueue.LifoQueue),
        (queue, "PriorityQueue", greenqueue.PriorityQueue),
        (queue, "SimpleQueue", greenqueue.SimpleQueue),
        (_queue, "SimpleQueue", greenqueue.SimpleQueue),
    ):
        setattr(module, name, value)
    if hasattr(threading, "_set_sentinel"):  # Thread.join's lock before 3.13
        setattr(threading, "_set_sentinel", sync.SentinelLock)  # noqa: B010 - a private name mypy lacks
    if hasattr(cf_thread, "_global_shutdown_lock"):
        setattr(cf_thread, "_global_shutdown_lock", Lock())  # noqa: B010
    if "logging" in sys.modules:
        _relock_logging(sys.modules["logging"])
    _installed = True


def _relock_logging(logging) -> None:
    """Give logging's module lock and existing handlers cross-hub RLocks (as gevent does)."""
    logging._lock = sync.RLock()
    for ref in list(logging._handlerList):
        handler = ref() if callable(ref) else ref
        if handler is not None and getattr(handler, "lock", None) is not None:
            handler.lock = sync.RLock()
