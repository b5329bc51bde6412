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

``mysqldb="green"`` (:func:`install_green`) waits on the hub instead, with no
helper thread: a query is sent (``send_query``), its answer awaited
cooperatively on the calling hub (``gevent.socket.wait_read``), then read
(``read_query_result``); ``commit`` and ``rollback`` go the same way. Cheaper
(each hand-off to a connection's thread costs a thread wake and two GIL
acquisitions more than a thread's own call: 16 threads of 2 ms queries on 4
hubs made 0.6x real threads' rate offloaded, 0.85-0.9x green), but the rows
are read in place once the answer begins: a result the server still streams
(a large, unsorted scan) holds the hub until it has arrived. Interrupted
while it waits (a ``gevent.Timeout``, a kill), a query is awaited for up to
:data:`~greenpool.monkey.dbapi.CANCEL_GRACE` seconds and its result dropped,
so the connection stays usable; past that the connection is closed.
"""

from __future__ import annotations

from typing import Any

from gevent.socket import wait_read

from greenpool.monkey.dbapi import CANCEL_GRACE, Offload, on_pool_hub

__all__ = ["OFFLOAD", "install_green", "install_offload", "offload_installed"]

#: mysqlclient's offloading (no cancel: an interrupted call is waited for).
OFFLOAD = Offload("mysqlclient")
#: The mode installed ("offload" or "green"), or None: the first one installed stays.
_installed: str | None = None

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
    global _installed
    try:
        import MySQLdb
        from MySQLdb.connections import Connection
        from MySQLdb.cursors import BaseCursor
    except ImportError:
        return False
    if _installed is None:
        OFFLOAD.add_mixin("connection", Connection, _connection_methods())
        OFFLOAD.add_mixin("cursor", BaseCursor, _cursor_methods())
        MySQLdb.connect = MySQLdb.Connect = MySQLdb.Connection = _connect
        _installed = "offload"
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``MySQLdb.connect``."""
    return _installed == "offload"


# -- green: the query's wait on the calling hub ------------------------------------------------


def _await_answer(conn) -> None:
    """Wait on this hub until ``conn``'s sent query has an answer; then read its head.

    Interrupted, the query still runs on the server and the connection is out
    of step until its answer is read: wait for it (at most CANCEL_GRACE
    seconds), read and drop it, then let the interruption go on; a query still
    running after that leaves the connection closed.
    """
    try:
        wait_read(conn.fileno())
    except BaseException:
        try:
            wait_read(conn.fileno(), timeout=CANCEL_GRACE)
            conn.read_query_result()
            while True:
                result = conn.store_result()
                if result is not None:
                    result.fetch_row(0)
                if conn.next_result() != 0:
                    break
        except Exception:  # still running, or failed: the connection cannot be trusted
            conn.close()
        raise
    conn.read_query_result()


def _green_methods(original_query) -> dict:
    def query(self, query):
        if not on_pool_hub():  # the main thread, a native thread, a loop callback: in place
            return original_query(self, query)
        if isinstance(query, bytearray):
            query = bytes(query)
        elif isinstance(query, str):
            query = query.encode(self.encoding)
        self.send_query(query)
        _await_answer(self)

    def commit(self):
        if not on_pool_hub():
            return _C.commit(self)
        query(self, b"COMMIT")

    def rollback(self):
        if not on_pool_hub():
            return _C.rollback(self)
        query(self, b"ROLLBACK")

    return {"query": query, "commit": commit, "rollback": rollback}


_C: Any = None  # MySQLdb._mysql.connection, once green mode is installed


def install_green() -> bool:
    """Idempotent: mysqlclient's queries wait on the calling hub (no helper threads); connecting
    runs on the hub's helper threads. False without mysqlclient."""
    global _C, _installed
    try:
        import MySQLdb
        from MySQLdb import _mysql
        from MySQLdb.connections import Connection
    except ImportError:
        return False
    if _installed is None:
        _C = _mysql.connection
        for name, method in _green_methods(Connection.query).items():
            setattr(Connection, name, method)
        original_connect = MySQLdb.connect

        def connect(*args, **kwargs):
            return OFFLOAD.call(None, original_connect, *args, **kwargs)

        MySQLdb.connect = MySQLdb.Connect = MySQLdb.Connection = connect
        _installed = "green"
    return True
