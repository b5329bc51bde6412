"""A gunicorn worker that serves each worker process's requests on N gevent hubs.

    gunicorn -k greenpool.gunicorn.Worker --threads 4 -w 2 module:app

Each worker process runs a :class:`greenpool.Pool` of ``--threads`` hubs (one
native thread each). Every hub serves HTTP with greenpool's own HTTP/1.1 core
(:mod:`greenpool.http`: llhttp, strict RFC 9112 framing) on gunicorn's
listening sockets (a ``dup`` of each listener per hub, so all hubs accept on
the same sockets and the kernel spreads connections over them); a connection
stays on the hub that accepted it. Code that blocks in a GIL-releasing call (a
C database driver, hashing, compression) stalls one hub, not the process.

gunicorn's settings honoured: ``--keep-alive`` (a client silent that long is
closed; 0 closes after each response), ``--limit-request-line`` (414),
``--limit-request-fields`` (400), ``--limit-request-field_size`` (431),
``--max-requests``, the access log and its format.

Monkey patching: like gunicorn's own gevent worker, :meth:`Worker.init_process`
patches (with ``greenpool.monkey.patch_all()``: gevent's patching, plus the
cross-hub pieces a multi-hub process needs) and calls ``gevent.reinit()``
before the app is loaded, so pure-Python blocking I/O in the app (``socket``,
``ssl``, ``time.sleep``, ``requests``...) yields to the hub instead of
blocking it, and apps written for ``-k gevent`` run unchanged. The hub
threads stay native threads under patching. Patching happens in each worker
process after the fork, before the app is imported (unless ``--preload``, as
with the gevent worker).

Lifecycle, following ``gunicorn/workers/ggevent.py``: the main thread calls
``notify()`` while every hub answers a ping (a hub stuck longer than
``--timeout`` stops the heartbeat and gunicorn restarts the worker). SIGTERM
is a graceful stop: every hub stops accepting, closes idle keep-alive
connections, and lets in-flight requests finish for up to
``--graceful-timeout`` seconds. SIGQUIT/SIGINT stop at once.
``--max-requests`` (with its jitter) counts requests over all hubs.
``--worker-connections`` is the per-process limit, split evenly over the hubs.

WebSockets: ``SERVER_SOFTWARE`` names greenpool (not the gevent worker's
``gevent/...``, which sends simple-websocket looking for pywsgi's socket), and
an upgrade request gets its connection in ``gunicorn.socket``, as under
gunicorn's own workers: flask-sock and Flask-SocketIO work unchanged. An
upgraded connection counts toward ``--worker-connections`` and gets
``--graceful-timeout`` on SIGTERM.

Requests in the app at once: a ``-k gthread`` app never saw more than
``--threads`` of them and sized its connections for that, so each worker runs
requests on at most ``GREENPOOL_APP_THREADS`` (default 64) long-lived app
threads (:mod:`greenpool.http.app_threads`), each with its own thread-locals;
a request that waits longer than ``GREENPOOL_APP_WAIT_TIMEOUT`` seconds
(default 30) for one gets a 503. ``GREENPOOL_APP_THREADS=0``: no limit, a
greenlet per connection calls the app (as ``-k gevent``).
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket as stdlib_socket
import time
from datetime import timedelta
from typing import Any

import gevent
import gevent.pool
import gevent.socket
from gevent.server import StreamServer
from greenlet import GreenletExit

try:
    from gunicorn import __version__ as gunicorn_version
    from gunicorn.http.wsgi import base_environ
    from gunicorn.sock import ssl_context
    from gunicorn.workers import base
    from gunicorn.workers.ggevent import GeventResponse
except ImportError as exc:  # gunicorn, or what its gevent worker imports (packaging)
    raise ImportError(
        f"greenpool.gunicorn.Worker needs gunicorn and what its gevent worker imports "
        f"({exc.name or exc}): install them with pip install 'greenpool[gunicorn]'",
        name=exc.name,
    ) from exc

import greenpool
from greenpool._native import allocate_lock
from greenpool.http import Limits, Service, serve_connection
from greenpool.http.app_threads import app_threads_for, settings_from_env
from greenpool.http.connection import SERVER_SOFTWARE

__all__ = ["Worker"]

#: ``SERVER_SOFTWARE``: greenpool's, with gunicorn's version. Not the gevent
#: worker's ``gevent/...`` string: simple-websocket reads a ``gevent`` prefix
#: as gevent's pywsgi and looks for pywsgi's socket instead of ``gunicorn.socket``.
WORKER_SOFTWARE = f"{SERVER_SOFTWARE} gunicorn/{gunicorn_version}"

#: Longest pause between two heartbeats (seconds); shorter when --timeout is small.
HEARTBEAT_INTERVAL = 1.0


def _ping() -> None:
    """A no-op task: a hub that runs it is not stuck."""


def limits_from(cfg) -> Limits:
    """greenpool's request limits from gunicorn's ``limit_request_*`` settings (0: unlimited).

    gunicorn bounds each field but not the header block; the block limit is
    raised to what the field limits allow, up to 1 MiB.
    """
    line = cfg.limit_request_line or 8190
    fields = cfg.limit_request_fields or 32768
    field = cfg.limit_request_field_size or None
    block = max(64 * 1024, min(fields * (field or 8190), 2**20))
    return Limits(request_line=line, header_count=fields, header_field=field, header_block=block)


class _Idle:
    """Entered while a connection waits for its next request: a drain shuts it down."""

    __slots__ = ("server", "sock")

    def __init__(self, server: _Server, sock) -> None:
        self.server = server
        self.sock = sock

    def __enter__(self) -> None:
        if self.server.draining:
            raise GreenletExit
        self.server.idle.add(self.sock)

    def __exit__(self, *exc_info) -> None:
        self.server.idle.discard(self.sock)


class _Service(Service):
    """greenpool's HTTP core with gunicorn's settings: keep-alive, limits, max-requests, logs.

    A client that does not send a complete request head within ``--keep-alive``
    seconds is closed without an answer, as gunicorn's gevent worker does;
    ``--keep-alive 0`` closes every connection after its response.
    """

    timeout_status = None

    def __init__(self, worker: Worker, server: _Server, environ: dict) -> None:
        super().__init__(worker.wsgi, environ, limits_from(worker.cfg),
                         app_threads=worker.app_threads)
        self.worker = worker
        self.server = server
        keepalive = worker.cfg.keepalive
        self.head_timeout = keepalive if keepalive and keepalive > 0 else None
        self.keepalive = bool(keepalive)
        if not getattr(worker.log, "access_log_enabled", True):
            self.access = None  # type: ignore[assignment]

    def waiting(self, sock) -> _Idle:
        return _Idle(self.server, sock)

    def before_request(self, environ: dict) -> bool:
        """Count the request (max_requests); False closes after it."""
        worker = self.worker
        # Counted first, as gunicorn does: the request that reaches max_requests
        # is the last on its connection and says so (Connection: close).
        worker.count_request()
        return worker.alive and not self.server.draining and self.keepalive

    def access(self, environ: dict, status: str, headers: list, sent: int,
               seconds: float) -> None:
        request_headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items()
                           if k.startswith("HTTP_")]
        self.worker.log.access(GeventResponse(status, headers, sent), request_headers, environ,
                               timedelta(seconds=seconds))


class _Server(StreamServer):
    """One hub's server on one of gunicorn's listeners; knows its idle connections."""

    # One connection per wake-up: every hub's loop watches the same listener,
    # and with gevent's default (100) the first hub to wake took a client's
    # whole burst of new connections, leaving the other hubs idle.
    max_accept = 1

    def __init__(self, listener, *, worker: Worker, environ: dict, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        self.draining = False
        self.idle: set = set()
        self.service = _Service(worker, self, environ)

    def handle(self, sock, address) -> None:
        try:
            serve_connection(self.service, sock, address)
        except GreenletExit:
            pass
        except OSError:  # the client went away (reset, TLS error): nothing to answer
            pass
        finally:
            sock.close()

    def drain(self) -> None:
        """Stop accepting; shut idle keep-alive connections so their handlers end."""
        self.draining = True
        self.close()
        for sock in list(self.idle):
            try:
                sock.shutdown(stdlib_socket.SHUT_RDWR)
            except OSError:
                pass


class Worker(base.Worker):
    """gunicorn worker: ``--threads`` gevent hubs per process, each serving every listener."""

    def init_process(self) -> None:
        """Patch (greenpool's patch_all: gevent's, made safe for N hubs), then load and run."""
        from greenpool import monkey

        monkey.patch_all()
        gevent.reinit()
        self._quick = False
        self._count_lock = allocate_lock()
        # Checked before the app loads: a bad setting is a boot error, named.
        self.app_threads = app_threads_for(*settings_from_env())
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app and make the TLS context: a bad certificate is a boot error.

        gunicorn stops (instead of restarting workers in a loop) when a
        worker fails before it has booted, so everything that can be checked
        is checked here; the hubs share the one context.
        """
        super().load_wsgi()
        self.ssl_context = ssl_context(self.cfg) if self.cfg.is_ssl else None

    # -- signals (called in the main thread) -----------------------------------

    def handle_quit(self, sig, frame) -> None:
        """SIGQUIT/SIGINT: stop now (the base class would sys.exit in the handler)."""
        self.alive = False
        self._quick = True
        self.cfg.worker_int(self)

    def handle_abort(self, sig, frame) -> None:
        """SIGABRT (gunicorn's timeout kill): no grace period, then the base class exits."""
        self._quick = True
        super().handle_abort(sig, frame)

    def handle_usr1(self, sig, frame) -> None:
        """SIGUSR1: reopen log files outside the signal handler, as the gevent worker does."""
        gevent.spawn(super().handle_usr1, sig, frame)

    # -- accounting (called from any hub) --------------------------------------

    def count_request(self) -> None:
        """Count one request; past ``max_requests`` ask the main loop to restart the worker."""
        with self._count_lock:  # hubs are native threads: `+=` alone can lose counts
            self.nr += 1
            reached = self.nr >= self.max_requests
        if reached and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.PIPE[1], b".")
        except OSError:
            pass

    # -- serving ---------------------------------------------------------------

    def run(self) -> None:
        """Serve on ``cfg.threads`` hubs until a signal, max_requests or a dead parent."""
        hubs = max(1, int(self.cfg.threads or 1))
        per_hub = max(1, math.ceil(self.cfg.worker_connections / hubs))
        self.pool = greenpool.Pool(hubs, name=f"gunicorn-{os.getpid()}")
        stop: greenpool.Future = greenpool.Future()
        serving = self.pool.broadcast(self._serve_on_hub, stop, per_hub)
        interval = min(HEARTBEAT_INTERVAL, max(self.timeout / 4.0, 0.05))
        pings: list[greenpool.Future] = []
        try:
            while self.alive:
                if all(f.done() for f in pings):
                    self.notify()
                    pings = self.pool.broadcast(_ping)
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
                ended = [f for f in serving if f.done()]
                if ended:
                    error = None if ended[0].cancelled() else ended[0].exception()
                    self.log.error("A hub stopped serving (%r); restarting the worker", error,
                                   exc_info=error)
                    break
                self._wait_for_signal(interval)
        finally:
            self.alive = False
            grace = 0.0 if self._quick else float(self.cfg.graceful_timeout)
            stop.set_result(grace)
            self._wait_serving(serving, grace)
            # The worker process ends next: strays (python-engineio's service
            # task) are left as daemon threads are, not woken to log GreenletExit.
            self.pool.shutdown(wait=True, cancel_futures=True, strays="abandon")

    def _wait_for_signal(self, timeout: float) -> None:
        """Sleep up to ``timeout``; a signal (wakeup fd) or _wake() ends it early."""
        try:
            ready, _, _ = select.select([self.PIPE[0]], [], [], timeout)
        except OSError as exc:
            if exc.errno not in (errno.EINTR, errno.EBADF):
                raise
            return
        if ready:
            try:
                while os.read(self.PIPE[0], 4096):
                    pass
            except OSError:
                pass

    def _wait_serving(self, serving: list[greenpool.Future], grace: float) -> None:
        """Wait for the hubs to drain, heartbeating, up to the grace period plus slack."""
        deadline = time.monotonic() + grace + 2.0
        for future in serving:
            while not future.done():
                self.notify()
                left = deadline - time.monotonic()
                if left <= 0:
                    self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                    return
                try:
                    future.exception(timeout=min(left, HEARTBEAT_INTERVAL))
                except greenpool.TimeoutError:
                    pass
                except greenpool.CancelledError:
                    break

    def _serve_on_hub(self, stop: greenpool.Future, connections: int) -> None:
        """Runs on each hub: a server per listener until ``stop`` resolves."""
        environ = base_environ(self.cfg)
        del environ["wsgi.file_wrapper"]  # greenpool's: sent with os.sendfile where it can
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": WORKER_SOFTWARE,
                        "wsgi.url_scheme": "https" if self.ssl_context is not None else "http"})
        ssl_args = {"ssl_context": self.ssl_context} if self.ssl_context is not None else {}
        servers = []
        for listener in self.sockets:
            sock = gevent.socket.socket(fileno=os.dup(listener.fileno()))
            name = sock.getsockname()
            if isinstance(name, tuple):
                listener_environ = {**environ, "SERVER_NAME": name[0], "SERVER_PORT": str(name[1])}
            else:  # a unix socket
                listener_environ = {**environ, "SERVER_NAME": str(name), "SERVER_PORT": ""}
            server = _Server(
                sock,
                spawn=gevent.pool.Pool(connections),
                worker=self,
                environ=listener_environ,
                **ssl_args,
            )
            server.start()
            servers.append(server)
        grace = 0.0
        try:
            grace = stop.result()
        finally:
            for server in servers:
                server.drain()
            deadline = time.monotonic() + grace
            for server in servers:
                server.pool.join(timeout=max(0.0, deadline - time.monotonic()))
            for server in servers:
                server.pool.kill(block=True, timeout=1)
