"""psycopg2 under ``greenpool.monkey``: queries that do not hold their hub.

psycopg2 is a C driver: left alone, every query blocks its hub's whole thread
(other hubs keep serving, but a hub then runs one query at a time, so 4 hubs
overlap 4 queries where a thread-style app under ``gunicorn -k gthread
--threads 16`` overlapped 16). Two remedies, chosen with
``greenpool.monkey.patch_all(psycopg2=...)``:

``"offload"`` (the default, :func:`install_offload`)
    The calls that wait for the server (``connect``, ``execute``,
    ``executemany``, ``callproc``, ``commit``, ``rollback``, and the fetches
    of a named, server-side cursor) run on the calling hub's helper threads
    (:func:`greenpool.blocking`) while the calling greenlet waits
    cooperatively: the hub keeps serving, and one hub overlaps as many queries
    as it has helper threads, as a thread-style app did. Everything else of
    psycopg2 is unchanged, COPY and large objects included (those still run
    in place, blocking the hub for their duration). It works through
    ``psycopg2.connect``: connections are made from a subclass of the
    requested ``connection_factory`` whose cursors are subclasses of the
    requested ``cursor_factory`` (``isinstance`` holds; ``type(cur) is
    psycopg2.extensions.cursor`` does not). Outside a pool hub (the main
    thread, a native thread) calls run in place, as without it.

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

A query of a greenlet that is killed or times out while its call runs on a
helper thread runs to its end there; the connection's own lock keeps its next
user waiting until then, as between threads.
"""

from __future__ import annotations

from typing import Any

from greenpool._native import allocate_lock
from greenpool.api import blocking

__all__ = ["install", "install_offload", "offload_installed", "wait_callback",
           "offloading_connection", "offloading_cursor"]

_original_connect: Any = None
_get_wait_callback: Any = None  # psycopg2.extensions.get_wait_callback, once installed
_classes: dict[tuple[str, type], type] = {}
_classes_lock = allocate_lock()


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


def _offloaded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the hub's helper threads, unless psycopg2 is green."""
    if _get_wait_callback() is not None:
        return fn(*args, **kwargs)
    return blocking(fn, *args, **kwargs)


class _OffloadingCursor:
    """Mixed in before a cursor class: the calls that wait for the server run offloaded."""

    __slots__ = ()

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's name
        return _offloaded(super().execute, query, vars)

    def executemany(self, query, vars_list):
        return _offloaded(super().executemany, query, vars_list)

    def callproc(self, procname, parameters=None):
        if parameters is None:
            return _offloaded(super().callproc, procname)
        return _offloaded(super().callproc, procname, parameters)

    # A named (server-side) cursor's fetches are round trips too; a client-side
    # cursor's are not, so they stay direct. (Iterating a named cursor fetches
    # in C, in place: each batch of itersize rows still blocks the hub.)
    def fetchone(self):
        if self.name is None:
            return super().fetchone()
        return _offloaded(super().fetchone)

    def fetchmany(self, size=None):
        call = super().fetchmany
        if self.name is None:
            return call() if size is None else call(size)
        return _offloaded(call) if size is None else _offloaded(call, size)

    def fetchall(self):
        if self.name is None:
            return super().fetchall()
        return _offloaded(super().fetchall)

    def scroll(self, value, mode="relative"):
        if self.name is None:
            return super().scroll(value, mode)
        return _offloaded(super().scroll, value, mode)


class _OffloadingConnection:
    """Mixed in before a connection class: its cursors offload, and so do commit/rollback."""

    __slots__ = ()

    def cursor(self, *args, **kwargs):
        if len(args) >= 2:  # cursor(name, cursor_factory, ...)
            args = (args[0], offloading_cursor(args[1] or self.cursor_factory), *args[2:])
        else:
            kwargs["cursor_factory"] = offloading_cursor(
                kwargs.get("cursor_factory") or self.cursor_factory)
        return super().cursor(*args, **kwargs)

    def commit(self):
        return _offloaded(super().commit)

    def rollback(self):
        return _offloaded(super().rollback)


def _subclass(kind: str, mixin: type, base: type) -> type:
    """``base`` with ``mixin`` in front, made once per class (same name and module)."""
    if issubclass(base, mixin):
        return base
    key = (kind, base)
    cls = _classes.get(key)
    if cls is None:
        with _classes_lock:
            cls = _classes.get(key)
            if cls is None:
                cls = type(base.__name__, (mixin, base), {
                    "__module__": base.__module__, "__qualname__": base.__qualname__,
                    "__doc__": base.__doc__})
                _classes[key] = cls
    return cls


def offloading_cursor(factory=None) -> type:
    """The offloading subclass of cursor class ``factory`` (psycopg2's cursor by default).

    A factory that is not a class (a function making cursors) is returned as
    it is: its cursors are not offloaded.
    """
    from psycopg2 import extensions

    if factory is None:
        factory = extensions.cursor
    if not (isinstance(factory, type) and issubclass(factory, extensions.cursor)):
        return factory
    return _subclass("cursor", _OffloadingCursor, factory)


def offloading_connection(factory=None) -> type:
    """The offloading subclass of connection class ``factory`` (psycopg2's by default)."""
    from psycopg2 import extensions

    if factory is None:
        factory = extensions.connection
    if not (isinstance(factory, type) and issubclass(factory, extensions.connection)):
        return factory
    return _subclass("connection", _OffloadingConnection, factory)


def _connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):
    """``psycopg2.connect`` making offloading connections, itself offloaded."""
    if kwargs.get("async") or kwargs.get("async_"):  # asynchronous: nothing ever blocks
        return _original_connect(dsn, connection_factory, cursor_factory, **kwargs)
    return _offloaded(_original_connect, dsn, offloading_connection(connection_factory),
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
        _get_wait_callback = extensions.get_wait_callback
        _original_connect = psycopg2.connect
        psycopg2.connect = _connect
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``psycopg2.connect``."""
    return _original_connect is not None
