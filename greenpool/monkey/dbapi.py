"""Blocking DB-API 2.0 C drivers under ``greenpool.monkey``: calls that do not hold their hub.

A C driver (psycopg2, mysqlclient) blocks its whole thread while it waits for
the server: on a hub, every greenlet of that hub waits too, so 4 hubs overlap
4 queries where a thread-style app under ``gunicorn -k gthread --threads 16``
overlapped 16. This module is the one design every driver uses
(:mod:`greenpool.monkey.psycopg2`, :mod:`greenpool.monkey.mysqldb` are its
instances): an :class:`Offload` per driver makes *subclasses* of the classes
the app asks for, with methods that run the driver's blocking call on a native
thread of the connection's own (:class:`_Worker`) while the calling greenlet
waits cooperatively, so the hub keeps serving.

* Where: one worker thread per connection, started at its first offloaded
  call, ended when the connection is closed or collected. Not the hub's shared
  helper threads, whose number is capped: ten calls waiting on a row lock
  would hold all of them while the lock holder's COMMIT queued behind them.
* What stays in place: calls from outside a pool hub's greenlets (the main
  thread, a native thread, the worker thread itself, a hub's loop callback),
  and whatever a driver says (psycopg2's green mode).
* Interrupted (``gevent.Timeout``, a kill): the driver's cancel, if it has
  one, then a wait of at most :data:`CANCEL_GRACE` seconds for the call to
  end, so the connection is free again.
* The offloading methods sit *under* the app's own: a subclass of the app's
  class with the driver's mixin after it, so an app's Python override runs on
  the hub and only the driver's call moves (``isinstance`` holds).
"""

from __future__ import annotations

import contextvars
import os
import weakref
from collections import deque
from collections.abc import Callable

from greenlet import getcurrent

from greenpool._native import allocate_lock, start_new_thread
from greenpool._waiter import Signal
from greenpool.api import blocking, current_hub

__all__ = ["CANCEL_GRACE", "Offload", "on_pool_hub"]

_make_once = allocate_lock()  # making an offloading subclass or a connection's worker


#: How long an interrupted call waits for its cancelled query to end before
#: giving the connection up to it (its next user then waits on its lock).
CANCEL_GRACE = 5.0


#: Seconds a worker's thread, its connection closed, waits to serve the next
#: connection before it ends.
IDLE_THREAD_SECONDS = 10.0


class _Carriers:
    """Native threads kept a while after their connection closed, for the next one.

    An app that connects per request (Django's default ``CONN_MAX_AGE = 0``, a
    ``ThreadedConnectionPool(1, n)`` that closes what it returns above
    ``minconn``) would otherwise start and end a thread per request.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._parked: list[list] = []  # [wake lock, worker to serve or None], newest last
        self._pid = os.getpid()

    def start(self, worker: _Worker) -> None:
        """Run ``worker`` on a parked thread, or on a new one."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parked threads stayed in the parent
                self._parked, self._pid = [], os.getpid()
            if self._parked:
                entry = self._parked.pop()
                entry[1] = worker
                entry[0].release()
                return
        start_new_thread(self._carry, (worker,))

    def _carry(self, worker: _Worker | None) -> None:
        while worker is not None:
            worker._run()  # until its connection is closed
            worker = self._park()

    def _park(self) -> _Worker | None:
        wake = allocate_lock()
        wake.acquire()
        entry = [wake, None]
        with self._lock:
            self._parked.append(entry)
        if not wake.acquire(True, IDLE_THREAD_SECONDS):
            with self._lock:
                for i, parked in enumerate(self._parked):
                    if parked is entry:
                        del self._parked[i]
                        return None
            wake.acquire()  # taken by start() meanwhile: its release is on the way
        return entry[1]


_CARRIERS = _Carriers()


class _Worker:
    """One native thread that runs one connection's blocking calls, in order.

    Why not the hub's shared helper threads (``greenpool.blocking``): their
    number is capped (gevent's threadpool: 10), and a call waiting for a row
    lock would keep a thread while the lock holder's next statement (its
    COMMIT) queued for one: with ten such waiters on a hub, nothing could run
    (a deadlock until a statement timeout). One thread per connection, started
    at its first call and ended when the connection is closed or collected, is
    what a thread-style app had (the thread is reused by a later connection:
    :class:`_Carriers`). Calls run in a copy of the caller's context
    (``contextvars``: what adapters and typecasters see); thread-locals stay
    on the caller's thread.
    """

    __slots__ = ("_calls", "_ready", "_lock", "_pid", "_running", "__weakref__")

    def __init__(self) -> None:
        self._calls: deque = deque()
        self._ready = allocate_lock()  # held while there is nothing to run
        self._ready.acquire()
        self._lock = allocate_lock()
        self._pid = os.getpid()
        self._running = False

    def _submit(self, item) -> None:
        with self._lock:
            self._calls.append(item)
            if not self._running:
                self._running = True
                _CARRIERS.start(self)
        try:
            self._ready.release()
        except RuntimeError:  # already signalled: the worker drains everything queued
            pass

    def _run(self) -> None:
        while True:
            self._ready.acquire()
            while True:
                with self._lock:
                    if not self._calls:
                        break
                    item = self._calls.popleft()
                    if item is None and not self._calls:  # stopped: a later call starts anew
                        self._running = False
                        return
                if item is None:  # a call came after the stop: keep serving
                    continue
                context, fn, args, kwargs, box, done = item
                item = None
                try:
                    box[:] = True, context.run(fn, *args, **kwargs)
                except BaseException as exc:  # handed to the caller, raised there
                    box[:] = False, exc
                # Keep nothing of the call while idle (its cursor, its arguments).
                context = fn = args = kwargs = box = None
                done.set()
                done = None

    def stop(self) -> None:
        """End the thread once queued calls are done (idempotent; from any thread)."""
        if self._running and self._pid == os.getpid():
            self._submit(None)

    def call(self, cancel, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on this worker; the calling greenlet waits cooperatively.

        Interrupted (a ``gevent.Timeout``, a kill), the call is cancelled with
        ``cancel()`` (the connection's, or None) and awaited, cooperatively, for
        up to :data:`CANCEL_GRACE` seconds, so the connection is free again,
        before the interruption is re-raised.
        """
        box: list = []
        done = Signal()
        self._submit((contextvars.copy_context(), fn, args, kwargs, box, done))
        try:
            done.wait()
        except BaseException:
            if not done.is_set():
                if cancel is not None:
                    try:
                        cancel()
                    except Exception:  # nothing to cancel, or closed: just wait
                        pass
                done.wait(CANCEL_GRACE)
            raise
        ok, value = box
        if ok:
            return value
        try:
            raise value  # with its traceback from the worker thread
        finally:
            del value, box


def _worker_of(conn) -> _Worker | None:
    """``conn``'s worker, made at its first call; None for a connection not of ours."""
    attrs = getattr(conn, "__dict__", None)
    if attrs is None:
        return None
    worker = attrs.get("_greenpool_worker")
    if worker is None or worker._pid != os.getpid():  # new, or inherited across a fork
        with _make_once:
            worker = attrs.get("_greenpool_worker")
            if worker is None or worker._pid != os.getpid():
                worker = attrs["_greenpool_worker"] = _Worker()
                weakref.finalize(conn, worker.stop)
    return worker


def on_pool_hub() -> bool:
    """In a greenlet of a pool hub (not its loop): where a call must not block the thread."""
    hub = current_hub()
    return hub is not None and getcurrent() is not hub.gevent_hub


class Offload:
    """One driver's offloading: its mixins and the subclasses made from them.

    ``name`` names the driver in messages. ``in_place()``, when given, is asked
    per call: True runs the call where it is (psycopg2's green mode).
    ``cancel`` is the name of the connection method that interrupts a running
    call from another thread (psycopg2's ``cancel``), or None.
    """

    def __init__(self, name: str, *, in_place: Callable[[], bool] | None = None,
                 cancel: str | None = None) -> None:
        self.name = name
        self._in_place = in_place
        self._cancel = cancel
        #: kind ("connection", "cursor") -> the driver's class with the offloading methods.
        self.mixins: dict[str, type] = {}
        self._classes: dict[tuple[str, type], type] = {}  # for classes that take no attributes

    def add_mixin(self, kind: str, base: type, methods: dict[str, Callable]) -> type:
        """``base`` (the driver's class) with ``methods`` over it, as kind ``kind``."""
        mixin = self.mixins.get(kind)
        if mixin is None:
            mixin = self.mixins[kind] = type(base.__name__, (base,), {
                **methods, "__module__": base.__module__, "__qualname__": base.__qualname__,
                "__doc__": base.__doc__})
        return mixin

    def call(self, conn, fn: Callable, /, *args, **kwargs):
        """``fn(*args, **kwargs)`` on ``conn``'s worker thread where waiting would hold a
        pool hub; without ``conn`` (connecting), on the hub's helper threads.

        In place on the main thread, a native thread (the worker itself), a
        hub's loop greenlet, or where the driver says so.
        """
        if not on_pool_hub() or (self._in_place is not None and self._in_place()):
            return fn(*args, **kwargs)
        worker = None if conn is None else _worker_of(conn)
        if worker is None:  # no connection (yet), or not ours: the hub's shared helper threads
            return blocking(fn, *args, **kwargs)
        cancel = None if self._cancel is None else getattr(conn, self._cancel, None)
        return worker.call(cancel, fn, *args, **kwargs)

    def subclass(self, kind: str, base: type) -> type:
        """``base`` with the offloading methods under it, made once per class.

        Kept in ``base``'s own ``__dict__`` (a cycle the collector frees with
        ``base``: a class made per request does not pile up), or, for a class
        that takes no attributes, in this offload's dict.
        """
        mixin = self.mixins[kind]
        if issubclass(base, mixin):
            return base
        if base is mixin.__bases__[0]:  # the driver's own class
            return mixin
        attr = f"_greenpool_offloading_{kind}"
        cls = base.__dict__.get(attr) or self._classes.get((kind, base))
        if cls is None:
            with _make_once:
                cls = base.__dict__.get(attr) or self._classes.get((kind, base))
                if cls is None:
                    cls = type(base.__name__, (base, mixin), {
                        "__module__": base.__module__, "__qualname__": base.__qualname__,
                        "__doc__": base.__doc__})
                    try:
                        setattr(base, attr, cls)
                    except (TypeError, AttributeError):
                        self._classes[(kind, base)] = cls
        return cls

    @staticmethod
    def closed(conn) -> None:
        """Call when ``conn`` is closed: its worker thread ends (idempotent)."""
        worker = getattr(conn, "__dict__", {}).get("_greenpool_worker")
        if worker is not None:
            worker.stop()
