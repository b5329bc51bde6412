"""A gunicorn worker that serves each worker process's requests on N gevent hubs.

    gunicorn -k greenpool.gunicorn.Worker --threads 4 -w 2 module:app

Each worker process runs a :class:`greenpool.Pool` of ``--threads`` hubs (one
native thread each). Every hub runs gevent's ``pywsgi`` server on gunicorn's
listening sockets (a ``dup`` of each listener per hub, so all hubs accept on
the same sockets and the kernel spreads connections over them); a connection
stays on the hub that accepted it. Code that blocks in a GIL-releasing call (a
C database driver, hashing, compression) stalls one hub, not the process.

Monkey patching: like gunicorn's own gevent worker, :meth:`Worker.init_process`
calls ``gevent.monkey.patch_all()`` and ``gevent.reinit()`` before the app is
loaded, so pure-Python blocking I/O in the app (``socket``, ``ssl``, ``time.sleep``,
``requests``...) yields to the hub instead of blocking it, and apps written for
``-k gevent`` run unchanged. The hub threads stay native threads under
patching. Patching happens in each worker process after the fork, before the
app is imported (unless ``--preload``, as with the gevent worker).

Lifecycle, following ``gunicorn/workers/ggevent.py``: the main thread calls
``notify()`` while every hub answers a ping (a hub stuck longer than
``--timeout`` stops the heartbeat and gunicorn restarts the worker). SIGTERM
is a graceful stop: every hub stops accepting, closes idle keep-alive
connections, and lets in-flight requests finish for up to
``--graceful-timeout`` seconds. SIGQUIT/SIGINT stop at once.
``--max-requests`` (with its jitter) counts requests over all hubs.
``--worker-connections`` is the per-process limit, split evenly over the hubs.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket as stdlib_socket
import time
from typing import Any

import gevent
import gevent.pool
import gevent.socket
from gevent import monkey
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers import base
from gunicorn.workers.ggevent import VERSION, PyWSGIHandler, PyWSGIServer

import greenpool
from greenpool._native import allocate_lock

__all__ = ["Worker"]

#: Longest pause between two heartbeats (seconds); shorter when --timeout is small.
HEARTBEAT_INTERVAL = 1.0


def _ping() -> None:
    """A no-op task: a hub that runs it is not stuck."""


class _Handler(PyWSGIHandler):
    """gunicorn's pywsgi handler, plus request counting and a graceful drain.

    While it waits for the next request on a keep-alive connection the handler
    is *idle*; on a graceful stop idle connections are shut down at once and
    busy ones are closed after their current response.
    """

    _closing = False

    def read_requestline(self) -> str:
        server = self.server
        if server.draining:
            return ""
        keepalive = server.worker.cfg.keepalive
        server.idle.add(self)
        try:
            if keepalive and keepalive > 0:
                # gunicorn's gevent worker waits ``keepalive`` seconds for a
                # request line; a silent client is closed, not kept forever.
                with gevent.Timeout(keepalive, False):
                    return super().read_requestline()
                return ""
            return super().read_requestline()
        finally:
            server.idle.discard(self)

    def read_request(self, raw_requestline):
        """pywsgi's parsing, plus gunicorn's ``limit_request_*`` settings (400 past them)."""
        cfg = self.server.worker.cfg
        if cfg.limit_request_line and len(raw_requestline) > cfg.limit_request_line:
            raise ValueError(f"request line over limit_request_line ({cfg.limit_request_line})")
        result = super().read_request(raw_requestline)
        if cfg.limit_request_fields and len(self.headers) > cfg.limit_request_fields:
            raise ValueError(f"more headers than limit_request_fields ({cfg.limit_request_fields})")
        size = cfg.limit_request_field_size
        if size and any(len(k) + len(v) + 2 > size for k, v in self.headers.items()):
            raise ValueError(f"a header over limit_request_field_size ({size})")
        return result

    def handle_one_response(self) -> None:
        worker = self.server.worker
        # Counted first, as gunicorn does: the request that reaches max_requests
        # is the last on its connection and says so (Connection: close).
        worker.count_request()
        if not worker.alive or self.server.draining or not worker.cfg.keepalive:
            self.close_connection = True
            self._closing = True
        super().handle_one_response()

    def start_response(self, status, headers, exc_info=None):
        if self._closing and not any(name.lower() == "connection" for name, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)


class _Server(PyWSGIServer):
    """gunicorn's pywsgi server for one hub; knows its worker and idle handlers."""

    def __init__(self, *args: Any, worker: Worker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker = worker
        self.draining = False
        self.idle: set[_Handler] = set()

    def drain(self) -> None:
        """Stop accepting; shut idle keep-alive connections so their handlers end."""
        self.draining = True
        self.close()
        for handler in list(self.idle):
            sock = getattr(handler, "socket", None)
            if sock is None:
                continue
            try:
                sock.shutdown(stdlib_socket.SHUT_RDWR)
            except OSError:
                pass


class Worker(base.Worker):
    """gunicorn worker: ``--threads`` gevent hubs per process, each serving every listener."""

    def init_process(self) -> None:
        """Patch like gunicorn's gevent worker, then let gunicorn load the app and call run()."""
        monkey.patch_all()
        gevent.reinit()
        self._quick = False
        self._count_lock = allocate_lock()
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
            self.pool.shutdown(wait=True, cancel_futures=True)

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
        """Runs on each hub: a pywsgi server per listener until ``stop`` resolves."""
        environ = base_environ(self.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
        ssl_args = {"ssl_context": self.ssl_context} if self.ssl_context is not None else {}
        servers = []
        for listener in self.sockets:
            sock = gevent.socket.socket(fileno=os.dup(listener.fileno()))
            server = _Server(
                sock,
                application=self.wsgi,
                spawn=gevent.pool.Pool(connections),
                log=self.log,
                handler_class=_Handler,
                environ=environ,
                worker=self,
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
