"""mysqlclient (``MySQLdb``) under ``greenpool.monkey``: queries that do not hold their hub.

mysqlclient is the C driver Django recommends for MySQL and MariaDB; it
releases the GIL while it waits for the server, but left alone it blocks its
hub's thread, so 4 hubs run 4 queries at once. :func:`install_offload` makes
it an instance of :mod:`greenpool.monkey.dbapi`: ``MySQLdb.connect`` (and its
aliases ``Connect``/``Connection``) makes connections from a subclass of
``MySQLdb.connections.Connection`` whose calls that wait for the server run on
a native thread of the connection's own, while the calling greenlet waits
cooperatively:

* a cursor's ``execute``/``executemany``/``callproc`` (through
  ``BaseCursor._query``: the query and, for a buffered cursor, reading its
  whole result, in one hand-off), ``nextset``, and an unbuffered cursor's
  fetches (``SSCursor``: ``_fetch_row``);
* the connection's own round trips: ``query``, ``store_result``,
  ``next_result`` (when there is a next result), ``commit``, ``rollback``, ``ping``, ``select_db``,
  ``autocommit``, ``change_user``, ``set_character_set``,
  ``set_server_option``, ``stat``.

Cursor classes the app names (``cursorclass=DictCursor``, its own
subclasses) get the offloading methods under their own, as psycopg2's do.
mysqlclient has no way to cancel a running query from another thread, so a
call interrupted by a ``gevent.Timeout`` or a kill waits for it to end (at most
:data:`~greenpool.monkey.dbapi.CANCEL_GRACE` seconds) before the interruption
is raised. ``patch_all(mysqldb="blocking")`` (or ``GREENPOOL_MYSQLDB=blocking``)
leaves mysqlclient alone.
"""

from __future__ import annotations

from typing import Any

from greenpool.monkey.dbapi import Offload

__all__ = ["OFFLOAD", "install_offload", "offload_installed"]

#: mysqlclient's offloading (no cancel: an interrupted call is waited for).
OFFLOAD = Offload("mysqlclient")
_original_connect: Any = None

#: Connection methods that wait for the server (mysqlclient's C calls, or its
#: Python ones that make them).
_CONNECTION_CALLS = ("query", "store_result", "commit", "rollback", "ping",
                     "select_db", "autocommit", "change_user", "set_character_set",
                     "set_server_option", "stat")
#: Cursor methods that wait: a query with its result (buffered), the next
#: result set, an unbuffered cursor's rows.
_CURSOR_CALLS = ("_query", "nextset", "_fetch_row")


def _offloading(kind: str, name: str, conn_of) -> Any:
    """A method ``name`` that runs the next class's ``name`` offloaded, for ``conn_of(self)``."""

    def method(self, *args, **kwargs):
        call = getattr(super(OFFLOAD.mixins[kind], self), name)
        conn = conn_of(self)
        if conn is None:  # a closed cursor: mysqlclient raises ProgrammingError at once
            return call(*args, **kwargs)
        return OFFLOAD.call(conn, call, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def _connection_methods() -> dict:
    methods = {name: _offloading("connection", name, lambda conn: conn)
               for name in _CONNECTION_CALLS}

    next_result = _offloading("connection", "next_result", lambda conn: conn)

    def next_result_if_any(self):
        # Every execute() and close() asks (cursor._discard): with no more
        # results it is a flag check in C, not worth a hand-off.
        if not self.more_results():
            return super(OFFLOAD.mixins["connection"], self).next_result()
        return next_result(self)

    def cursor(self, cursorclass=None):
        return super(OFFLOAD.mixins["connection"], self).cursor(
            offloading_cursor(cursorclass or self.cursorclass))

    def close(self):
        try:
            return super(OFFLOAD.mixins["connection"], self).close()
        finally:
            OFFLOAD.closed(self)

    return {**methods, "next_result": next_result_if_any, "cursor": cursor, "close": close}


def _cursor_methods() -> dict:
    return {name: _offloading("cursor", name, lambda cur: cur.connection)
            for name in _CURSOR_CALLS}


def offloading_cursor(cursorclass: type) -> type:
    """The offloading subclass of ``cursorclass`` (a ``MySQLdb.cursors.BaseCursor`` subclass);
    anything else is returned as it is."""
    from MySQLdb.cursors import BaseCursor

    if not (isinstance(cursorclass, type) and issubclass(cursorclass, BaseCursor)):
        return cursorclass
    return OFFLOAD.subclass("cursor", cursorclass)


def _connect(*args, **kwargs):
    """``MySQLdb.connect`` making offloading connections, itself offloaded."""
    return OFFLOAD.call(None, OFFLOAD.mixins["connection"], *args, **kwargs)


def install_offload() -> bool:
    """Idempotent: ``MySQLdb.connect`` makes offloading connections. False without mysqlclient."""
    global _original_connect
    try:
        import MySQLdb
        from MySQLdb.connections import Connection
        from MySQLdb.cursors import BaseCursor
    except ImportError:
        return False
    if _original_connect is None:
        OFFLOAD.add_mixin("connection", Connection, _connection_methods())
        OFFLOAD.add_mixin("cursor", BaseCursor, _cursor_methods())
        _original_connect = MySQLdb.connect
        MySQLdb.connect = MySQLdb.Connect = MySQLdb.Connection = _connect
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``MySQLdb.connect``."""
    return _original_connect is not None
