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


def _cursor_methods() -> dict:
    """The cursor methods that run offloaded (``super()``: the next class, in the end C's)."""

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's name
        return _offloaded(super(_mixins["cursor"], self).execute, query, vars)

    def executemany(self, query, vars_list):
        return _offloaded(super(_mixins["cursor"], self).executemany, query, vars_list)

    def callproc(self, procname, parameters=None):
        call = super(_mixins["cursor"], self).callproc
        return _offloaded(call, procname) if parameters is None else _offloaded(
            call, procname, parameters)

    # A named (server-side) cursor's fetches are round trips too; a client-side
    # cursor's are not, so they stay direct. (Iterating a named cursor fetches
    # in C, in place: each batch of itersize rows still blocks the hub.)
    def fetchone(self):
        call = super(_mixins["cursor"], self).fetchone
        return call() if self.name is None else _offloaded(call)

    def fetchmany(self, size=None):
        call = super(_mixins["cursor"], self).fetchmany
        args = () if size is None else (size,)
        return call(*args) if self.name is None else _offloaded(call, *args)

    def fetchall(self):
        call = super(_mixins["cursor"], self).fetchall
        return call() if self.name is None else _offloaded(call)

    def scroll(self, value, mode="relative"):
        call = super(_mixins["cursor"], self).scroll
        return call(value, mode) if self.name is None else _offloaded(call, value, mode)

    return {"execute": execute, "executemany": executemany, "callproc": callproc,
            "fetchone": fetchone, "fetchmany": fetchmany, "fetchall": fetchall,
            "scroll": scroll}


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
        return _offloaded(super(_mixins["connection"], self).commit)

    def rollback(self):
        return _offloaded(super(_mixins["connection"], self).rollback)

    return {"cursor": cursor, "commit": commit, "rollback": rollback}


#: "cursor" / "connection": psycopg2's class with the offloading methods, made
#: by install_offload(). Put *after* a user's class in a subclass's bases, so
#: the user's Python overrides run first (on the hub) and only the C call is
#: offloaded.
_mixins: dict[str, type] = {}


def _subclass(kind: str, base: type) -> type:
    """``base`` with the offloading methods under it, made once per class."""
    mixin = _mixins[kind]
    if issubclass(base, mixin):
        return base
    if base is mixin.__bases__[0]:  # psycopg2's own class
        return mixin
    cls = _classes.get((kind, base))
    if cls is None:
        with _classes_lock:
            cls = _classes.get((kind, base))
            if cls is None:
                cls = type(base.__name__, (base, mixin), {
                    "__module__": base.__module__, "__qualname__": base.__qualname__,
                    "__doc__": base.__doc__})
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
