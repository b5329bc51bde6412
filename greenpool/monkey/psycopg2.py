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

import os
import threading
from typing import Any

from greenpool.monkey.dbapi import Offload

__all__ = ["install", "install_offload", "offload_installed", "wait_callback",
           "offloading_connection", "offloading_cursor"]

_original_connect: Any = None
_get_wait_callback: Any = None  # psycopg2.extensions.get_wait_callback, once installed


def _green_mode() -> bool:
    """While psycopg2's wait callback is set, calls wait on the hub: nothing to offload."""
    return _get_wait_callback() is not None


#: psycopg2's offloading (:mod:`greenpool.monkey.dbapi`): an interrupted query
#: is cancelled with ``connection.cancel()``.
OFFLOAD = Offload("psycopg2", in_place=_green_mode, cancel="cancel")
_offloaded = OFFLOAD.call


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


def _cursor_methods() -> dict:
    """The cursor methods that run offloaded (``super()``: the next class, in the end C's)."""

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's name
        call = super(OFFLOAD.mixins["cursor"], self).execute
        return _offloaded(self.connection, call, query, vars)

    def executemany(self, query, vars_list):
        return _offloaded(self.connection, super(OFFLOAD.mixins["cursor"], self).executemany, query,
                          vars_list)

    def callproc(self, procname, parameters=None):
        call = super(OFFLOAD.mixins["cursor"], self).callproc
        args = (procname,) if parameters is None else (procname, parameters)
        return _offloaded(self.connection, call, *args)

    # A named (server-side) cursor's fetches are round trips too; a client-side
    # cursor's are not, so they stay direct. (Iterating a named cursor fetches
    # in C, in place: each batch of itersize rows still blocks the hub.)
    def fetchone(self):
        call = super(OFFLOAD.mixins["cursor"], self).fetchone
        return call() if self.name is None else _offloaded(self.connection, call)

    def fetchmany(self, size=None):
        call = super(OFFLOAD.mixins["cursor"], self).fetchmany
        args = () if size is None else (size,)
        return call(*args) if self.name is None else _offloaded(self.connection, call, *args)

    def fetchall(self):
        call = super(OFFLOAD.mixins["cursor"], self).fetchall
        return call() if self.name is None else _offloaded(self.connection, call)

    def scroll(self, value, mode="relative"):
        call = super(OFFLOAD.mixins["cursor"], self).scroll
        if self.name is None:
            return call(value, mode)
        return _offloaded(self.connection, call, value, mode)

    def close(self):
        call = super(OFFLOAD.mixins["cursor"], self).close
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
        return super(OFFLOAD.mixins["connection"], self).cursor(*args, **kwargs)

    def commit(self):
        return _offloaded(self, super(OFFLOAD.mixins["connection"], self).commit)

    def rollback(self):
        return _offloaded(self, super(OFFLOAD.mixins["connection"], self).rollback)

    def close(self):
        try:
            return super(OFFLOAD.mixins["connection"], self).close()
        finally:
            OFFLOAD.closed(self)

    return {"cursor": cursor, "commit": commit, "rollback": rollback, "close": close}


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
    return OFFLOAD.subclass("cursor", factory)


def offloading_connection(factory=None) -> type:
    """The offloading subclass of connection class ``factory`` (psycopg2's by default)."""
    from psycopg2 import extensions

    if factory is None:
        factory = extensions.connection
    if not (isinstance(factory, type) and issubclass(factory, extensions.connection)):
        return factory
    return OFFLOAD.subclass("connection", factory)


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
        OFFLOAD.add_mixin("cursor", extensions.cursor, _cursor_methods())
        OFFLOAD.add_mixin("connection", extensions.connection, _connection_methods())
        _get_wait_callback = extensions.get_wait_callback
        _original_connect = psycopg2.connect
        psycopg2.connect = _connect
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``psycopg2.connect``."""
    return _original_connect is not None


# -- psycopg2.pool: waits when exhausted (as SQLAlchemy's does), no round trip under its lock --

#: Seconds ``ThreadedConnectionPool.getconn()`` waits for a connection when all
#: are out, before its ``PoolError``; read from :data:`POOL_TIMEOUT_ENV` at install.
DEFAULT_POOL_TIMEOUT = 30.0
POOL_TIMEOUT_ENV = "GREENPOOL_DB_POOL_TIMEOUT"
_pool_timeout: float | None = None  # None until install_pool_wait()
_PoolError: Any = None  # psycopg2.pool.PoolError, once installed
_TX_AT_REST: tuple = ()  # transaction statuses with nothing to roll back, once installed


def pool_timeout(value: Any = None, environ=os.environ) -> float:
    """The pool wait in seconds: ``value`` (``patch_all(db_pool_timeout=)``), or, when None,
    :data:`POOL_TIMEOUT_ENV`, or the default; a bad one is a ValueError naming where it came
    from."""
    if value is not None:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 < value < float("inf")):
            raise ValueError(f"patch_all(db_pool_timeout={value!r}): use seconds > 0, or leave "
                             f"it out for {POOL_TIMEOUT_ENV} (default {DEFAULT_POOL_TIMEOUT:g})")
        return float(value)
    text = environ.get(POOL_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_POOL_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{POOL_TIMEOUT_ENV}={text!r}: expected seconds > 0")
    return seconds


class _Connecting:
    """Holds a slot in a pool's ``_used`` while its connection is made outside the lock."""

    __slots__ = ()

    def close(self) -> None:  # closeall() meanwhile: the connection is closed once made
        pass


def _room(pool) -> threading.Condition:
    """The pool's condition (on its lock): a connection was returned or a slot freed."""
    room = pool.__dict__.get("_greenpool_room")
    if room is None:
        # threading.Condition looked up now: patched, greenpool's cross-hub one.
        room = pool._greenpool_room = threading.Condition(pool._lock)
    return room


def _getconn(self, key=None):
    """``ThreadedConnectionPool.getconn``: waits when exhausted, connects outside the lock.

    psycopg2's raises ``PoolError("connection pool exhausted")`` at once: a
    pool sized for a thread count never saw more callers than that. Under
    greenpool more requests run at once than the app had threads, so a caller
    waits for a ``putconn`` instead, in order, and gets the ``PoolError`` only
    when none came within :data:`POOL_TIMEOUT_ENV` seconds. And psycopg2's
    connects under the pool's lock (a new server process: milliseconds, during
    which every other ``getconn``/``putconn`` of every hub waits); here the lock
    only reserves the slot (``maxconn`` counts it) and psycopg2's ``_connect``
    runs after.
    """
    with self._lock:
        if self.closed or self._pool or (key is not None and key in self._used):
            return self._getconn(key)  # psycopg2's: a free connection, or its PoolError
        if len(self._used) >= self.maxconn:
            timeout = _pool_timeout
            if not _room(self).wait_for(lambda: (self.closed or bool(self._pool)
                                                 or len(self._used) < self.maxconn), timeout):
                raise _PoolError(
                    f"connection pool exhausted: all {self.maxconn} connections stayed in use "
                    f"for {timeout:g} s (greenpool waits {POOL_TIMEOUT_ENV} seconds for one; "
                    "raise the pool's maxconn, or lower the requests in the app at once: "
                    "--app-threads, GREENPOOL_APP_THREADS)")
            if self.closed or self._pool:
                return self._getconn(key)
        if key is None:
            key = self._getkey()
        self._used[key] = slot = _Connecting()
    try:
        conn = self._connect(key)  # psycopg2's (or a subclass's): fills the slot
    except BaseException:
        with self._lock:
            if self._used.get(key) is slot:
                del self._used[key]
                _room(self).notify()
        raise
    with self._lock:
        if self.closed:  # closeall() while connecting: it could not close this one
            conn.close()
            raise _PoolError("connection pool is closed")
    return conn


def _putconn(self, conn=None, key=None, close=False):
    """``ThreadedConnectionPool.putconn``: rolls back before taking the lock, then wakes one
    caller waiting in ``getconn``.

    psycopg2's rolls an open transaction back *under* the lock, so every
    ``getconn``/``putconn`` of every hub waits out that round trip (offloaded:
    a hand-off to another thread and back; 16 workers on 4 hubs that left a
    transaction open spent most of their time queued on the lock, 0.71x of
    their own connections). The connection is still checked out here, so
    rolling it back first changes nothing but who waits; ``_putconn``,
    psycopg2's, still decides (it closes a connection above ``minconn``).
    """
    if (conn is not None and not close and not self.closed and not conn.closed
            and len(self._pool) < self.minconn  # kept, not closed (a hint; _putconn decides)
            and id(conn) in self._rused  # ours: a stranger gets _putconn's PoolError untouched
            and conn.info.transaction_status not in _TX_AT_REST):
        conn.rollback()
    with self._lock:
        self._putconn(conn, key, close)
        _room(self).notify()


def _closeall(self):
    """``ThreadedConnectionPool.closeall``, then wake every waiting caller (they get PoolError)."""
    with self._lock:
        self._closeall()
        _room(self).notify_all()


def install_pool_wait(timeout: float = DEFAULT_POOL_TIMEOUT) -> bool:
    """``psycopg2.pool.ThreadedConnectionPool`` for many hubs: exhausted, it waits up to
    ``timeout`` seconds for a connection; it connects and rolls back outside its lock
    (idempotent; the last timeout holds). False without psycopg2."""
    global _pool_timeout, _PoolError, _TX_AT_REST
    try:
        from psycopg2 import extensions, pool
    except ImportError:
        return False
    _pool_timeout = timeout
    _PoolError = pool.PoolError
    _TX_AT_REST = (extensions.TRANSACTION_STATUS_IDLE, extensions.TRANSACTION_STATUS_UNKNOWN)
    cls = pool.ThreadedConnectionPool
    if cls.getconn is not _getconn:
        cls.getconn, cls.putconn, cls.closeall = _getconn, _putconn, _closeall
    return True
