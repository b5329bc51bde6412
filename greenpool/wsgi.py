"""Serve a WSGI application on every hub of a pool, with greenpool's own HTTP/1.1 core.

:func:`serve` runs :func:`greenpool.serve` with a connection handler that
speaks HTTP/1.1 (:mod:`greenpool.http`: httptools' llhttp parser in strict
mode plus RFC 9112 checks of its own) and calls the app per PEP 3333:
keep-alive and pipelining, chunked request and response bodies,
``100-continue``, ``wsgi.file_wrapper`` with ``os.sendfile`` on plain sockets.

What malformed requests get (the connection is closed after each refusal,
nothing sent behind a refused request is parsed, and other connections are
not affected; the docs' "Strict HTTP/1.1" section has every case):

* a request line over 8190 bytes: ``414 URI Too Long``;
* a header block over 64 KiB: ``431``; more than 100 header fields: ``400``;
* bad framing: ``400`` (``Content-Length`` with ``Transfer-Encoding``,
  duplicate or invalid ``Content-Length``, whitespace before a colon, CR, LF
  or NUL in a value, obs-fold, bad chunks, two ``Host`` fields, an HTTP/1.1
  request without ``Host``); a transfer coding other than one final
  ``chunked``, and ``CONNECT``: ``501``; HTTP/0.9 or HTTP/2.0: ``505`` (other version
  strings: ``400``);
* headers not complete within ``idle_timeout``: ``408``;
* a request body over ``max_body_size`` bytes (off by default, as in gunicorn):
  ``413 Content Too Large``. A ``Content-Length`` over the limit is refused
  before the application runs (and before ``100 Continue``); a chunked body
  is cut off once it passes the limit: reading ``wsgi.input`` raises
  :class:`BodyTooLarge` in the application, which answers 413 unless the
  application already started its response (then the connection is closed).
  The body is never buffered past the limit, and a connection whose body was
  cut off is always closed, even when the application catches
  :class:`BodyTooLarge` and answers. After a refusal the server drains what
  the client is still sending for a bounded time, so the client reads the
  refusal rather than a connection reset.

Requests in the app at once: with ``app_threads`` (by default after
``greenpool.monkey.patch_all()``, for thread-style apps) every request runs on
one of a fixed number of long-lived app threads
(:mod:`greenpool.http.app_threads`), as under a threaded server; one that
waits longer than ``app_wait_timeout`` for a free one gets ``503 Service
Unavailable`` and a closed connection.

Upgrades (WebSockets): an upgrade request's connection is handed to the app
as ``environ["greenpool.socket"]`` and ``environ["gunicorn.socket"]`` (the key
simple-websocket, flask-sock and Flask-SocketIO look for); once the app uses
it the server stays out of the way and closes it after the app returns
(:mod:`greenpool.http.upgrade`). It counts toward ``max_connections``, and a
graceful stop gives it the stop's timeout.

Application exceptions give ``500`` and are logged on the ``greenpool.wsgi``
logger, as are client errors (at WARNING). Response heads the app gives are
checked (a status or header with CR, LF, NUL or non-latin-1 text is a 500),
and a body longer than its ``Content-Length`` is cut off there: nothing the
app did not mean as this response's body reaches the client.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from typing import Any

from greenpool.http.app_threads import (
    AUTO,
    DEFAULT_WAIT_TIMEOUT,
    AppThreads,
    app_threads_for,
)
from greenpool.http.body import BodyTooLarge
from greenpool.http.connection import Service, serve_connection
from greenpool.http.parser import Limits
from greenpool.http.response import FileWrapper
from greenpool.hub import current_hub
from greenpool.pool import Pool
from greenpool.server import DEFAULT_SPREAD, Server
from greenpool.server import serve as serve_tcp

__all__ = ["AUTO", "BodyTooLarge", "FileWrapper", "Limits", "WSGIConnectionHandler",
           "app_threads_for", "serve"]



class WSGIConnectionHandler:
    """``handler(sock, addr)`` for :func:`greenpool.serve` that speaks HTTP/1.1 and WSGI.

    The :class:`~greenpool.http.connection.Service` (base environ: the
    listening address, the scheme) is made from the first connection.
    """

    def __init__(
        self, app: Callable, *, access_log=None, secure: bool = False,
        limits: Limits | None = None, app_threads: AppThreads | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        self.app = app
        self.app_threads = app_threads
        self.limits = limits if limits is not None else Limits()
        self.access_log = access_log
        self.secure = secure
        self._service: Service | None = None
        # Checked now: a bad access_log is an error at the call, not per connection.
        Service(app, {}, self.limits, access_log)

    def __call__(self, sock, addr) -> None:
        service = self._service
        if service is None:
            service = self._service = self._make_service(sock)
        serve_connection(service, sock, addr)

    def _make_service(self, sock) -> Service:
        hub = current_hub()
        assert hub is not None, "connection handlers run on a pool hub"
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
        return Service(self.app, environ, self.limits, self.access_log, self.app_threads)


def _check_max_body_size(max_body_size) -> None:
    if max_body_size is not None and (
        isinstance(max_body_size, bool) or not isinstance(max_body_size, int)
    ):
        raise TypeError(
            f"max_body_size must be an int (bytes) or None, got {type(max_body_size).__name__}"
        )
    if max_body_size is not None and max_body_size < 0:
        raise ValueError(f"max_body_size must be >= 0 bytes or None, got {max_body_size}")


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
    limits: Limits | None = None,
    app_threads: int | str | None = AUTO,
    app_wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
) -> Server:
    """Serve the WSGI ``app`` on ``address`` on every hub; returns the running :class:`Server`.

    ``Server.stop(timeout)`` is graceful: it stops accepting, closes
    keep-alive connections waiting for a request, and gives requests in
    progress up to ``timeout`` seconds. Malformed and oversized requests get
    the statuses the module docstring lists, and a closed connection.

    :param app: the WSGI application, called as ``app(environ,
        start_response)`` on the hub that accepted the connection.
    :param address: ``(host, port)`` or ``"host:port"``, as for
        :func:`greenpool.serve`.
    :param pool: the pool to serve on; by default a private pool of ``hubs``
        hubs (CPU count), shut down by ``Server.stop()``.
    :param hubs: the size of that private pool.
    :param ssl_context: serve HTTPS with this ``ssl.SSLContext``.
    :param access_log: ``None`` (no access log, the default), a file-like
        object with ``write`` (one line per request), or a ``logging.Logger``
        (INFO records).
    :param spread: how connections reach the hubs, as for
        :func:`greenpool.serve`.
    :param backlog: the ``listen()`` backlog of each listening socket.
    :param max_connections: at most this many connections at once, as for
        :func:`greenpool.serve`.
    :param idle_timeout: close a connection that waits this long on the
        client (a slow request, an idle keep-alive connection); a request
        head not complete by then gets ``408``.
    :param max_body_size: answer ``413`` to request bodies over this many
        bytes (``None``, the default: no limit, the application bounds
        ``wsgi.input`` itself). Overrides ``limits.max_body_size`` when given.
    :param limits: request line, header and body limits (:class:`Limits`;
        the defaults when None).
    :param app_threads: requests in the app at once in this process, each on
        a long-lived app thread that keeps its thread-locals
        (:mod:`greenpool.http.app_threads`); ``None``: no limit, each
        connection's greenlet calls the app; ``"auto"`` (the default):
        64 after ``greenpool.monkey.patch_all()`` (an app written for
        threads sizes its connections for a thread count), else None.
    :param app_wait_timeout: seconds a request waits for a free app thread
        before its ``503`` (None: no limit).
    """
    threads = app_threads_for(app_threads, app_wait_timeout)
    _check_max_body_size(max_body_size)
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a greenpool.wsgi.Limits, got {type(limits).__name__}")
    limits = limits if limits is not None else Limits()
    if max_body_size is not None:
        limits = dataclasses.replace(limits, max_body_size=max_body_size)
    handler = WSGIConnectionHandler(
        app, access_log=access_log, secure=ssl_context is not None, limits=limits,
        app_threads=threads,
    )
    return serve_tcp(
        handler.__call__,  # a bound method: the call adds no C stack to every idle connection
        address,
        pool=pool,
        hubs=hubs,
        backlog=backlog,
        ssl_context=ssl_context,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        spread=spread,
    )
