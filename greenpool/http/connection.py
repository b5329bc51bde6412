"""One HTTP/1.1 connection running a WSGI app (PEP 3333), on a gevent socket.

:func:`serve_connection` reads requests with :class:`~greenpool.http.parser.RequestParser`,
calls the app once per request and frames its response; a :class:`Service`
holds what all connections of one server share (app, base environ, limits,
logs) and the hooks through which a server (``greenpool.wsgi``, the gunicorn
worker) takes part: waiting between requests, counting requests, access log.

An upgrade request (a WebSocket handshake) is the connection's last HTTP
request: its environ holds the connection (:data:`SOCKET_KEYS`, an
:class:`~greenpool.http.upgrade.UpgradedSocket`), and once the app uses it the
connection is the app's until the app returns; then it is closed. Why those
keys, and what the server still does: :mod:`greenpool.http.upgrade`.

The hot path, per request: parse (llhttp, callbacks into plain attributes), a
copy of the connection's base environ, the app, and for a list result one
``sendall`` of head and body. Nothing is spawned per request.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from gevent import get_hub
from gevent.socket import socket as GeventSocket
from greenlet import GreenletExit, getcurrent

from greenpool._version import __version__
from greenpool.http.app_threads import AppThreads, AppThreadsBusy
from greenpool.http.body import BodyTooLarge, IncompleteBody, Input, InvalidBody
from greenpool.http.parser import (
    _METHODS,
    HOST_VALUE,
    SIMPLE_HEAD,
    HTTPError,
    Limits,
    Request,
    RequestParser,
    simple_request,
)
from greenpool.http.response import HEADS, FileWrapper, date_header, head_entry
from greenpool.http.upgrade import UpgradedSocket, is_websocket, websocket_refusal

__all__ = ["Service", "error_response", "serve_connection"]

log = logging.getLogger("greenpool.wsgi")

#: Bytes read from the socket at a time.
RECV_SIZE = 65536
#: After refusing a request, how long (seconds) and how much (bytes) of what
#: the client is still sending to read and drop before closing, so that it
#: reads the refusal instead of a connection reset ("lingering close", as
#: nginx does): closing with unread input makes the kernel send a reset.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 2**20
#: Unread request body the server reads and drops after a response to keep
#: the connection; past it the connection is closed.
DISCARD_BYTES = 2**20
#: Parsers kept for reuse per :class:`Service` (see ``Service.spare_parsers``).
SPARE_PARSERS = 256
#: Request lines whose environ part a :class:`Service` keeps (``Service.simple_lines``).
SIMPLE_LINES = 512

#: ``SERVER_SOFTWARE`` in the environ. Not ``gevent...``: WebSocket libraries
#: (simple-websocket) take that to mean gevent's pywsgi and look for its socket.
SERVER_SOFTWARE = f"greenpool/{__version__}"
#: The environ keys an upgrade request's connection is handed to the app under
#: (an :class:`~greenpool.http.upgrade.UpgradedSocket`): greenpool's own, and
#: gunicorn's, which simple-websocket (flask-sock, python-engineio, so
#: Flask-SocketIO) and other WSGI WebSocket libraries look for.
SOCKET_KEYS = ("greenpool.socket", "gunicorn.socket")
#: An app's exception that only says its upgraded connection is over (see
#: ``_Connection._failed_after_upgrade``).
_PEER_GONE = (StopIteration, ConnectionError, TimeoutError)
_SOCKET_GONE_ERRNOS = frozenset((errno.EBADF, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET))

_REASONS = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


def error_response(status: int, text: str = "", headers: bytes = b"") -> bytes:
    """A complete, closing response, for refusals: an empty body, or ``text`` as plain text.

    ``headers``: more header lines, each with its CRLF.
    """
    body = text.encode("utf-8")
    kind = b"Content-Type: text/plain; charset=utf-8\r\n" if body else b""
    return (b"HTTP/1.1 %d %s\r\n%s%s%sConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (status, _REASONS[status].encode("ascii"), date_header(), kind, headers, len(body),
               body))


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HTTP11 = b"HTTP/1.1 "
_CRLF = b"\r\n"
_CLOSE_END = b"Connection: close\r\n\r\n"
_UPGRADE_END = b"Connection: Upgrade\r\n\r\n"
_KEEP_ALIVE_END = b"Connection: keep-alive\r\n\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

# Request header name -> environ key; bounded (names are the client's choice).
_ENV_KEYS: dict[bytes, str | None] = {b"content-type": "CONTENT_TYPE",
                                      b"content-length": "CONTENT_LENGTH"}
_ENV_KEYS_MAX = 2048


#: Environ keys of the fields a simple head may not carry (but one Host and one
#: ``Connection: close`` or ``keep-alive``): llhttp frames, upgrades, continues.
_SIMPLE_SPECIAL = frozenset(("HTTP_HOST", "HTTP_CONNECTION", "CONTENT_LENGTH",
                             "HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_EXPECT",
                             "HTTP_PROXY_CONNECTION"))


#: Host values found valid (HOST_VALUE), so a simple head skips the regex: at most 256.
_GOOD_HOSTS: set[bytes] = set()


def _env_key(name: bytes) -> str | None:
    """The environ key of a request header name; None for names with ``_`` (dropped).

    Dropped because ``X_Forwarded_For`` would otherwise arrive as
    ``HTTP_X_FORWARDED_FOR``, spoofing what a proxy in front sets.
    """
    if name in _ENV_KEYS:
        return _ENV_KEYS[name]
    text = name.decode("latin-1")
    upper = text.upper().replace("-", "_")
    if "_" in text:  # Content_Length too: it would pose as the framing CONTENT_LENGTH
        key: str | None = None
    elif upper in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = upper
    else:
        key = "HTTP_" + upper
    if len(_ENV_KEYS) < _ENV_KEYS_MAX:
        _ENV_KEYS[name] = key
    return key


class Service:
    """What the connections of one server share, and the hooks a server overrides.

    ``environ`` is the base environ (``SERVER_NAME``, ``SERVER_PORT``,
    ``wsgi.url_scheme``...), copied for every request. ``access_log`` is None,
    a file-like object with ``write``, or a ``logging.Logger``. ``app_threads``:
    None (each connection's greenlet calls the app), or the
    :class:`~greenpool.http.app_threads.AppThreads` that run every request's
    exchange, bounding the requests in the app at once.
    """

    #: Seconds to wait for a request head (None: only the socket's timeout).
    head_timeout: float | None = None
    #: The status sent when a request head is cut short by a timeout (None: just close).
    timeout_status: int | None = 408

    def __init__(self, app: Callable, environ: dict, limits: Limits, access_log=None,
                 app_threads: AppThreads | None = None) -> None:
        self.app = app
        self.limits = limits
        self.app_threads = app_threads
        self.environ = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.url_scheme": "http",
            "SCRIPT_NAME": "",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            **environ,
        }
        #: Parsers of connections waiting between requests (each in the state
        #: between two messages), taken by the next connection that reads: an
        #: idle keep-alive connection holds none (~1 KiB each). One list for
        #: all hubs: append and pop are atomic under the GIL.
        self.spare_parsers: list[RequestParser] = []
        #: Request line of a simple head -> (the base environ with the request
        #: line's keys, whether it is HTTP/1.1, its keep-alive request, its
        #: closing one); bounded, cleared when full.
        self.simple_lines: dict[bytes, tuple[dict, bool, Request, Request]] = {}
        self._access_write = _access_writer(access_log)
        if self._access_write is None and type(self).access is Service.access:
            self.access = None  # type: ignore[assignment]  # skipped per request

    def simple_line(self, line: bytes) -> tuple[dict, bool, Request, Request]:
        """The ``simple_lines`` entry of the request line of a simple head."""
        method, target, version = line.split(b" ")
        http11 = version == b"HTTP/1.1"
        raw, path_info, query = _TARGETS.get(target) or _split_target(target)
        env = self.environ.copy()
        env["RAW_URI"] = env["REQUEST_URI"] = raw
        env["PATH_INFO"] = path_info
        env["QUERY_STRING"] = query
        env["REQUEST_METHOD"] = _METHODS[method]
        env["SERVER_PROTOCOL"] = version.decode("ascii")
        # A bodiless request's wsgi.input: empty, read by no one else, shared.
        env["wsgi.input"] = _EMPTY_INPUT
        entry = (env, http11, simple_request(method, http11, True),
                 simple_request(method, http11, False))
        lines = self.simple_lines
        if len(lines) >= SIMPLE_LINES:
            lines.clear()
        lines[line] = entry
        return entry

    def waiting(self, sock) -> contextlib.AbstractContextManager:
        """A reusable context manager entered while ``sock`` waits for its next request.

        The default marks the connection :func:`greenpool.server.idle`, so a
        graceful stop closes it at once.
        """
        from greenpool.server import idle_scope

        return idle_scope()

    #: Called before each request's app call; returns False to close after
    #: the response (None: always keep alive when the client does).
    before_request: Callable[[dict], bool] | None = None

    def access(self, environ: dict, status: str, headers: list, sent: int,
               seconds: float) -> None:
        """Log one request: ``client - - [time] "request line" status bytes seconds``."""
        line = (
            f'{environ.get("REMOTE_ADDR", "-")} - - [{time.strftime("%d/%b/%Y %H:%M:%S")}] '
            f'"{environ["REQUEST_METHOD"]} {environ["RAW_URI"]} {environ["SERVER_PROTOCOL"]}" '
            f'{status.split(" ", 1)[0]} {sent} {seconds:.6f}\n'
        )
        self._access_write(line)  # type: ignore[misc]  # access is None without a log


def _access_writer(access_log) -> Callable[[str], None] | None:
    if access_log is None:
        return None
    if hasattr(access_log, "write"):
        return access_log.write
    if hasattr(access_log, "log"):  # a logging.Logger
        return lambda line: access_log.info("%s", line.rstrip("\n"))
    raise TypeError(
        "access_log must be None, a file-like object with write(), or a logging.Logger; "
        f"got {type(access_log).__name__}"
    )


class _ClientGone(ConnectionError):
    """Writing to the client failed: the connection is over, quietly."""


def serve_connection(service: Service, sock, addr) -> None:
    """Serve HTTP requests on ``sock`` until the client or the server closes it."""
    _Connection(service, sock, addr).run()


class _Connection:
    """The state of one connection and of the request it is serving."""

    __slots__ = (
        "service", "sock", "addr", "parser", "base", "remote", "plain", "waiting", "start_response",
        "pull", "req", "status", "headers", "head_sent", "chunked", "length", "sent", "close",
        "no_body", "continue_sent", "head_entry",
        "sock_timeout", "head_timer", "head_expired", "drained", "spares", "raw", "simple_max",
        "max_fields", "lines", "upgrade", "release_handshake",
    )

    req: Request
    status: str | None
    headers: list | None
    continue_sent: bool
    head_entry: tuple | None
    length: int | None

    def __init__(self, service: Service, sock, addr) -> None:
        self.service = service
        self.sock = sock
        self.addr = addr
        # Taken when the first bytes arrive, given back while waiting between requests.
        self.parser: RequestParser | None = None
        self.spares = service.spare_parsers
        # A simple head no longer than this is within every limit but the
        # field count (see _simple_environ); longer ones go through llhttp.
        limits = service.limits
        self.simple_max = min(limits.request_line - 16, limits.header_block,
                              limits.header_field - 2 if limits.header_field else 2**63)
        self.max_fields = limits.header_count
        self.lines = service.simple_lines
        # Shared, not copied per connection: 10,000 idle connections would
        # otherwise hold 10,000 copies of it (~1 KiB each).
        self.base = service.environ
        if isinstance(addr, tuple):
            self.remote = (addr[0], str(addr[1]))
        else:
            self.remote = (addr or "", "")
        self.plain = type(sock) is GeventSocket
        # A plain gevent socket's own (non-blocking) socket: reads of a readable
        # socket and sends that fit its buffer skip gevent's Python wrapper.
        self.raw = sock._sock if self.plain else None
        self.waiting = service.waiting(sock)
        self.start_response = self._start_response
        self.pull = self._pull
        self.head_timer = None
        # True when the last read of a plain socket left its buffer empty: the
        # next read waits for data first instead of failing with EAGAIN.
        self.drained = False
        # An upgrade request's UpgradedSocket, while its app runs.
        self.upgrade: UpgradedSocket | None = None
        # A WebSocket handshake's slot in the handshake bound, until taken or answered.
        self.release_handshake: Callable[[], Any] | None = None

    # -- the request loop ------------------------------------------------------------

    def run(self) -> None:
        sock = self.sock
        # The wait for a request head is timed with one reusable libev timer per
        # connection: a gevent socket timeout would make (and drop) a Timeout on
        # every keep-alive wait, ~9 us a request. The socket's own timeout (the
        # server's idle_timeout) still bounds body reads and sends.
        self.sock_timeout = sock.gettimeout()
        timeout = self.service.head_timeout
        if timeout is None:
            timeout = self.sock_timeout
        if timeout is not None:
            # again() re-arms for the full `repeat` from now; start() after a
            # stop() would resume libev's remaining time instead.
            self.head_timer = get_hub().loop.timer(timeout, timeout)
            self.head_expired = (TimeoutError("no request head within the timeout"),)
        try:
            while True:
                head = self._read_head()
                if head is True:
                    # In order; the parser only appends (a pipelined request that
                    # arrives with this one's body) while the last one is served.
                    ready = self.parser.ready  # type: ignore[union-attr]
                    for req in ready:
                        if not self._serve(req, self._environ(req)):
                            return
                        if not req.complete and not self._finish_body(req):
                            return
                    ready.clear()
                    ready = req = None  # not kept while the connection waits
                elif head is False:
                    return
                elif not self._serve(self.req, head):  # a simple head's environ
                    return
                head = False  # its environ is not kept while the connection waits
        except _ClientGone:
            return
        finally:
            if self.head_timer is not None:
                self.head_timer.close()

    def _read_head(self) -> bool | dict:
        """Read until a request head is ready; False (after any refusal) to close.

        True: the parser has requests ready. A dict: one simple head
        (:data:`~greenpool.http.parser.SIMPLE_HEAD`) was read whole, between
        requests; it is the request's environ, and ``self.req`` its request.
        """
        parser = self.parser
        timer = self.head_timer
        while parser is None or not parser.ready:
            if parser is None:
                in_head = False
                self.headers = self.head_entry = None  # the last response's, not kept idle
            else:
                if parser.error is not None:
                    self._refuse(parser.error)
                    return False
                if parser.upgraded:
                    return False
                cur = parser.current
                in_head = cur is not None
                if not in_head:
                    # Between requests: nothing of the last one is kept while
                    # idle, and the parser (between two messages) is lent out.
                    self.req = None  # type: ignore[assignment]
                    self.headers = self.head_entry = None
                    if len(self.spares) < SPARE_PARSERS:
                        self.spares.append(parser)
                    parser = self.parser = None
            try:
                if timer is not None:
                    timer.again(getcurrent().throw, *self.head_expired)
                try:
                    if in_head:
                        data = self._recv_head()
                    else:
                        with self.waiting:
                            data = self._recv_head()
                finally:
                    if timer is not None:
                        timer.stop()
            except TimeoutError:
                status = self.service.timeout_status
                if in_head and status is not None:
                    self._send_quietly(error_response(status))
                return False
            except OSError:
                return False
            if not data:
                return False
            if parser is None:
                if len(data) <= self.simple_max:
                    match = SIMPLE_HEAD.fullmatch(data)
                    if match is not None:
                        env = self._simple_environ(match)
                        if env is not None:
                            return env
                try:
                    parser = self.spares.pop()
                except IndexError:
                    parser = RequestParser(self.service.limits)
                self.parser = parser
            parser.feed(data)
        return True

    def _recv_head(self) -> bytes:
        """One read of request head bytes, timed by the head timer only."""
        sock = self.sock
        if self.drained:
            # The last read emptied the buffer: wait for data (without a
            # socket timeout: the head timer times it) rather than first
            # failing a recv() with EAGAIN, ~1 us a keep-alive request.
            event = sock._read_event
            if event is None:  # closed under us
                return b""
            sock.hub.wait(event)
            try:
                data = self.raw.recv(RECV_SIZE)  # type: ignore[union-attr]  # readable: at once
            except BlockingIOError:  # a spurious wake-up
                data = sock.recv(RECV_SIZE)
        elif self.head_timer is not None and self.sock_timeout is not None:
            # A gevent socket timeout would make (and drop) a Timeout per wait.
            sock.settimeout(None)
            try:
                data = sock.recv(RECV_SIZE)
            finally:
                sock.settimeout(self.sock_timeout)
        else:
            data = sock.recv(RECV_SIZE)
        # Only for plain sockets: TLS holds decrypted bytes the fd does not show.
        self.drained = self.plain and len(data) < RECV_SIZE
        return data

    def _refuse(self, error: HTTPError) -> None:
        """Answer a refused request and close; bad requests are logged at WARNING."""
        log.warning("(from %s) %d: %s", self._client(), error.status, error.reason)
        if self._send_quietly(error_response(error.status)):
            self._linger()

    def _client(self) -> str:
        addr = self.addr
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr or "-")

    def _send_quietly(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _linger(self) -> None:
        """Stop sending, then read and drop the rest of the request for a bounded time."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = sock.recv(min(RECV_SIZE, left))
                if not data:
                    break
                left -= len(data)
        except OSError:  # reset, timeout: nothing more to do for this client
            pass

    def _finish_body(self, req: Request) -> bool:
        """After a response: drop the unread rest of the body to keep the connection."""
        if req.expect_continue and not self.continue_sent:
            return False  # the client waits for a 100 that never came; it may never send
        if self.parser.error is None and Input(req, self.pull).discard(DISCARD_BYTES):  # type: ignore[union-attr]
            return True
        if req.exceeded:
            log.warning("(from %s) request body over max_body_size %s; closing",
                        self._client(), self.service.limits.max_body_size)
        self._linger()
        return False

    def _pull(self) -> None:
        """Read once more of the current request's body (``wsgi.input``'s source)."""
        req = self.req
        if req.expect_continue and not self.continue_sent and not self.head_sent:
            self.continue_sent = True
            self._sendall(_CONTINUE)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise IncompleteBody("timed out waiting for the request body") from None
        if not data:
            raise IncompleteBody("the client closed the connection in the request body")
        self.parser.feed(data)  # type: ignore[union-attr]

    # -- one request -----------------------------------------------------------------

    def _simple_environ(self, match) -> dict | None:
        """The environ of a simple head read whole; None to parse it with llhttp instead.

        What the parser and :meth:`_environ` would make of the same bytes
        (the head is one llhttp accepts, see ``SIMPLE_HEAD``); heads with a
        field that frames a body or changes the connection, and those the
        parser would refuse (Host missing or twice, too many fields), are
        left to the parser. The request line's part of the environ comes from
        ``Service.simple_lines``.
        """
        line, fields = match.groups()
        entry = self.lines.get(line)
        if entry is None:
            entry = self.service.simple_line(line)
        env = entry[0].copy()
        keep_alive = http11 = entry[1]
        hosts = 0
        if fields:
            lines = fields.split(b"\r\n")
            lines.pop()  # after the last CRLF
            if len(lines) > self.max_fields:
                return None
            for line in lines:
                name, _, value = line.partition(b":")
                key = _ENV_KEYS[name] if name in _ENV_KEYS else _env_key(name)
                if key is None:
                    continue
                value = value.strip(b" \t")
                if key in _SIMPLE_SPECIAL:
                    if key == "HTTP_HOST":
                        hosts += 1
                        if value not in _GOOD_HOSTS:
                            if HOST_VALUE.fullmatch(value) is None:
                                return None  # the parser refuses it (400)
                            if len(_GOOD_HOSTS) < 256:
                                _GOOD_HOSTS.add(value)
                    elif key != "HTTP_CONNECTION" or key in env:
                        return None  # framing, upgrades, 100-continue: the parser's
                    else:
                        option = value.lower()
                        if option == b"close":
                            keep_alive = False
                        elif option == b"keep-alive":
                            keep_alive = True
                        else:
                            return None
                if key in env:
                    env[key] += ", " + value.decode("latin-1")
                else:
                    env[key] = value.decode("latin-1")
        if hosts > 1 or (http11 and not hosts):  # HTTP/1.1: exactly one; HTTP/1.0: at most one
            return None
        self.req = entry[2] if keep_alive else entry[3]
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = self.remote
        return env

    def _environ(self, req: Request) -> dict:
        env = self.base.copy()
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = self.remote
        target = req.target
        entry = _TARGETS.get(target)
        if entry is None:
            entry = _split_target(target)
        env["RAW_URI"] = env["REQUEST_URI"] = entry[0]
        env["PATH_INFO"] = entry[1]
        env["QUERY_STRING"] = entry[2]
        env["REQUEST_METHOD"] = req.method
        env["SERVER_PROTOCOL"] = _PROTOCOLS[req.version]
        for name, value in req.headers:
            key = _ENV_KEYS[name] if name in _ENV_KEYS else _env_key(name)
            if key is None:
                continue
            if key in env:
                env[key] += ", " + value.decode("latin-1")
            else:
                env[key] = value.decode("latin-1")
        env["wsgi.input"] = Input(req, self.pull)
        return env

    def _serve(self, req: Request, env: dict) -> bool:
        """Run the app for ``req`` and its ``env`` and send the response; False to close.

        With app threads, the whole exchange runs on one of them (what the app
        keeps per thread lives there), or, when none is free in time, the
        request gets a 503 and the connection is closed.
        """
        threads = self.service.app_threads
        if req.upgrade:
            refusal = websocket_refusal(env)
            if refusal is not None:
                status, reason, headers = refusal
                log.warning("(from %s) %d: %s", self._client(), status, reason)
                if self._send_quietly(error_response(status, f"{reason}\n", headers)):
                    self._linger()
                return False
            self._offer_connection(env)
            if is_websocket(env):
                # Not on an app thread: the handshake turns into a connection the
                # app may hold for hours (see greenpool.http.app_threads). Other
                # upgrades (h2c, which curl --http2 asks for on every request) are
                # requests like the rest, bounded as they are.
                if threads is None:
                    return self._exchange(req, env)
                # Within the handshake bound (AppThreads.admit_handshake) until the
                # app takes the connection (_taken) or returns; whichever comes
                # first takes release_handshake and calls it, so it runs once. A
                # route that answers handshake headers with HTTP runs as boundedly
                # as any request.
                # Here, not in a method of its own: a frame more under a parked
                # WebSocket's app crosses a page of its greenlet's frame stack
                # (+4 KiB an idle connection, measured).
                try:
                    self.release_handshake = threads.admit_handshake()
                except AppThreadsBusy as exc:
                    return self._busy(exc, env)
                try:
                    return self._exchange(req, env)
                finally:
                    release, self.release_handshake = self.release_handshake, None
                    if release is not None:
                        release()
        if threads is None:
            return self._exchange(req, env)
        try:
            return threads.run(self._exchange, req, env)
        except AppThreadsBusy as exc:
            return self._busy(exc, env)

    def _busy(self, exc: AppThreadsBusy, env: dict) -> bool:
        """No app thread (or handshake slot) in time: a 503, and the connection closes."""
        log.warning("(from %s) 503 for %s %s: %s", self._client(), env["REQUEST_METHOD"],
                    env["RAW_URI"], exc)
        if self._send_quietly(error_response(503, f"{exc}\n")):
            self._linger()
        return False

    def _offer_connection(self, env: dict) -> None:
        """Put an upgrade request's connection in its environ, for the app to take.

        Under :data:`SOCKET_KEYS`, as an :class:`~greenpool.http.upgrade.UpgradedSocket`
        that returns the bytes read past the request head first. Only upgrade
        requests get it: on any other request the connection is HTTP's
        (keep-alive, pipelining), and an app writing to it would corrupt that.
        """
        handle = self.upgrade = UpgradedSocket(
            self.sock, self.parser.rest if self.parser is not None else b"", self._taken)
        for key in SOCKET_KEYS:
            env[key] = handle

    def _taken(self) -> None:
        """The app took the connection: it is the app's until it returns, then closed.

        From here the server sends nothing on it, the idle timeout no longer
        applies (the app times its own protocol), and the HTTP parser is let go.
        """
        self.close = True
        self.parser = None  # HTTP is done with this connection: its parser is not kept
        release, self.release_handshake = self.release_handshake, None
        if release is not None:  # a WebSocket now: it leaves the handshake bound
            release()
        try:
            self.sock.settimeout(None)
        except OSError:
            pass

    def _exchange(self, req: Request, env: dict) -> bool:
        """The app's call for ``req`` and its response; False to close the connection."""
        service = self.service
        began = time.time() if service.access is not None else 0.0
        self.req = req
        # The rest of the response's state (length, chunked, no_body, sent) is
        # set by _head, before anything reads it.
        self.status = None
        self.head_sent = False
        self.close = not req.keep_alive
        self.continue_sent = False
        if service.before_request is not None and not service.before_request(env):
            self.close = True
        upgrade = self.upgrade
        if upgrade is not None:
            self.sent = 0  # for the access log when the app takes the connection
        result = None
        try:
            result = service.app(env, self.start_response)
            if upgrade is None or not upgrade.taken:
                self._send_result(result)
        except _ClientGone:
            raise
        except GreenletExit:
            raise
        except Exception as exc:
            if upgrade is not None and upgrade.taken:
                self._failed_after_upgrade(exc, env)
            else:
                self._app_failed(exc, env)
        finally:
            if upgrade is not None:
                self.upgrade = None
                self.close = True
            # A list has no close(); getattr would raise and catch AttributeError.
            close = None if type(result) is list else getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("close() of the WSGI app's response failed")
                    self.close = True
        if service.access is not None:
            status, headers = self.status or "500", self.headers or []
            if upgrade is not None and upgrade.taken and not status.startswith("101"):
                # The app switched protocols on the socket itself; what it gave
                # start_response afterwards (a framework's response) was dropped.
                status, headers = "101", []
            service.access(env, status, headers, self.sent, time.time() - began)
        return not self.close

    def _failed_after_upgrade(self, exc: Exception, env: dict) -> None:
        """The app raised after taking the connection: nothing to answer, it closes.

        ``StopIteration`` is how WebSocket libraries tell gunicorn (whose
        ``gunicorn.socket`` they took) that the connection was handled
        (simple-websocket's gunicorn mode, flask-sock, python-engineio): not
        an error. Nor is the peer going away or the socket closed under a
        reader; any other ``OSError`` (a file the app could not open) is the
        app's failure and is logged as one.
        """
        if isinstance(exc, _PEER_GONE) or (
                isinstance(exc, OSError) and exc.errno in _SOCKET_GONE_ERRNOS):
            log.debug("(from %s) upgraded connection ended: %r", self._client(), exc)
        else:
            log.error("WSGI application failed on upgraded connection %s %s from %s",
                      env["REQUEST_METHOD"], env["RAW_URI"], self._client(), exc_info=exc)

    def _send_result(self, result) -> None:
        if type(result) is list:
            if not self.head_sent:
                body = b"".join(result)
                size = len(body)
                head = self._head(size)
                if self.no_body:
                    self._sendall(head)
                elif self.length == size:  # the usual case: what _frame_known would do
                    self.sent = size
                    self._sendall(head + body)
                else:
                    self._sendall(head + self._frame_known(body))
                return
        elif type(result) is FileWrapper and self.plain and not self.head_sent:
            if self._sendfile(result):
                return
        for data in result:
            if data:
                self._write(data)
            elif type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"WSGI app yielded {type(data).__name__}, not bytes")
        if not self.head_sent:
            self._sendall(self._head(0))
        elif self.chunked:
            self._sendall(_LAST_CHUNK)
        if self.length is not None and self.sent < self.length and not self.no_body:
            log.warning("WSGI app sent %d of the %d bytes its Content-Length promised; closing",
                        self.sent, self.length)
            self.close = True

    def _frame_known(self, body: bytes) -> bytes:
        """A whole body whose size the head already told: trimmed to a promised length."""
        length = self.length
        self.sent = len(body)
        if length is not None and len(body) != length:
            self.close = True
            if len(body) > length:
                log.warning("WSGI app sent more than its Content-Length %d; cut off", length)
                body = body[:length]
                self.sent = length
        return body

    def _sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a file with os.sendfile; False to fall back to iterating it."""
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            offset = filelike.tell()
            size = os.fstat(fd).st_size - offset
        except (AttributeError, OSError, ValueError):
            return False
        if size < 0:
            return False
        head = self._head(size)
        self._sendall(head)
        if self.no_body:
            return True
        count = size if self.length is None else min(size, self.length)
        try:
            sent = self.sock.sendfile(filelike, offset, count) if count else 0
        except OSError as exc:
            raise _ClientGone(str(exc)) from None
        self.sent = sent
        if self.length is not None and sent < self.length:
            self.close = True
        return True

    def _start_response(self, status: str, headers: list, exc_info=None) -> Callable:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response was already called (pass exc_info to "
                                 "replace the response after an error)")
        try:
            entry = HEADS.get((status, tuple(headers)))
        except TypeError:
            entry = None
        if entry is None or type(headers) is not list:
            entry = head_entry(status, headers)
        self.status = status
        self.headers = headers
        self.head_entry = entry
        return self._write

    def _head(self, known: int | None) -> bytes:
        """The response head; ``known`` is the body's size when the whole body is at hand.

        Sets the response's framing: ``length``, ``chunked``, ``no_body``, ``sent``.
        """
        if self.status is None:
            raise AssertionError("the WSGI app did not call start_response before its body")
        lines, code, length, close, has_date = self.head_entry  # type: ignore[misc]
        req = self.req
        no_body = req.method == "HEAD"
        chunked = False
        framing = b""
        if close:
            self.close = True
        if code < 200 or code == 204 or code == 304:
            no_body = True
            length = None
            if code == 101 and self.upgrade is not None:
                # Switching Protocols through start_response: the app speaks
                # the new protocol on the socket once this head is out.
                self.upgrade.take()
            elif code < 200:
                self.close = True  # a final response the client would wait behind
        elif length is not None:
            pass
        elif known is not None:
            length = known
            framing = b"Content-Length: %d\r\n" % known
        elif no_body:
            pass  # HEAD without a length: no framing to announce
        elif req.version == "1.1":
            chunked = True
            framing = _CHUNKED
        else:
            self.close = True  # HTTP/1.0: the body ends where the connection does
        if self.close:
            end = _UPGRADE_END if code == 101 and self.upgrade is not None else _CLOSE_END
        elif req.version == "1.0":
            end = _KEEP_ALIVE_END
        else:
            end = _CRLF
        self.length = length
        self.chunked = chunked
        self.no_body = no_body
        self.sent = 0
        self.head_sent = True
        if has_date:
            return b"".join((lines, framing, end))
        return b"".join((lines, date_header(), framing, end))

    def _write(self, data: bytes) -> None:
        """PEP 3333's ``write()``, and how iterated bodies are sent."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"WSGI body data must be bytes, got {type(data).__name__}")
            data = bytes(data)
        head = b"" if self.head_sent else self._head(None)
        if self.no_body or not data:
            if head:
                self._sendall(head)
            return
        if self.chunked:
            self.sent += len(data)
            self._sendall(b"%s%x\r\n%s\r\n" % (head, len(data), data))
            return
        length = self.length
        if length is not None and self.sent + len(data) > length:
            log.warning("WSGI app sent more than its Content-Length %d; cut off", length)
            data = data[:length - self.sent]
            self.close = True
        self.sent += len(data)
        self._sendall(head + data if head else data)

    def _sendall(self, data: bytes) -> None:
        # One send() first: gevent's sendall() asks the kernel for SO_SNDBUF on
        # every call, and a response usually fits the socket buffer whole.
        raw = self.raw
        try:
            if raw is not None:
                try:
                    sent = raw.send(data)
                except BlockingIOError:  # the socket buffer is full
                    sent = 0
            else:
                sent = self.sock.send(data)
            if sent < len(data):
                self.sock.sendall(memoryview(data)[sent:])
        except OSError as exc:
            self.close = True
            raise _ClientGone(str(exc)) from None

    def _app_failed(self, exc: Exception, env: dict) -> None:
        """The app (or reading its body) raised: answer what fits, log what is ours to log."""
        self.close = True
        if isinstance(exc, BodyTooLarge):
            log.warning("(from %s) request body over max_body_size %s; closing",
                        self._client(), self.service.limits.max_body_size)
            status = 413
        elif isinstance(exc, (InvalidBody, IncompleteBody)):
            log.warning("(from %s) bad request body: %s", self._client(), exc)
            status = 400
        else:
            log.error("WSGI application failed on %s %s from %s", env["REQUEST_METHOD"],
                      env["RAW_URI"], self._client(), exc_info=exc)
            status = 500
        if not self.head_sent:
            self.status = f"{status} {_REASONS[status]}"
            self.headers = []
            self.sent = 0
            self._send_quietly(error_response(status))
        if status == 413:
            self._linger()


_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
#: The ``wsgi.input`` of every simple (bodiless, complete) request.
_EMPTY_INPUT = Input(simple_request(b"GET", True, True), lambda: None)
# Request target -> (RAW_URI, PATH_INFO, QUERY_STRING); bounded, cleared when full.
_TARGETS: dict[bytes, tuple[str, str, str]] = {}
_TARGETS_MAX = 4096


def _split_target(target: bytes) -> tuple[str, str, str]:
    """The environ strings of a request target: PATH_INFO percent-decoded, as latin-1.

    An absolute-form target (``http://host/p?q``) gives its path and query;
    a fragment (never sent by a conforming client) is dropped.
    """
    key = target
    raw = target.decode("latin-1")
    if target[:1] != b"/":
        target = _origin_form(target)
    target = target.partition(b"#")[0]
    path, _, query = target.partition(b"?")
    path_info = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    entry = (raw, path_info, query.decode("latin-1"))
    if len(_TARGETS) >= _TARGETS_MAX:
        _TARGETS.clear()
    _TARGETS[key] = entry
    return entry


def _origin_form(target: bytes) -> bytes:
    """The path and query of an absolute-form target (``http://host/p?q`` -> ``/p?q``)."""
    scheme, sep, rest = target.partition(b"://")
    if not sep:
        return target  # asterisk-form ("*") or garbage llhttp let through: kept as is
    slash = rest.find(b"/")
    query = rest.find(b"?")
    if slash < 0 or 0 <= query < slash:
        return b"/" + rest[query:] if query >= 0 else b"/"
    return rest[slash:]

