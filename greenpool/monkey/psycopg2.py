"""psycopg2 under ``greenpool.monkey``: queries that do not hold their hub.

psycopg2 is a C driver: left alone, every query blocks its hub's whole thread
(other hubs keep serving, but a hub then runs one query at a time, so 4 hubs
overlap 4 queries where a thread-style app under ``gunicorn -k gthread
--threads 16`` overlapped 16). Two remedies, chosen with
``greenpool.monkey.patch_all(psycopg2=...)``:

``"offload"`` (the default, :func:`install_offload`)
    The calls that wait for the server (``execute``, ``executemany``,
    ``callproc``, ``commit``, ``rollback``, and a named, server-side cursor's
    fetches and ``close``) run on a native thread of the connection's own,
    and ``connect`` on the hub's helper threads, while the calling greenlet
    waits cooperatively: the hub keeps serving, and it overlaps as many
    queries as it has connections in use, as a thread-style app did. The
    call runs in a copy of the caller's ``contextvars`` context (adapters and
    typecasters see it; thread-locals they read are the worker's). A call
    interrupted by a ``gevent.Timeout`` or a kill cancels its query
    (``connection.cancel()``) and waits for it to end (at most
    :data:`CANCEL_GRACE` seconds), so the connection is free again. Everything
    else of psycopg2 is unchanged and runs in place: COPY, large objects,
    iterating a named cursor, ``tpc_*``, ``reset()``,
    ``set_client_encoding()``. It works through ``psycopg2.connect``:
    connections are made from a subclass of the requested
    ``connection_factory`` whose cursors are subclasses of the requested
    ``cursor_factory``, with the offloading methods *under* the app's own
    (``isinstance`` holds; ``type(cur) is psycopg2.extensions.cursor`` does
    not; a factory that is a function, not a class, is not offloaded).
    Outside a pool hub's greenlets (the main thread, a native thread, a hub's
    loop callback) calls run in place.

``"green"`` (or ``True``; :func:`install`)
    psycogreen's wait callback, which waits with ``gevent.socket.wait_read``/
    ``wait_write`` on the *calling* hub's loop, so a connection handed from
    hub to hub keeps working: one hub overlaps as many queries as it has
    greenlets, with no helper threads. Opt-in, because psycopg2 refuses some
    calls in this mode (``copy_from``, ``copy_to``, ``copy_expert`` raise
    ``ProgrammingError``, as do large objects). While the callback is set,
    the offloading subclasses call straight through.

``"blocking"`` (or ``False``)
    psycopg2 as it is: each call blocks its hub's thread.

"""

from __future__ import annotations

import contextvars
import os
import weakref
from collections import deque
from typing import Any

from greenlet import getcurrent

from greenpool._native import allocate_lock, start_new_thread
from greenpool._waiter import Signal
from greenpool.api import blocking, current_hub

__all__ = ["install", "install_offload", "offload_installed", "wait_callback",
           "offloading_connection", "offloading_cursor"]

_original_connect: Any = None
_get_wait_callback: Any = None  # psycopg2.extensions.get_wait_callback, once installed
_classes: dict[tuple[str, type], type] = {}
_make_once = allocate_lock()  # making an offloading subclass or a connection's worker


def wait_callback(conn, timeout=None) -> None:
    """psycopg2 wait callback: poll the connection, waiting cooperatively on this hub."""
    from gevent.socket import wait_read, wait_write
    from psycopg2 import OperationalError, extensions

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise OperationalError(f"bad state from poll: {state}")


def _import_extensions():
    try:
        from psycopg2 import extensions
    except ImportError as exc:
        raise ImportError(
            "greenpool.monkey.patch_psycopg2() needs psycopg2 (pip install psycopg2-binary); "
            "leave psycopg2 at its default in patch_all() when the app does not use it"
        ) from exc
    return extensions


def install() -> None:
    """Register :func:`wait_callback` with psycopg2 (ImportError if it is not installed)."""
    _import_extensions().set_wait_callback(wait_callback)


#: How long an interrupted call waits for its cancelled query to end before
#: giving the connection up to it (its next user then waits on its lock).
CANCEL_GRACE = 5.0


class _Worker:
    """One native thread that runs one connection's blocking calls, in order.

    Why not the hub's shared helper threads (``greenpool.blocking``): their
    number is capped (gevent's threadpool: 10), and a call waiting for a row
    lock would keep a thread while the lock holder's next statement (its
    COMMIT) queued for one: with ten such waiters on a hub, nothing could run
    (a deadlock until a statement timeout). One thread per connection, started
    at its first call and ended when the connection is closed or collected, is
    what a thread-style app had. Calls run in a copy of the caller's context
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
                start_new_thread(self._run, ())
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


def _on_pool_hub() -> bool:
    """In a greenlet of a pool hub (not its loop): where a call must not block the thread."""
    hub = current_hub()
    return hub is not None and getcurrent() is not hub.gevent_hub


def _offloaded(conn, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on ``conn``'s worker thread (no ``conn``: the hub's helper threads)
    where waiting would hold a pool hub.

    In place on the main thread, a native thread, a hub's own loop greenlet,
    or while psycopg2's wait callback is set (green mode).
    """
    if not _on_pool_hub() or _get_wait_callback() is not None:
        return fn(*args, **kwargs)
    worker = None if conn is None else _worker_of(conn)
    if worker is None:  # no connection (yet), or not ours: the hub's shared helper threads
        return blocking(fn, *args, **kwargs)
    return worker.call(conn.cancel, fn, *args, **kwargs)


def _cursor_methods() -> dict:
    """The cursor methods that run offloaded (``super()``: the next class, in the end C's)."""

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's name
        return _offloaded(self.connection, super(_mixins["cursor"], self).execute, query, vars)

    def executemany(self, query, vars_list):
        return _offloaded(self.connection, super(_mixins["cursor"], self).executemany, query,
                          vars_list)

    def callproc(self, procname, parameters=None):
        call = super(_mixins["cursor"], self).callproc
        args = (procname,) if parameters is None else (procname, parameters)
        return _offloaded(self.connection, call, *args)

    # A named (server-side) cursor's fetches are round trips too; a client-side
    # cursor's are not, so they stay direct. (Iterating a named cursor fetches
    # in C, in place: each batch of itersize rows still blocks the hub.)
    def fetchone(self):
        call = super(_mixins["cursor"], self).fetchone
        return call() if self.name is None else _offloaded(self.connection, call)

    def fetchmany(self, size=None):
        call = super(_mixins["cursor"], self).fetchmany
        args = () if size is None else (size,)
        return call(*args) if self.name is None else _offloaded(self.connection, call, *args)

    def fetchall(self):
        call = super(_mixins["cursor"], self).fetchall
        return call() if self.name is None else _offloaded(self.connection, call)

    def scroll(self, value, mode="relative"):
        call = super(_mixins["cursor"], self).scroll
        if self.name is None:
            return call(value, mode)
        return _offloaded(self.connection, call, value, mode)

    def close(self):
        call = super(_mixins["cursor"], self).close
        if self.name is None or self.closed:
            return call()
        return _offloaded(self.connection, call)  # CLOSE on the server: a round trip

    return {"execute": execute, "executemany": executemany, "callproc": callproc,
            "fetchone": fetchone, "fetchmany": fetchmany, "fetchall": fetchall,
            "scroll": scroll, "close": close}


def _connection_methods() -> dict:
    """The connection methods: cursors that offload, and commit/rollback offloaded."""

    def cursor(self, *args, **kwargs):
        # By now the classes above this one (DictConnection's cursor(), say)
        # have filled in their default factory; wrap whatever is asked for.
        if len(args) >= 2:  # cursor(name, cursor_factory, ...)
            args = (args[0], offloading_cursor(args[1] or self.cursor_factory), *args[2:])
        else:
            kwargs["cursor_factory"] = offloading_cursor(
                kwargs.get("cursor_factory") or self.cursor_factory)
        return super(_mixins["connection"], self).cursor(*args, **kwargs)

    def commit(self):
        return _offloaded(self, super(_mixins["connection"], self).commit)

    def rollback(self):
        return _offloaded(self, super(_mixins["connection"], self).rollback)

    def close(self):
        try:
            return super(_mixins["connection"], self).close()
        finally:
            worker = self.__dict__.get("_greenpool_worker")
            if worker is not None:
                worker.stop()

    return {"cursor": cursor, "commit": commit, "rollback": rollback, "close": close}


#: "cursor" / "connection": psycopg2's class with the offloading methods, made
#: by install_offload(). Put *after* a user's class in a subclass's bases, so
#: the user's Python overrides run first (on the hub) and only the C call is
#: offloaded.
_mixins: dict[str, type] = {}


def _subclass(kind: str, base: type) -> type:
    """``base`` with the offloading methods under it, made once per class.

    Kept in ``base``'s own ``__dict__`` (a cycle the collector frees with
    ``base``: a class made per request does not pile up), or, for a class
    that takes no attributes, in a module dict.
    """
    mixin = _mixins[kind]
    if issubclass(base, mixin):
        return base
    if base is mixin.__bases__[0]:  # psycopg2's own class
        return mixin
    attr = f"_greenpool_offloading_{kind}"
    cls = base.__dict__.get(attr) or _classes.get((kind, base))
    if cls is None:
        with _make_once:
            cls = base.__dict__.get(attr) or _classes.get((kind, base))
            if cls is None:
                cls = type(base.__name__, (base, mixin), {
                    "__module__": base.__module__, "__qualname__": base.__qualname__,
                    "__doc__": base.__doc__})
                try:
                    setattr(base, attr, cls)
                except (TypeError, AttributeError):
                    _classes[(kind, base)] = cls
    return cls


def offloading_cursor(factory=None) -> type:
    """The offloading subclass of cursor class ``factory`` (psycopg2's cursor by default).

    A factory that is not a cursor class (a function making cursors) is
    returned as it is: its cursors are not offloaded.
    """
    from psycopg2 import extensions

    if factory is None:
        factory = extensions.cursor
    if not (isinstance(factory, type) and issubclass(factory, extensions.cursor)):
        return factory
    return _subclass("cursor", factory)


def offloading_connection(factory=None) -> type:
    """The offloading subclass of connection class ``factory`` (psycopg2's by default)."""
    from psycopg2 import extensions

    if factory is None:
        factory = extensions.connection
    if not (isinstance(factory, type) and issubclass(factory, extensions.connection)):
        return factory
    return _subclass("connection", factory)


def _connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):
    """``psycopg2.connect`` making offloading connections, itself offloaded."""
    if kwargs.get("async") or kwargs.get("async_"):  # asynchronous: nothing ever blocks
        return _original_connect(dsn, connection_factory, cursor_factory, **kwargs)
    # No connection yet, so no lock to wait on: the hub's shared helper threads do.
    return _offloaded(None, _original_connect, dsn, offloading_connection(connection_factory),
                      cursor_factory, **kwargs)


def install_offload() -> bool:
    """Idempotent: ``psycopg2.connect`` makes offloading connections. False without psycopg2."""
    global _original_connect, _get_wait_callback
    try:
        import psycopg2
        from psycopg2 import extensions
    except ImportError:
        return False
    if _original_connect is None:
        for kind, base, methods in (("cursor", extensions.cursor, _cursor_methods()),
                                    ("connection", extensions.connection,
                                     _connection_methods())):
            _mixins[kind] = type(kind, (base,), {
                **methods, "__module__": base.__module__, "__qualname__": base.__qualname__,
                "__doc__": base.__doc__})
        _get_wait_callback = extensions.get_wait_callback
        _original_connect = psycopg2.connect
        psycopg2.connect = _connect
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``psycopg2.connect``."""
    return _original_connect is not None
