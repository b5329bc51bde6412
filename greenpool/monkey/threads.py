"""Patched threads run where their blocking calls can overlap.

After ``gevent.monkey.patch_all()`` a ``threading.Thread`` is a greenlet on
the hub of whoever called ``start()``. Under gevent that is the one hub there
is; under greenpool it put every thread a legacy app starts from its main
thread (background writers, a ``ThreadPoolExecutor``'s workers) on the main
thread's hub, so their blocking C calls (a psycopg2 query without a wait
callback, a compression) ran one after another: a ``ThreadPoolExecutor(8)``
of 2 ms queries made 0.13x the throughput of real threads.

:func:`install` replaces ``_thread.start_new_thread`` (and
``threading._start_new_thread``, which ``Thread.start`` calls) with
:func:`start_new_thread`, which places the new thread's greenlet by the rule
``greenpool.spawn`` uses for tasks (tokio-io-pool's rule):

* started **outside any pool** (at import, in the main thread, in a native
  thread, on a hub greenpool does not own) or in the **top-level greenlet of**
  :func:`greenpool.run` (whose spawns are dispatched too): on the hub that the
  :func:`greenpool.default_pool`'s dispatcher picks (``GREENPOOL_HUBS`` hubs).
  The default pool, not run's: a thread belongs to the process, and run's
  pool ends with its ``main``; it must neither wait for a daemon thread
  (``run`` would never return) nor cancel a non-daemon one;
* started **by another patched thread**: dispatched the same way. A thread
  that starts threads (``Thread(target=server.serve_forever)`` with a
  ``ThreadingMixIn`` server, a scheduler thread) expects them to overlap
  with each other, not to queue behind one hub;
* started **inside any other pool greenlet** (a task, a request handler): on
  the calling hub, as under gevent, so that it shares that hub's sockets and
  never hops threads. Such a
  thread keeps that pool's ``shutdown(wait=True)`` waiting, as a
  ``gevent.spawn``'d greenlet does, daemon or not; a cancelling shutdown
  (SIGTERM under ``run``) ends it with ``GreenletExit``;
* except a ``concurrent.futures.ThreadPoolExecutor``'s workers, which are
  always dispatched over the default pool. An executor exists to overlap
  blocking calls; workers pinned to the hub of the request that happened to
  submit first would run them one at a time. They share nothing with the
  submitting greenlet but the executor's queue (cross-hub after
  ``greenpool.monkey.patch_all()``), and an executor outlives the request
  that made it, so its idle workers belong in the process-lifetime pool, not
  in a server's pool whose graceful stop would wait for them.

The thread itself stays what gevent makes of it (a ``gevent.Greenlet`` whose
``threading.get_ident()`` is the greenlet's id), so ``join()``,
``is_alive()``, ``current_thread()``, ``enumerate()`` and ``threading.local``
work as under gevent, through whatever ``threading`` locks and events are
installed (greenpool's cross-hub ones after ``greenpool.monkey.patch_all()``).

At interpreter exit ``threading._shutdown`` waits for non-daemon threads as
CPython does; then the default pool is shut down with cancellation, which
throws ``GreenletExit`` into daemon threads still running (their ``finally``
blocks run). ``GreenletExit`` ending a thread is a thread exit, as
``SystemExit`` is for a native one (gevent's ``_thread.exit()`` raises it):
it is not reported to ``threading.excepthook``.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any
from weakref import WeakSet

from greenlet import GreenletExit, getcurrent

from greenpool.api import default_pool, dispatching_pool
from greenpool.sync import Event

__all__ = ["install", "start_joinable_thread", "start_new_thread"]

#: gevent's patched ``_thread.start_new_thread``: a greenlet on the calling hub.
_gevent_start = None
#: Python 3.13+: gevent's ``_thread.start_joinable_thread`` and ``_ThreadHandle`` methods.
_gevent_start_joinable = None
_gevent_handle_methods: dict[str, Any] = {}

#: The greenlets that are patched threads (started by :func:`start_new_thread`).
_threads: WeakSet = WeakSet()


def start_new_thread(function, args=(), kwargs=None) -> int:
    """Start ``function(*args, **kwargs)`` as a patched thread on the hub the rule picks.

    Returns the new thread's ident (``threading.get_ident()`` inside it).
    Raises ``RuntimeError`` when its pool has shut down and ``ValueError``
    when ``GREENPOOL_HUBS`` is invalid, both before anything started.
    """
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("optional 3rd arg must be a dictionary")
    return _start_placed(function, _gevent_start, _run_as_thread, (function, args, kwargs))


def start_joinable_thread(function: Any, handle: Any = None, daemon: bool = True) -> Any:
    """Python 3.13+'s ``_thread.start_joinable_thread``, placed by the same rule.

    ``Thread.start`` calls it (3.13 joins threads through the handle it
    returns, not a lock). gevent's version starts the greenlet on the calling
    hub and joins it with ``Greenlet.join``, which works on that hub only:
    here the greenlet starts where :func:`start_new_thread` would start it,
    and the handle's ``join()``/``is_done()`` wait on a cross-hub event set
    when the thread's body returns (see :func:`install`).
    """
    done = Event()
    if handle is not None:  # threading's own, before the thread can look at it
        handle._greenpool_done = done
    body = partial(_run_as_joinable, function, done)
    handle = _start_placed(function, _gevent_start_joinable, body, handle=handle, daemon=daemon)
    handle._greenpool_done = done  # also a handle gevent made
    return handle


def _start_placed(function, start, *args, **kwargs):
    """Call gevent's thread ``start`` on the hub the rule picks for ``function``'s thread.

    ``start`` is set by :func:`install`; returns what it returns.
    """
    thread = _thread_of(function)
    if thread is not None:
        _quiet_greenlet_exit(thread)
    if _stays_here(thread):
        return start(*args, **kwargs)
    return default_pool().spawn(start, *args, **kwargs).result()


def _run_as_joinable(function, done) -> None:
    _threads.add(getcurrent())
    try:
        function()
    finally:
        done.set()


def _handle_join(self, timeout=-1):
    """gevent's ``_ThreadHandle.join`` for a thread started here: waits from any hub."""
    done = getattr(self, "_greenpool_done", None)
    if done is None:
        return _gevent_handle_methods["join"](self, timeout)
    glet = self._get_greenlet()
    if glet is not None and glet is getcurrent():
        raise RuntimeError("Cannot join current thread")
    done.wait(None if timeout is None or timeout == -1 else max(timeout, 0))
    return None


def _handle_is_done(self) -> bool:
    done = getattr(self, "_greenpool_done", None)
    if done is None:
        return _gevent_handle_methods["is_done"](self)
    return done.is_set()


def _stays_here(thread) -> bool:
    """True when the new thread starts on the calling hub: a pool task started it."""
    if dispatching_pool() is not None:  # outside any pool, or run()'s top-level greenlet
        return False
    if getcurrent() in _threads:  # a thread started by a thread
        return False
    return thread is None or not _is_executor_worker(thread)


def _run_as_thread(function, args, kwargs) -> None:
    """The greenlet body of every patched thread: marked as one, then ``function``."""
    _threads.add(getcurrent())
    if kwargs:
        function(*args, **kwargs)
    else:
        function(*args)


def _thread_of(function):
    """The ``threading.Thread`` whose ``_bootstrap`` ``function`` is, or None."""
    owner = getattr(function, "__self__", None)
    threading = sys.modules["threading"]
    return owner if isinstance(owner, threading.Thread) else None


def _is_executor_worker(thread) -> bool:
    target = getattr(thread, "_target", None)
    return (
        getattr(target, "__module__", None) == "concurrent.futures.thread"
        and getattr(target, "__name__", None) == "_worker"
    )


def _quiet_greenlet_exit(thread) -> None:
    """Make ``GreenletExit`` end ``thread`` silently, as ``SystemExit`` ends a native one."""
    report = getattr(thread, "_invoke_excepthook", None)
    if report is None or getattr(report, "_greenpool_quiet", False):
        return

    def invoke_excepthook(thread_arg):
        if isinstance(sys.exc_info()[1], GreenletExit):
            return
        report(thread_arg)

    invoke_excepthook._greenpool_quiet = True  # type: ignore[attr-defined]
    thread._invoke_excepthook = invoke_excepthook


def _release_tstate_lock(thread, _greenlet) -> None:
    """gevent's end-of-thread link, without its ``_stop()``: release, as CPython's C code does.

    gevent releases the thread's ``_tstate_lock`` and then calls ``_stop()``,
    which asserts the lock is not held. That holds on one hub; with threads on
    several hubs, a ``join()`` or ``is_alive()`` on another thread can take the
    lock in between (a lock that hands off to its waiter takes it at once),
    and the assertion fails with a traceback from the hub. CPython only
    releases the lock when a thread ends; whoever acquires it next calls
    ``_stop()`` (``Thread._wait_for_tstate_lock``), and so it is here.
    """
    lock = thread._tstate_lock
    if lock is not None:
        lock.release()


def install() -> None:
    """Idempotent: route patched thread starts through :func:`start_new_thread`.

    Needs gevent's ``patch_thread()`` done first (``greenpool.monkey.patch_all``
    does it); without it there is nothing to place and this does nothing.
    """
    global _gevent_start, _gevent_start_joinable
    import _thread

    from gevent import monkey

    if not monkey.is_module_patched("_thread") and not monkey.is_module_patched("thread"):
        return
    threading = sys.modules["threading"]
    if hasattr(threading.Thread, "_Thread__greenlet_finished"):
        threading.Thread._Thread__greenlet_finished = _release_tstate_lock
    if _thread.start_new_thread is not start_new_thread:
        _gevent_start = _thread.start_new_thread
    for module, name in (
        (_thread, "start_new_thread"),
        (_thread, "start_new"),
        (threading, "_start_new_thread"),
    ):
        if hasattr(module, name):
            setattr(module, name, start_new_thread)
    joinable = getattr(_thread, "start_joinable_thread", None)  # Python 3.13+
    if joinable is not None and joinable is not start_joinable_thread:
        from gevent.thread import _ThreadHandle

        _gevent_start_joinable = joinable
        for name, replacement in (("join", _handle_join), ("is_done", _handle_is_done)):
            _gevent_handle_methods.setdefault(name, _ThreadHandle.__dict__[name])
            setattr(_ThreadHandle, name, replacement)
        for module, name in ((_thread, "start_joinable_thread"),
                             (threading, "_start_joinable_thread")):
            if hasattr(module, name):
                setattr(module, name, start_joinable_thread)
