"""Serve a WSGI application on every hub of a pool, with gevent's pywsgi.

:func:`serve` runs :func:`greenpool.serve` with a connection handler that
hands each connection to gevent's ``WSGIHandler``: HTTP/1.1 keep-alive,
chunked request and response bodies, ``100-continue``. Each hub gets its own
``pywsgi.WSGIServer`` object (never started: it only carries the app, the
logs and the base environ) because gevent servers are bound to the hub that
made them.

What malformed requests get (pywsgi's limits, unchanged):

* a request line of 8192 bytes or more: ``414 Request URI Too Long``;
* a bad request line, a header line over 64 KiB, more than 100 headers, a
  bad ``Content-Length`` or chunk size: ``400 Bad Request``. pywsgi has no
  ``431``; too many headers gets 400 here (pywsgi alone prints a traceback);
* headers not complete within ``idle_timeout``: ``408 Request Timeout``
  (greenpool's addition; pywsgi alone answers 400 with a traceback);
* a header block over :data:`MAX_HEADER_BYTES` in all: ``431 Request Header
  Fields Too Large`` (greenpool's addition; pywsgi alone bounds only each line
  and their number, which lets 6 MiB of headers through);
* a request body that is not valid chunked encoding: ``400``, logged as a
  client error (pywsgi alone logs a bad chunk-size line as an application
  failure, so one-line requests could flood the error log);
* a request body over ``max_body_size`` bytes (off by default, as in pywsgi
  and gunicorn): ``413 Content Too Large``. A ``Content-Length`` over the
  limit is refused before the application runs (and before ``100 Continue``);
  a chunked body is cut off once it passes the limit: reading ``wsgi.input``
  raises :class:`BodyTooLarge` in the application, which answers 413 unless
  the application already started its response (then the connection is
  closed). The body is never buffered past the limit, and a connection whose
  body was cut off is always closed, even when the application catches
  :class:`BodyTooLarge` and answers: the rest of that body must never be read
  as a next request. After a 413 the server drains what the client is still
  sending for up to :data:`LINGER_SECONDS`, so the client reads the 413 rather
  than a connection reset.

The connection is closed after an error response; other connections are not
affected. Application exceptions give ``500`` and are logged on the
``greenpool.wsgi`` logger, as are client errors (at WARNING).
"""

from __future__ import annotations

import http.client
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from gevent import pywsgi
from greenlet import GreenletExit

from greenpool.hub import current_hub
from greenpool.pool import Pool
from greenpool.server import DEFAULT_SPREAD, Server, idle
from greenpool.server import serve as serve_tcp

__all__ = ["BodyTooLarge", "Handler", "serve"]

log = logging.getLogger("greenpool.wsgi")


_REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class _RequestTimeout(BaseException):
    """The idle timeout struck while reading a request's headers.

    A BaseException so that it passes pywsgi's ``except Exception`` (which
    would answer 400 and print a traceback) up to ``handle_one_request``.
    """


#: The most bytes of header names and values one request may send (431 above it).
MAX_HEADER_BYTES = 64 * 1024

_HEADERS_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class _HeadersTooLarge(BaseException):
    """The header block passed MAX_HEADER_BYTES (a BaseException for the same reason)."""


class BodyTooLarge(Exception):
    """A chunked request body passed the server's ``max_body_size``.

    Raised by ``wsgi.input`` reads; left to propagate, it becomes a ``413``.
    The rest of the body is not read, so the connection is closed after it.
    """


class _ContentLengthTooLarge(BaseException):
    """A declared Content-Length is over max_body_size (a BaseException, like _RequestTimeout)."""


#: After refusing an oversized body, how long (seconds) and how much (bytes)
#: of what the client is still sending to read and drop before closing, so it
#: gets to read the 413 rather than a connection reset ("lingering close", as
#: nginx does). Closing with unread input makes the kernel send a reset.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 2**20

_BODY_TOO_LARGE_STATUS = "413 Content Too Large"
_BODY_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class _LimitedInput(pywsgi.Input):
    """pywsgi's chunked ``wsgi.input``, refusing to return more than ``limit`` bytes in all.

    A read with no size (or one larger than what is left) asks pywsgi for one
    byte more than the room left, so an oversized body is detected without
    reading, or holding in memory, more than ``limit + 1`` bytes of it.
    """

    __slots__ = ("limit", "received", "exceeded")

    def __init__(self, rfile, content_length, socket=None, chunked_input=False, *, limit):
        super().__init__(rfile, content_length, socket=socket, chunked_input=chunked_input)
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def _discard(self):
        # pywsgi drains an unread body after the app (keep-alive). Over the
        # limit, stop there quietly: the app's own outcome (its response, or
        # its exception and 500) stands, and the handler closes the connection.
        try:
            super()._discard()
        except BodyTooLarge:
            pass

    def _chunked_read(self, length=None, use_readline=False):
        room = self.limit - self.received
        if length is None or length > room:
            data = super()._chunked_read(room + 1, use_readline)
            if len(data) > room:
                # The stream is mid-body: never try to discard the rest.
                self._chunked_input_error = True
                self.exceeded = True
                raise BodyTooLarge(f"request body over {self.limit} bytes")
        else:
            data = super()._chunked_read(length, use_readline)
        self.received += len(data)
        return data


def _raised_by_request_body(tb) -> bool:
    """True if the innermost frame of ``tb`` is pywsgi's request-body reader."""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return isinstance(tb.tb_frame.f_locals.get("self"), pywsgi.Input)


class Handler(pywsgi.WSGIHandler):
    """pywsgi's handler, adapted to greenpool servers.

    Waiting for a request line counts as :func:`~greenpool.server.idle`, so a
    graceful stop closes idle keep-alive connections at once; bad headers
    become a 400 without a traceback, headers cut short by the idle timeout
    a 408; application errors go to ``logging``. With ``max_body_size`` set
    on its server, bodies over it get a 413.
    """

    @property
    def max_body_size(self) -> int | None:
        return getattr(self.server, "max_body_size", None)

    def handle(self):
        rfile = self.rfile
        try:
            super().handle()
        finally:
            # pywsgi drops its reader without closing it; closed later by the
            # garbage collector, it would close the socket on a hub that may
            # be gone by then ("operation on destroyed loop"). Close it here,
            # on the connection's own hub.
            rfile.close()

    def read_requestline(self):
        with idle():
            return super().read_requestline()

    def handle_one_request(self):
        try:
            return super().handle_one_request()
        except _RequestTimeout:
            return ("408", _REQUEST_TIMEOUT_RESPONSE)
        except _HeadersTooLarge:
            self.log_error("(from %s) request headers over %d bytes", self.client_address,
                           MAX_HEADER_BYTES)
            return ("431", _HEADERS_TOO_LARGE_RESPONSE)
        except _ContentLengthTooLarge:
            self.log_error("(from %s) Content-Length %d over max_body_size %d",
                           self.client_address, self.content_length, self.max_body_size)
            self.status = _BODY_TOO_LARGE_STATUS
            try:
                self.socket.sendall(_BODY_TOO_LARGE_RESPONSE)
            except OSError:
                return None
            self.time_finish = time.time()
            self.log_request()
            self._linger()
            return None  # closes the connection

    def handle_one_response(self):
        try:
            super().handle_one_response()
        finally:
            body = self.wsgi_input
            if body is not None and body._chunked_input_error:
                # The body was not read to its end (over the limit, cut short,
                # malformed), even if the app swallowed the error and answered:
                # what follows on this connection is not the start of a request.
                self.close_connection = True
            if isinstance(body, _LimitedInput) and body.exceeded:
                self.log_error("(from %s) request body over max_body_size %d; closing",
                               self.client_address, body.limit)
                self._linger()

    def _linger(self) -> None:
        """Stop sending, then read and drop the rest of the request for a bounded time."""
        sock = self.socket
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = sock.recv(min(65536, left))
                if not data:
                    break
                left -= len(data)
        except OSError:  # reset, timeout: nothing more to do for this client
            pass

    def read_request(self, raw_requestline):
        try:
            result = super().read_request(raw_requestline)
        except http.client.HTTPException as exc:  # e.g. more than 100 headers
            raise ValueError(f"invalid request headers: {exc}") from None
        except TimeoutError:
            raise _RequestTimeout from None
        if sum(len(k) + len(v) for k, v in self.headers.items()) > MAX_HEADER_BYTES:
            raise _HeadersTooLarge
        limit = self.max_body_size
        if limit is not None and self.content_length is not None and self.content_length > limit:
            raise _ContentLengthTooLarge
        return result

    def get_environ(self):
        environ = super().get_environ()
        limit = self.max_body_size
        if limit is not None and self.wsgi_input.chunked_input:
            plain = self.wsgi_input
            self.wsgi_input = _LimitedInput(
                plain.rfile, plain.content_length, plain.socket, chunked_input=True, limit=limit
            )
            if environ["wsgi.input"] is plain:  # not an upgrade request (those get rfile)
                environ["wsgi.input"] = self.wsgi_input
        return environ

    def _check_http_version(self):
        try:
            return super()._check_http_version()
        except (ValueError, IndexError):  # "HTTP/1", "HTTP/x.y": not a version
            return False

    def handle_error(self, t, v, tb):
        if issubclass(t, BodyTooLarge):  # logged by handle_one_response
            self.close_connection = True
            if not self.response_length:
                try:
                    self.start_response(_BODY_TOO_LARGE_STATUS,
                                        [("Content-Type", "text/plain"), ("Connection", "close"),
                                         ("Content-Length", "0")])
                    self.write(b"")
                except OSError:
                    pass
            return
        # A malformed chunked body (pywsgi: int(b"", 16) on an empty chunk-size
        # line) is the client's fault, not the application's.
        if issubclass(t, ValueError) and tb is not None and _raised_by_request_body(tb):
            self._handle_client_error(v)
            self.close_connection = True
            self._send_error_response_if_possible(400)
            return
        super().handle_error(t, v, tb)

    def _log_error(self, t, v, tb):
        # pywsgi's hook for unexpected application errors (it would print
        # them through the hub); the 500 response is still sent by pywsgi.
        if not issubclass(t, GreenletExit):
            log.error(
                "WSGI application failed on %s %s from %s",
                self.command, self.path, self.client_address, exc_info=(t, v, tb),
            )


def _log_target(access_log):
    if access_log is None or hasattr(access_log, "write"):
        return access_log
    if hasattr(access_log, "log"):  # a logging.Logger
        return pywsgi.LoggingLogAdapter(access_log, logging.INFO)
    raise TypeError(
        "access_log must be None, a file-like object with write(), or a logging.Logger; "
        f"got {type(access_log).__name__}"
    )


class WSGIConnectionHandler:
    """``handler(sock, addr)`` for :func:`greenpool.serve` that speaks WSGI.

    Holds one ``pywsgi.WSGIServer`` per hub, made on that hub the first time
    it serves a connection.
    """

    def __init__(
        self, app: Callable, *, access_log=None, secure: bool = False,
        max_body_size: int | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        if max_body_size is not None and (
            isinstance(max_body_size, bool) or not isinstance(max_body_size, int)
        ):
            raise TypeError(
                f"max_body_size must be an int (bytes) or None, got {type(max_body_size).__name__}"
            )
        if max_body_size is not None and max_body_size < 0:
            raise ValueError(f"max_body_size must be >= 0 bytes or None, got {max_body_size}")
        self.app = app
        self.max_body_size = max_body_size
        self.access_log = _log_target(access_log)
        self.secure = secure
        self._servers: dict = {}

    def __call__(self, sock, addr) -> None:
        hub = current_hub()
        server = self._servers.get(hub)
        if server is None:
            server = self._servers[hub] = self._make_server(sock, hub)
        server.handle(sock, addr)

    def _make_server(self, sock, hub) -> pywsgi.WSGIServer:
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        environ = {
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "wsgi.url_scheme": "https" if self.secure else "http",
            # The app is called from several OS threads at once when hubs > 1.
            "wsgi.multithread": hub.pool.size > 1,
        }
        server = pywsgi.WSGIServer(
            (host, port),
            self.app,
            log=self.access_log,
            error_log=pywsgi.LoggingLogAdapter(log, logging.WARNING),
            handler_class=Handler,
            environ=environ,
        )
        server.max_body_size = self.max_body_size  # read by Handler
        return server


def serve(
    app: Callable[[dict, Callable], Any],
    address: tuple[str, int] | str = ("127.0.0.1", 0),
    *,
    pool: Pool | None = None,
    hubs: int | None = None,
    ssl_context=None,
    access_log=None,
    spread: str = DEFAULT_SPREAD,
    backlog: int = 1024,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    max_body_size: int | None = None,
) -> Server:
    """Serve the WSGI ``app`` on ``address`` on every hub; returns the running :class:`Server`.

    :param pool: the pool to serve on; by default a private pool of ``hubs``
        hubs (CPU count), shut down by ``Server.stop()``.
    :param ssl_context: serve HTTPS with this ``ssl.SSLContext``.
    :param access_log: ``None`` (no access log, the default), a file-like
        object with ``write`` (one line per request), or a ``logging.Logger``
        (INFO records).
    :param idle_timeout: close a connection that waits this long on the
        client (a slow request, an idle keep-alive connection).
    :param max_body_size: answer ``413`` to request bodies over this many
        bytes (``None``, the default: no limit, the application bounds
        ``wsgi.input`` itself).

    Other options are :func:`greenpool.serve`'s. ``Server.stop(timeout)`` is
    graceful: it stops accepting, closes keep-alive connections waiting for
    a request, and gives requests in progress up to ``timeout`` seconds.
    """
    handler = WSGIConnectionHandler(
        app, access_log=access_log, secure=ssl_context is not None, max_body_size=max_body_size
    )
    return serve_tcp(
        handler,
        address,
        pool=pool,
        hubs=hubs,
        backlog=backlog,
        ssl_context=ssl_context,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        spread=spread,
    )
