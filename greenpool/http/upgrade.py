"""The connection of an ``Upgrade`` request, handed to the app (WebSockets and the like).

Why a wrapper and not the socket itself: two things only the server knows
must travel with the socket it hands over.

* **The bytes already read.** The server reads the connection in 64 KiB
  gulps, so whatever the client sent right behind the upgrade request (a
  WebSocket frame sent without waiting for the ``101``, the first bytes of
  another protocol) may already sit in the server's buffer: they belong to
  the new protocol, so :class:`UpgradedSocket` returns them first, from
  ``recv``/``recv_into``/``makefile()`` reads, before reading the socket
  again. (A ``select()`` or selector on the descriptor does not see them;
  a WebSocket client must wait for the ``101`` before sending anything,
  RFC 6455 4.1, so a well-behaved client never leaves any.)
* **The moment the app takes the connection.** The first use of the
  wrapper (a ``send`` of the ``101``, a ``recv``, ``fileno()``, a
  ``settimeout``...; not reading an attribute such as ``getpeername()``)
  tells the server that
  the connection is the app's now: the server then sends no response of its
  own, never reuses the connection for HTTP, lifts its idle timeout (the
  app times its own protocol: pings) and lets its HTTP parser go. (Upgrade
  requests never run on an app thread: :mod:`greenpool.http.app_threads`.)

Everything else is the gevent socket's own (attribute access is delegated),
so a library that reads, writes, selects on, or closes it works unchanged;
the server closes the socket once the app has returned. (A ``dup()`` is the
gevent socket's: it does not carry the pending bytes.)
"""

from __future__ import annotations

import base64
import binascii
import io
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["UpgradedSocket", "is_websocket", "websocket_refusal"]


#: The socket's own methods (reached through :class:`UpgradedSocket`'s
#: ``__getattr__``) whose use takes the connection, as its I/O methods do;
#: reading an attribute (``getpeername``, ``family``) leaves it the server's.
_TAKING = frozenset({
    "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into", "sendto", "sendmsg", "sendfile",
    "setblocking", "settimeout", "setsockopt", "shutdown", "detach", "dup", "unwrap",
    "read", "write", "do_handshake",
})


def is_websocket(environ: dict) -> bool:
    """Whether ``environ``'s ``Upgrade`` header asks for ``websocket`` (among its tokens)."""
    tokens = environ.get("HTTP_UPGRADE", "").lower()
    return "websocket" in tokens and "websocket" in (t.strip() for t in tokens.split(","))


def websocket_refusal(environ: dict) -> tuple[int, str, bytes] | None:
    """Why a WebSocket opening handshake is invalid: ``(status, reason, extra header lines)``.

    None when ``environ`` is not a WebSocket upgrade or is a valid one
    (RFC 6455 4.2.1): a GET with one ``Sec-WebSocket-Key`` of 16 base64
    bytes and ``Sec-WebSocket-Version: 13``. The server refuses the others
    before the app runs (400; an unknown version: 426 naming version 13, as
    4.2.2 asks), because the libraries answer them with an exception (a 500
    from the app's framework), not the 4xx a malformed request deserves.
    """
    if not is_websocket(environ):
        return None
    if environ["REQUEST_METHOD"] != "GET":
        return 400, "a WebSocket handshake must be a GET (RFC 6455 4.1)", b""
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    try:
        nonce = base64.b64decode(key.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        return 400, "no valid Sec-WebSocket-Key (16 bytes in base64, RFC 6455 4.1)", b""
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if version is None:
        return 400, "no Sec-WebSocket-Version (RFC 6455 4.1)", b""
    if version.strip() != "13":
        return (426, f"Sec-WebSocket-Version {version!r}: only 13 is spoken (RFC 6455 4.2.2)",
                # RFC 9110 15.5.22: a 426 names the protocol to upgrade to (and
                # Upgrade, hop-by-hop, is listed in Connection: 7.8).
                b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
    return None


class UpgradedSocket:
    """The client socket of an upgrade request, with the bytes read past its head.

    ``sock``: the connection's gevent socket (plain or TLS); ``pending``:
    bytes the server read after the request head; ``on_take``: called once,
    with no arguments, at the app's first call on this object. ``taken`` says
    whether that happened.
    """

    __slots__ = ("_sock", "_pending", "_on_take", "taken", "_io_refs", "_closed", "__weakref__")

    def __init__(self, sock, pending: bytes, on_take: Callable[[], None]) -> None:
        self._sock = sock
        self._pending = pending
        self._on_take = on_take
        self.taken = False
        self._io_refs = 0  # files made by makefile() and not closed yet
        self._closed = False

    def take(self) -> None:
        """Mark the connection the app's (what any call on this object does first)."""
        if not self.taken:
            self.taken = True
            self._on_take()
            if not self._pending:
                self.__class__ = _Taken

    def __repr__(self) -> str:
        return (f"<greenpool UpgradedSocket {self._sock!r} pending={len(self._pending)} "
                f"taken={self.taken}>")

    # -- reads: the pending bytes first ---------------------------------------------

    def _take_pending(self, size: int, flags: int) -> bytes:
        data = self._pending[:size]
        if not flags & socket.MSG_PEEK:
            self._pending = self._pending[len(data):]
            if not self._pending and self.taken:
                self.__class__ = _Taken
        return data

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.take()
        if self._pending and bufsize > 0:
            return self._take_pending(bufsize, flags)
        return self._sock.recv(bufsize, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        self.take()
        if self._pending:
            view = memoryview(buffer).cast("B")
            size = nbytes or len(view)
            if size > 0:
                data = self._take_pending(size, flags)
                view[:len(data)] = data
                return len(data)
        return self._sock.recv_into(buffer, nbytes, flags)

    def pending(self) -> int:
        """Bytes read past the request head and not yet returned by a read."""
        return len(self._pending)

    # -- the rest is the socket's ------------------------------------------------------

    def send(self, data, flags: int = 0) -> int:
        self.take()
        return self._sock.send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self.take()
        self._sock.sendall(data, flags)

    def fileno(self) -> int:
        self.take()
        return self._sock.fileno()

    def close(self) -> None:
        """Close the socket (once the files from ``makefile()`` are closed, as a socket does)."""
        self.take()
        self._pending = b""
        self._closed = True
        if self._io_refs <= 0:
            self._sock.close()

    def _decref_socketios(self) -> None:
        # What socket.SocketIO.close() calls: the socket closes with its last file.
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._sock.close()

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file over this object (so the pending bytes are read first), as socket.makefile."""
        self.take()
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = socket.SocketIO(self, rawmode)  # type: ignore[arg-type]  # duck-typed socket
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def __getattr__(self, name: str) -> Any:
        # Only for what the class does not define (__slots__ and methods above).
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _TAKING:  # using the connection; a getter (getpeername) is not
            self.take()
        return getattr(self._sock, name)

    def __enter__(self) -> UpgradedSocket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Taken(UpgradedSocket):
    """An :class:`UpgradedSocket` taken, with no pending bytes left: its I/O goes
    straight to the socket (one call less per message than the checks above)."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._sock.recv(bufsize, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self._sock.recv_into(buffer, nbytes, flags)

    def send(self, data, flags: int = 0) -> int:
        return self._sock.send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self._sock.sendall(data, flags)
