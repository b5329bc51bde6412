"""The module-level API: spawn where you are, run a server, call blocking code.

The pinning rule in one place: :func:`spawn` inside a pool greenlet spawns on
the *current* hub (no cross-thread hop), except in the top-level greenlet of
:func:`run`, whose spawns go through the pool's dispatcher so that an accept
loop spreads its connections over every hub (tokio-io-pool's ``run`` rule).
Outside any pool it uses a default pool created on first use.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from gevent._hub_local import get_hub_if_exists
from greenlet import getcurrent

from greenpool._native import allocate_lock, start_new_thread
from greenpool.errors import CancelledError, check_callable
from greenpool.future import Future
from greenpool.hub import Hub, current_hub
from greenpool.pool import RUNNING, Pool

log = logging.getLogger("greenpool")

_default_pool: Pool | None = None
_default_lock = allocate_lock()


#: Environment variable: number of hubs of the default pool (default: the CPU count).
HUBS_ENV = "GREENPOOL_HUBS"


def default_pool() -> Pool:
    """The pool :func:`spawn` uses outside any pool; created on first use.

    It has ``GREENPOOL_HUBS`` hubs (a positive integer; unset or empty: the
    CPU count). A process patched with ``greenpool.monkey.patch_all()`` runs
    the threads it starts outside any pool here, so that variable is how many
    of their blocking calls can overlap. Raises ``ValueError`` naming the
    variable when its value is not a positive integer.
    """
    global _default_pool
    with _default_lock:
        pool = _default_pool
        if pool is None or pool._state is not RUNNING:
            pool = _default_pool = Pool(default_size(), name="greenpool-default")
        return pool


def default_size() -> int:
    """The default pool's size from ``GREENPOOL_HUBS``, else the CPU count."""
    raw = os.environ.get(HUBS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        size = int(raw)
    except ValueError:
        size = None
    if size is None or size < 1:
        raise ValueError(
            f"{HUBS_ENV}={os.environ[HUBS_ENV]!r} is not a number of hubs: set it to a "
            f"positive integer such as {os.cpu_count() or 1} (the CPU count), or unset it"
        )
    return size


def _reset_default_after_fork() -> None:
    # Another thread may have held the lock at fork time; the pool is broken.
    global _default_pool, _default_lock
    _default_lock = allocate_lock()
    _default_pool = None


os.register_at_fork(after_in_child=_reset_default_after_fork)


def current_pool() -> Pool | None:
    """The :class:`Pool` whose hub runs the calling greenlet, or None."""
    hub = current_hub()
    return None if hub is None else hub.pool


def spawn(fn: Callable, /, *args, **kwargs) -> Future:
    """Run ``fn(*args, **kwargs)`` as a new task and return its :class:`Future`.

    Inside a pool greenlet the task stays on the calling hub; in the top-level
    greenlet of :func:`run` it is dispatched over the pool; elsewhere it goes
    to :func:`default_pool`, round-robin.
    """
    hub = current_hub()
    pool = _dispatcher_for(hub)
    if pool is not None:
        return pool.spawn(fn, *args, **kwargs)
    check_callable(fn, "spawn")
    assert hub is not None  # no dispatcher means a pool hub
    return hub.pool._spawn_on(hub, fn, args, kwargs)


def dispatching_pool() -> Pool | None:
    """The pool whose dispatcher places a spawn made here; None: it stays on this hub.

    The one pinning rule, shared by :func:`spawn` and patched thread starts:
    outside any pool, the default pool; in the top-level greenlet of
    :func:`run`, that run's pool; in any other pool greenlet, None.
    """
    return _dispatcher_for(current_hub())


def _dispatcher_for(hub: Hub | None) -> Pool | None:
    if hub is None:
        return default_pool()
    pool = hub.pool
    return pool if getcurrent() in pool._toplevel else None


def blocking(fn: Callable, /, *args, **kwargs) -> Any:
    """Call a blocking, unpatched ``fn`` without stalling the hub.

    Inside a pool greenlet ``fn`` runs on the hub's own helper threadpool
    (native threads, gevent's ``hub.threadpool``) while the calling greenlet
    waits cooperatively and the hub keeps serving. Anywhere else this is just
    ``fn(*args, **kwargs)``.

    ``fn`` is meant to be unpatched code. gevent objects it creates (patched
    sockets, a patched ``select``'s hub) do not outlive the call: the helper
    thread's hub is destroyed after it (see :func:`_call_on_helper_thread`).
    """
    hub = current_hub()
    if hub is None or getcurrent() is hub.gevent_hub:  # no pool hub, or its loop: in place
        return fn(*args, **kwargs)
    ok, value = hub.gevent_hub.threadpool.apply(_call_on_helper_thread, (fn, args, kwargs))
    if ok:
        return value
    try:
        raise value  # with its traceback from the helper thread
    finally:
        del value  # no cycle through this frame


def _call_on_helper_thread(fn: Callable, args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """Call ``fn`` on a threadpool worker, then drop any gevent hub it left there.

    Returns ``(True, result)`` or ``(False, exception)``: an exception raised
    out of a gevent threadpool task is also printed by the hub (a traceback on
    stderr for every failed call, say each SQL error a caller handles), so it
    is handed back as a value and raised in the caller instead.

    A worker keeps a hub that a call created (patched ``select`` inside
    ``subprocess.communicate`` does), but never runs its loop between calls.
    Since gevent 25.8.1 the patched ``os.close`` defers closing a pipe or
    socket to the calling thread's loop, so on such a worker the next call's
    close never happened: the second ``subprocess.run`` on one worker waited
    forever for an exec-status pipe whose write end was still open (gevent
    issue 2177 is the same trap). Without a hub, ``os.close`` closes at once.
    """
    try:
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # SystemExit too: gevent would also print it
        return False, exc
    finally:
        left = get_hub_if_exists()
        if left is not None:
            worker = getcurrent()  # gevent's worker greenlet, which may have noted it
            if getattr(worker, "_hub_of_worker", None) is left:
                worker._hub_of_worker = None  # or its after-fork cleanup destroys it again
            left.destroy(destroy_loop=True)


class _TopLevel:
    """Runs ``main`` as the pool's top-level greenlet, whose spawns are dispatched."""

    __slots__ = ("main", "pool", "__qualname__")

    def __init__(self, pool: Pool, main: Callable) -> None:
        self.pool = pool
        self.main = main
        self.__qualname__ = getattr(main, "__qualname__", repr(main))

    def __call__(self, *args, **kwargs):
        me = getcurrent()
        self.pool._toplevel.add(me)
        try:
            return self.main(*args, **kwargs)
        finally:
            self.pool._toplevel.discard(me)


def run(
    main: Callable,
    *args,
    size: int | None = None,
    each_hub: bool = False,
    **pool_options,
) -> Any:
    """Run blocking-style ``main(*args)`` on a new pool until everything is done.

    Returns ``main``'s result once ``main`` and every greenlet it spawned have
    finished (the pool is shut down with ``wait=True``, so each hub's loop runs
    until idle). If ``main`` raises, what it spawned is cancelled and the
    exception re-raised. With ``each_hub=True`` main
    runs once on every hub (per-hub servers on SO_REUSEPORT sockets) and the
    list of results is returned. On SIGINT/SIGTERM (main thread only) running
    tasks are cancelled, the hubs stop, and ``run`` returns None.
    Keyword options other than ``size``/``each_hub`` go to :class:`Pool`;
    a gevent server object (``StreamServer``, ``WSGIServer``) is served on
    every hub.
    """
    from greenpool import servers

    if servers.is_gevent_server(main):
        if args:
            raise TypeError("run(server) takes no positional arguments for a server object")
        return servers.run_gevent_server(main, size=size, **pool_options)
    if not callable(main):
        raise TypeError(f"run() needs a callable or a gevent server, got {type(main).__name__}")
    kwargs = pool_options.pop("kwargs", None) or {}
    pool = Pool(size, **pool_options)
    stop = _StopOnSignals(pool)
    try:
        if each_hub:
            futures = pool.broadcast(main, *args, **kwargs)
        else:
            futures = [pool.spawn(_TopLevel(pool, main), *args, **kwargs)]
        failed = None
        for future in futures:
            try:
                if future.exception() is not None and failed is None:
                    failed = future
            except CancelledError:  # a signal cancelled it
                pass
        # main failed: its children are cancelled rather than awaited, so a
        # failed start-up (say, a busy port) cannot hang behind a server loop
        pool.shutdown(wait=True, cancel_futures=failed is not None)
        if stop.signalled:
            log.info("greenpool.run: stopped by signal %s", stop.signalled)
            return None
        results = [f.result() for f in futures]
        return results if each_hub else results[0]
    finally:
        stop.restore()
        pool.shutdown(wait=True, cancel_futures=True)


class _StopOnSignals:
    """SIGINT/SIGTERM handlers for :func:`run`: cancel everything, let run return."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.signalled: str | None = None
        self._previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except (ValueError, OSError):  # not the main interpreter thread
                    pass

    def _handle(self, signum, frame) -> None:
        # Runs between two bytecodes of the main thread, which may hold the
        # pool's (non-reentrant) locks right now: do the shutdown elsewhere.
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name
            start_new_thread(self.pool.shutdown, (False,), {"cancel_futures": True})

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


__all__ = ["Hub", "blocking", "current_hub", "current_pool", "default_pool", "run", "spawn"]
