"""mysqlclient (``MySQLdb``) under ``greenpool.monkey``: queries that do not hold their hub.

mysqlclient is the C driver Django recommends for MySQL and MariaDB; it
releases the GIL while it waits for the server, but left alone it blocks its
hub's thread, so 4 hubs run 4 queries at once. :func:`install_offload` makes
it an instance of :mod:`greenpool.monkey.dbapi`: ``MySQLdb.connect`` (and its
aliases ``Connect``/``Connection``) makes connections from a subclass of
``MySQLdb.connections.Connection`` whose calls that wait for the server run on
a native thread of the connection's own, while the calling greenlet waits
cooperatively:

* a query's answer unless it is already whole (below): the connection's
  ``query`` and ``store_result``, which a cursor's ``execute``/
  ``executemany``/``callproc`` go through;
* ``nextset`` and an unbuffered cursor's fetches (``SSCursor``: ``_fetch_row``);
* the connection's own round trips: ``next_result`` (when there is a next
  result), ``ping``, ``select_db``, ``autocommit``, ``change_user``,
  ``set_character_set``, ``set_server_option``, ``stat``.

A query's *answer* is read on the hub when that cannot wait: the query is
sent from the hub (``send_query``; queries over :data:`IN_PLACE_LIMIT` bytes
go to the thread), its answer awaited on the hub's loop
(``gevent.socket.wait_read``), and once the socket is readable the bytes
already there are peeked at (``MSG_PEEK``, nothing consumed): when they are
one whole answer (an OK or error packet, or a whole result set of at most
:data:`IN_PLACE_LIMIT` bytes, no further result announced: see
:func:`answer_complete`), the hub reads it (``read_query_result``, then the
cursor's ``store_result``) with no hand-off at all. Anything else (an answer
still arriving, a large one, several result sets, ``LOAD DATA LOCAL``, a TLS
or compressed connection, whose bytes do not parse) is read on the
connection's thread. Each hand-off to that thread costs a thread wake and two
GIL acquisitions more than a thread's own call, which is most of what
separated offloaded queries from real threads (``benchmarks/threads.py
--driver mysqlclient``, 16 workers on 4 hubs, 2 ms queries: 0.65-0.81x real
threads with every query handed off, 0.89-0.93x with whole answers read on
the hub). ``commit`` and ``rollback`` go the same way (as
``COMMIT``/``ROLLBACK`` queries).

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
(``read_query_result``), whole or not; ``commit`` and ``rollback`` go the
same way. A little cheaper (0.94-0.96x real threads in the figure above), but
the rows are read in place once the answer begins: a result the server still
streams (a large, unsorted scan) holds the hub until it has arrived. Interrupted
while it waits (a ``gevent.Timeout``, a kill), a query is awaited for up to
:data:`~greenpool.monkey.dbapi.CANCEL_GRACE` seconds and its result dropped,
so the connection stays usable; past that the connection is closed.
"""

from __future__ import annotations

import _socket
from typing import Any

from gevent.socket import wait_read

from greenpool.monkey.dbapi import CANCEL_GRACE, Offload, on_pool_hub

__all__ = ["IN_PLACE_LIMIT", "OFFLOAD", "answer_complete", "install_green", "install_offload",
           "offload_installed"]

#: mysqlclient's offloading (no cancel: an interrupted call is waited for).
OFFLOAD = Offload("mysqlclient")
#: The mode installed ("offload" or "green"), or None: the first one installed stays.
_installed: str | None = None
_C: Any = None  # MySQLdb._mysql.connection, once a mode is installed

#: Connection methods that wait for the server (mysqlclient's C calls, or its
#: Python ones that make them); ``query``, ``store_result``, ``commit`` and
#: ``rollback`` read a whole answer in place (below).
_CONNECTION_CALLS = ("query", "store_result", "commit", "rollback", "ping",
                     "select_db", "autocommit", "change_user", "set_character_set",
                     "set_server_option", "stat")
#: Cursor methods that wait: the next result set, an unbuffered cursor's rows
#: (a buffered cursor's ``_fetch_row`` stays in place).
#: (A cursor's query goes through the connection's ``query`` and ``store_result``.)
_CURSOR_CALLS = ("nextset", "_fetch_row")

#: The largest query sent from the hub, and the largest answer read there, in
#: bytes: a larger query could wait for room in the socket's send buffer, a
#: larger answer costs the hub more to check than a hand-off costs.
IN_PLACE_LIMIT = 16 * 1024
_PEEK = _socket.MSG_PEEK | _socket.MSG_DONTWAIT
_SERVER_MORE_RESULTS_EXISTS = 0x0008
_CLIENT_COMPRESS = 0x0020
_CLIENT_SSL = 0x0800
_RawSocket = _socket.socket  # never gevent's: the peek must not wait


# -- answers that are already whole ------------------------------------------------------------


def _lenenc(buf: bytes, pos: int) -> tuple[int, int]:
    """The length-encoded integer at ``pos`` and the position after it."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:  # 0xFB (NULL) or 0xFF: not an integer here
        raise ValueError(first)
    if pos + 1 + size > len(buf):
        raise IndexError(pos)
    return int.from_bytes(buf[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def _ok_status(buf: bytes, start: int) -> int:
    """The status flags of the OK packet (header 0x00 or 0xFE) whose payload starts at ``start``."""
    _, pos = _lenenc(buf, start + 1)  # affected rows
    _, pos = _lenenc(buf, pos)  # last insert id
    return buf[pos] | buf[pos + 1] << 8


def answer_complete(buf: bytes) -> bool:
    """True if ``buf`` is exactly one whole answer to a query (MySQL client/server protocol).

    That is: one error packet; one OK packet; or a result set (its column
    count, its column definitions unless MariaDB's metadata cache skips them,
    the EOF packet after them unless the connection deprecated it, the rows,
    and the closing EOF or OK packet); in each case with no further result
    announced (``SERVER_MORE_RESULTS_EXISTS``) and nothing after it. False
    for anything else, including what cannot be told apart from a partial
    answer (an empty result set where the closing packet may be the EOF
    after the columns), a ``LOAD DATA LOCAL`` request, and bytes that are not
    this protocol (TLS, compression): they are read where waiting is harmless.
    """
    try:
        return _complete(buf)
    except (IndexError, ValueError):
        return False


def _complete(buf: bytes) -> bool:
    n = len(buf)
    packets = []  # (payload start, payload end)
    pos = 0
    while pos + 4 <= n:
        start = pos + 4
        end = start + (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16)
        if end > n or end == start:
            return False
        packets.append((start, end))
        pos = end
    if pos != n or not packets:
        return False
    start, end = packets[0]
    head = buf[start]
    if head == 0xFF:  # an error
        return len(packets) == 1
    if head == 0x00:  # OK: no result set
        return len(packets) == 1 and not _ok_status(buf, start) & _SERVER_MORE_RESULTS_EXISTS
    if head == 0xFB:  # LOAD DATA LOCAL: the driver must answer with the file
        return False
    columns, after = _lenenc(buf, start)
    if after < end and buf[after] == 0:  # MariaDB: column definitions cached, not sent
        columns = 0
    rest = packets[1 + columns:]
    if len(rest) < 2:
        return False
    # EOF/OK packets start with 0xFE and are short; a row starting with 0xFE is
    # a string of 2**24 bytes or more, so never shorter than 9.
    ends = [i for i, (s, e) in enumerate(rest) if buf[s] == 0xFE and e - s < 9]
    last = len(rest) - 1
    s, e = rest[last]
    if ends == [0, last]:  # EOF after the columns, the rows, EOF
        if e - s < 5:
            return False
        return not (buf[s + 3] | buf[s + 4] << 8) & _SERVER_MORE_RESULTS_EXISTS
    if ends == [last]:  # deprecated EOF: the rows (at least one), then an OK packet
        return not _ok_status(buf, s) & _SERVER_MORE_RESULTS_EXISTS
    return False


def _as_bytes(conn, query) -> bytes:
    """A query as ``send_query`` takes it (what ``Connection.query`` accepts: str, bytes...)."""
    if isinstance(query, bytearray):
        return bytes(query)
    if isinstance(query, str):
        return query.encode(conn.encoding)
    return query


def _answer_whole(conn) -> bool:
    """Whether the bytes waiting on ``conn``'s socket are one whole answer (nothing is read)."""
    try:
        sock = _RawSocket(fileno=conn.fileno())
    except OSError:
        return False
    try:
        buf = sock.recv(IN_PLACE_LIMIT + 1, _PEEK)
    except OSError:
        return False
    finally:
        sock.detach()
    return len(buf) <= IN_PLACE_LIMIT and answer_complete(buf)


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
    offloaded_query = methods["query"]
    offloaded_store_result = methods["store_result"]
    offloaded_read = _offloading("connection", "read_query_result", lambda conn: conn)

    def __init__(self, *args, **kwargs):
        super(OFFLOAD.mixins["connection"], self).__init__(*args, **kwargs)
        # Peeking needs the protocol's own bytes on the socket: not TLS, not
        # compressed (options files may turn either on: then no peeking).
        tls = kwargs.get("ssl") or kwargs.get("ssl_mode") not in (None, "DISABLED")
        options = kwargs.get("read_default_file") or kwargs.get("read_default_group")
        flags = self.client_flag & (_CLIENT_COMPRESS | _CLIENT_SSL)
        self._greenpool_peek = not (tls or options or flags)
        self._greenpool_whole = False
        # The last result's rows are small enough to convert on the hub: it was
        # read there (a buffered cursor converts every row at once, _fetch_row(0)).
        self._greenpool_small = False

    def query(self, query):
        if not (on_pool_hub() and self.__dict__.get("_greenpool_peek")):
            return offloaded_query(self, query)
        query = _as_bytes(self, query)
        self._greenpool_whole = False
        if len(query) > IN_PLACE_LIMIT:
            return offloaded_query(self, query)
        self.send_query(query)
        _await_answer(self)
        if _answer_whole(self):
            result = _C.read_query_result(self)
            self._greenpool_whole = True  # after the read: an error answer raised
            return result
        return offloaded_read(self)

    def store_result(self):
        if self.__dict__.get("_greenpool_whole"):  # read in place: already here
            self._greenpool_whole = False
            self._greenpool_small = True
            return _C.store_result(self)
        self._greenpool_small = False
        return offloaded_store_result(self)

    def commit(self):
        if not (on_pool_hub() and self.__dict__.get("_greenpool_peek")):
            return methods["commit"](self)
        query(self, b"COMMIT")

    def rollback(self):
        if not (on_pool_hub() and self.__dict__.get("_greenpool_peek")):
            return methods["rollback"](self)
        query(self, b"ROLLBACK")

    methods.update(__init__=__init__, query=query, store_result=store_result, commit=commit,
                   rollback=rollback)

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


def _cursor_methods(unbuffered: type) -> dict:
    methods = {name: _offloading("cursor", name, lambda cur: cur.connection)
               for name in _CURSOR_CALLS}
    offloaded_fetch = methods["_fetch_row"]

    def _fetch_row(self, size=1):
        # A buffered cursor's rows are all in memory (store_result read them),
        # but converting them all (_fetch_row(0)) takes as long as the result
        # is large: only a result read on the hub (at most IN_PLACE_LIMIT
        # bytes) is converted there. An unbuffered one's (SSCursor) may wait.
        conn = self.connection
        if (not isinstance(self, unbuffered) and conn is not None
                and conn.__dict__.get("_greenpool_small")):
            return super(OFFLOAD.mixins["cursor"], self)._fetch_row(size)
        return offloaded_fetch(self, size)

    return {**methods, "_fetch_row": _fetch_row}


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
    global _C, _installed
    try:
        import MySQLdb
        from MySQLdb import _mysql
        from MySQLdb.connections import Connection
        from MySQLdb.cursors import BaseCursor, CursorUseResultMixIn
    except ImportError:
        return False
    if _installed is None:
        _C = _mysql.connection
        OFFLOAD.add_mixin("connection", Connection, _connection_methods())
        OFFLOAD.add_mixin("cursor", BaseCursor, _cursor_methods(CursorUseResultMixIn))
        MySQLdb.connect = MySQLdb.Connect = MySQLdb.Connection = _connect
        _installed = "offload"
    return True


def offload_installed() -> bool:
    """True once :func:`install_offload` patched ``MySQLdb.connect``."""
    return _installed == "offload"


# -- green: the query's wait on the calling hub ------------------------------------------------


def _await_answer(conn) -> None:
    """Wait on this hub until ``conn``'s sent query has an answer (the caller reads it).

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


def _green_methods(original_query) -> dict:
    def query(self, query):
        if not on_pool_hub():  # the main thread, a native thread, a loop callback: in place
            return original_query(self, query)
        self.send_query(_as_bytes(self, query))
        _await_answer(self)
        self.read_query_result()

    def commit(self):
        if not on_pool_hub():
            return _C.commit(self)
        query(self, b"COMMIT")

    def rollback(self):
        if not on_pool_hub():
            return _C.rollback(self)
        query(self, b"ROLLBACK")

    return {"query": query, "commit": commit, "rollback": rollback}


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
