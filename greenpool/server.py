"""greenpool.serve: a TCP server whose connections run on every hub of a pool.

Each connection runs as ``handler(sock, addr)`` in a greenlet on one hub, with
a gevent (blocking-style, cooperative) socket made on that hub. How accepted
connections are spread over the hubs is the ``spread`` option:

``"reuseport"``
    one ``SO_REUSEPORT`` listening socket per hub, all bound to the same
    port; the kernel hashes each new connection to one of them and the hub
    that owns it accepts it. No hub ever touches another's connections.
``"shared"``
    one listening socket; every hub waits on it and whichever wakes first
    accepts (a thundering herd, harmless at a few hubs).
``"dispatch"``
    one acceptor greenlet on hub 0 hands each accepted connection to the hub
    the pool's dispatcher picks; the socket is rebound to that hub
    (:func:`greenpool.rebind`). Costs a cross-thread hand-off per connection.

TLS handshakes run on the hub that owns the connection, so they proceed in
parallel on all hubs. A graceful :meth:`Server.stop` stops accepting, closes
connections that are :func:`idle` (between requests), lets the others finish
up to a timeout, then closes what is left.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket as _socket
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import gevent
import gevent.ssl
from gevent.monkey import get_original
from gevent.socket import socket as GeventSocket
from gevent.socket import wait_read
from greenlet import GreenletExit, getcurrent

from greenpool.errors import PoolFull, TimeoutError
from greenpool.future import Future
from greenpool.hub import Hub, current_hub
from greenpool.pool import Pool

__all__ = ["DEFAULT_SPREAD", "SPREADS", "Server", "idle", "idle_scope", "serve"]

log = logging.getLogger("greenpool")

#: The accepted values of ``spread``.
SPREADS = ("reuseport", "shared", "dispatch")
#: :func:`serve`'s default spread; its docstring gives the measurements behind it.
DEFAULT_SPREAD = "reuseport"

# Never the monkey-patched classes: listening sockets belong to no hub.
_StdSocket = get_original("socket", "socket")
_StdSSLContext = get_original("ssl", "SSLContext")
_allocate_lock = get_original("_thread", "allocate_lock")

# Accept errors meaning "the listener is gone": end the accept loop.
_LISTENER_GONE = (errno.EBADF, errno.EINVAL, errno.ENOTSOCK)
# Accept errors meaning "out of resources": pause, then retry.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Consecutive accepts after which an accept loop yields to its hub.
_ACCEPT_BURST = 64
# Network errors (the peer went away, the idle timeout, TLS): logged at DEBUG only.
_CLIENT_ERRORS = (ConnectionError, _socket.timeout, gevent.ssl.SSLError)
# How long stop() waits for killed connections to run their cleanup.
_KILL_GRACE = 5.0

_QUEUED, _RUNNING, _DONE = "queued", "running", "done"


class _Connection:
    """One accepted connection's state, shared by its acceptor, its hub and stop()."""

    __slots__ = ("server", "future", "state", "idle", "hub", "greenlet")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.future: Future | None = None
        self.state = _QUEUED
        self.idle = False
        self.hub: Hub | None = None
        self.greenlet = None

    def done_callback(self, future: Future) -> None:
        """A connection task cancelled before it started still has to be counted out."""
        self.server._finish(self, only_if=_QUEUED)


_current: ContextVar[_Connection | None] = ContextVar("greenpool_connection", default=None)


class _IdleScope:
    """The context manager :func:`idle` and :func:`idle_scope` return; reusable."""

    __slots__ = ("conn",)

    def __init__(self, conn: _Connection | None) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        conn = self.conn
        if conn is not None:
            if conn.server._stopping:
                raise GreenletExit
            conn.idle = True

    def __exit__(self, *exc_info) -> None:
        if self.conn is not None:
            self.conn.idle = False


def idle() -> _IdleScope:
    """Mark the calling connection idle (waiting for its next request) during the block.

    A graceful :meth:`Server.stop` closes idle connections at once instead of
    waiting for them, so a keep-alive client that is not sending anything
    does not hold a stop for its whole timeout. Entering the block while the
    server is stopping raises ``GreenletExit``, which ends the handler and
    closes the connection. Outside a connection handler it does nothing.
    """
    return _IdleScope(_current.get())


def idle_scope() -> _IdleScope:
    """:func:`idle` for the calling connection, made once and entered once per wait.

    For protocol handlers that wait between requests on every request: the
    connection is looked up once, not on every ``with``.
    """
    return _IdleScope(_current.get())


def _check_positive(name: str, value, kind=(int,), allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return value


def _format_address(sockaddr) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_address(address) -> tuple[int, tuple]:
    """``(family, sockaddr)`` to bind for ``address``: ``(host, port)`` or ``"host:port"``.

    An empty host (or ``"*"``) means every IPv4 interface. Raises ``ValueError``
    for a malformed address and ``socket.gaierror`` naming the address when
    the host does not resolve.
    """
    if isinstance(address, str):
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"address {address!r} must be 'host:port' or (host, port)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"address {address!r} has a non-numeric port") from None
    elif isinstance(address, tuple) and len(address) in (2, 4):
        host, port = address[0], address[1]
    else:
        raise ValueError(f"address must be (host, port) or 'host:port', got {address!r}")
    if not isinstance(host, str):
        raise ValueError(f"address host must be a str, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"address port must be an int in 0..65535, got {port!r}")
    if host in ("", "*"):
        host = "0.0.0.0"
    try:
        infos = _socket.getaddrinfo(
            host, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE
        )
    except _socket.gaierror as exc:
        raise _socket.gaierror(
            exc.errno, f"cannot resolve {host!r} in address {address!r}: {exc.strerror}"
        ) from None
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr


def _listen(family: int, sockaddr: tuple, backlog: int, reuseport: bool):
    """A bound, listening, non-blocking stdlib socket; OSError names the address."""
    sock = _StdSocket(family, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family in (_socket.AF_INET, _socket.AF_INET6):
            # Accepted sockets inherit it (Linux). Without it a response sent
            # in two writes (a streamed head, then its body) waits ~40 ms for
            # the client's delayed ACK on every keep-alive request (Nagle).
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if reuseport:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {_format_address(sockaddr)}: {exc.strerror}"
        ) from None
    return sock


def _bind_listeners(family: int, sockaddr: tuple, backlog: int, spread: str, hubs: int) -> list:
    """The listening sockets for ``spread``: one per hub for reuseport, else one."""
    first = _listen(family, sockaddr, backlog, spread == "reuseport")
    listeners = [first]
    if spread == "reuseport":
        bound = (sockaddr[0], first.getsockname()[1]) + tuple(sockaddr[2:])
        try:
            for _ in range(hubs - 1):
                listeners.append(_listen(family, bound, backlog, True))
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
    return listeners


def _wrap_tls(ssl_context, sock):
    """Server-side TLS over a gevent socket; the handshake runs here, cooperatively.

    The wrapper takes over the descriptor before the handshake, so whatever
    ends the handshake (a client error, the idle timeout, ``GreenletExit``
    from stop()) must close the wrapper, or the descriptor stays open until
    the garbage collector finds it and the client never sees the close.
    """
    if isinstance(ssl_context, gevent.ssl.SSLContext):
        tls = ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    else:
        # A stdlib context: gevent's SSLSocket drives any SSLContext through its
        # ``_context`` argument (what gevent.ssl.SSLContext.wrap_socket passes).
        tls = gevent.ssl.SSLSocket(
            sock=sock, server_side=True, do_handshake_on_connect=False, _context=ssl_context
        )
    try:
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def check_server_context(ssl_context) -> None:
    """Refuse, at the call, an ``ssl_context`` that would fail every handshake.

    A client-purpose context (``check_hostname``) or one with no certificate
    loaded would otherwise be accepted and every connection would fail later,
    per connection and far from the mistake. The certificate is checked with
    one in-memory handshake against a client that verifies nothing.
    """
    if not isinstance(ssl_context, _StdSSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
    if ssl_context.check_hostname:
        raise ValueError(
            "ssl_context is a client context (check_hostname=True); a server needs "
            "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) or "
            "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), then load_cert_chain()"
        )
    import ssl

    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    try:  # a client that takes whatever the server offers: only a missing certificate fails
        client_context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        client_context.set_ciphers("ALL:@SECLEVEL=0")
    except (ssl.SSLError, ValueError):
        pass
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ssl_context.wrap_bio(to_server, to_client, server_side=True)
    client = client_context.wrap_bio(to_client, to_server)
    for _ in range(8):  # a TLS 1.2/1.3 handshake needs at most a few round trips
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as exc:
                if side is server and "NO_SHARED_CIPHER" in str(exc).upper():
                    raise ValueError(
                        "ssl_context has no certificate: call "
                        "ssl_context.load_cert_chain(certfile, keyfile) before serving"
                    ) from None
                return  # some other policy (client certificates required, ...): not ours
        if server.version() is not None and client.version() is not None:
            return


class Server:
    """A running TCP server made by :func:`serve`; see the module docstring.

    Read-only: ``address`` (bound address), ``spread``, ``pool``,
    ``connections`` (live now), ``accepted`` (total), ``connections_per_hub``
    (connections each hub handled, by hub index), ``stopped``.
    """

    #: Seconds live connections get when the server is stopped by leaving its
    #: ``with`` block or by an exception in :meth:`serve_forever`.
    stop_timeout: float = 5.0

    def __init__(
        self,
        handler: Callable[[Any, Any], Any],
        listeners: list,
        pool: Pool,
        owns_pool: bool,
        spread: str,
        ssl_context,
        max_connections: int | None,
        idle_timeout: float | None,
    ) -> None:
        self.handler = handler
        self.pool = pool
        self.spread = spread
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.address = listeners[0].getsockname()[:2]
        self.accepted = 0
        self._listeners = listeners
        self._owns_pool = owns_pool
        self._lock = _allocate_lock()
        self._live = 0
        self._conns: set[_Connection] = set()
        self._slot_waiters: list[Future] = []
        self._drain_waiters: list[tuple[int, Future]] = []
        self._per_hub = [0] * pool.size
        self._stopping = False
        self._killing = False
        self._stopped = Future()
        self._loops: list[tuple[Future, Future]] = []

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "stopping" if self._stopping else "serving"
        return (
            f"<greenpool.Server {_format_address(self.address)} spread={self.spread} "
            f"hubs={self.pool.size} {state} connections={self._live}>"
        )

    # -- introspection -----------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed (queued or running)."""
        return self._live

    @property
    def connections_per_hub(self) -> list[int]:
        """How many connections each hub (by index) has handled so far."""
        return list(self._per_hub)

    @property
    def stopped(self) -> bool:
        return self._stopped.done()

    # -- starting ------------------------------------------------------------

    def _start(self) -> None:
        """Start the accept loops and wait until each is accepting."""
        if self.spread == "dispatch":
            plan = [(0, self._listeners[0])]
        elif self.spread == "shared":
            plan = [(index, self._listeners[0]) for index in range(self.pool.size)]
        else:
            plan = list(enumerate(self._listeners))
        try:
            for index, listener in plan:
                started, exited = Future(), Future()
                task = self.pool.spawn_on(index, self._accept_loop, listener, started, exited)
                self._loops.append((task, exited))
                started.result()
        except BaseException:
            for task, _exited in self._loops:
                task.cancel()
            raise

    def _accept_loop(self, raw, started: Future, exited: Future) -> None:
        """One hub's accept loop: runs until cancelled by stop() or the listener closes."""
        try:
            # A private descriptor per loop, closed on this hub when the loop ends.
            listener = GeventSocket(fileno=raw.dup().detach())
        except BaseException as exc:
            started.set_exception(exc)
            exited.set_result(None)
            raise
        try:
            started.set_result(None)
            limited = self.max_connections is not None
            listener.settimeout(0.0 if limited else None)
            if self.spread == "dispatch":
                spawn = self.pool.spawn
            else:  # stay on this hub: a same-thread spawn, no dispatch
                here = current_hub()
                assert here is not None  # the accept loop runs on a pool hub
                spawn = functools.partial(self.pool.spawn_on, here.index)
            burst = 0
            while True:
                if limited:
                    self._reserve_slot()
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:  # only with a limit: the listener is non-blocking
                    self._release_slot()
                    burst = 0
                    wait_read(listener.fileno())
                    continue
                except OSError as exc:
                    if limited:
                        self._release_slot()
                    if exc.errno in _LISTENER_GONE:
                        return
                    if exc.errno in _OUT_OF_RESOURCES:
                        log.warning("accept on %s failed: %s; retrying in 0.1 s",
                                    _format_address(self.address), exc)
                        gevent.sleep(0.1)
                    continue
                if not self._hand_off(spawn, sock, addr, reserved=limited):
                    return
                burst += 1
                if burst >= _ACCEPT_BURST:
                    burst = 0
                    gevent.sleep(0)
        finally:
            listener.close()
            exited.set_result(None)

    def _hand_off(self, spawn, sock, addr, reserved: bool) -> bool:
        """Start the connection's task; False if the pool refuses tasks for good."""
        conn = _Connection(self)
        with self._lock:
            if not reserved:
                self._live += 1
            self._conns.add(conn)
            self.accepted += 1
        try:
            conn.future = spawn(self._run_connection, conn, sock, addr)
        except PoolFull:
            log.warning("pool full: refusing a connection from %s", addr)
            sock.close()
            self._finish(conn)
            return True
        except RuntimeError:  # the pool has shut down under the server
            sock.close()
            self._finish(conn)
            return False
        except BaseException:  # killed while waiting for room in a full pool
            sock.close()
            self._finish(conn)
            raise
        conn.future.add_done_callback(conn.done_callback)
        return True

    # -- connection slots (max_connections) ----------------------------------

    def _reserve_slot(self) -> None:
        """Count one connection before accepting it, waiting while at the limit."""
        limit = self.max_connections
        assert limit is not None  # only called when connections are limited
        while True:
            with self._lock:
                if self._live < limit:
                    self._live += 1
                    return
                waiter = Future()
                self._slot_waiters.append(waiter)
            waiter.result()

    def _release_slot(self) -> None:
        with self._lock:
            self._live -= 1
            waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            waiter.set_result(None)

    # -- one connection ------------------------------------------------------

    def _run_connection(self, conn: _Connection, sock, addr) -> None:
        """A connection task: TLS, idle timeout, the handler, and always a close."""
        with self._lock:
            if conn.state is not _QUEUED:  # cancelled as it started
                sock.close()
                return
            conn.state = _RUNNING
        hub = current_hub()
        assert hub is not None  # connections run as pool tasks
        conn.hub = hub
        conn.greenlet = getcurrent()
        _current.set(conn)
        self._per_hub[hub.index] += 1
        try:
            if self._killing:
                return
            if self.idle_timeout is not None:
                sock.settimeout(self.idle_timeout)
            if self.ssl_context is not None:
                plain = sock
                try:
                    # A client that connects and never says hello is waiting,
                    # not working: a graceful stop closes it at once.
                    with idle():
                        sock = _wrap_tls(self.ssl_context, plain)
                except _CLIENT_ERRORS as exc:
                    log.debug("TLS handshake with %s failed: %s", addr, exc)
                    plain.close()
                    return
            self.handler(sock, addr)
        except _CLIENT_ERRORS as exc:
            log.debug("connection from %s closed: %r", addr, exc)
        except Exception:
            log.exception(
                "connection handler %s failed; closing its connection from %s",
                getattr(self.handler, "__qualname__", self.handler), addr,
            )
        finally:
            conn.greenlet = None
            try:
                sock.close()
            finally:
                self._finish(conn)

    def _finish(self, conn: _Connection, only_if: str | None = None) -> None:
        """Count a connection out (once) and wake whoever waits for room or a drain."""
        with self._lock:
            if conn.state is _DONE or (only_if is not None and conn.state is not only_if):
                return
            conn.state = _DONE
            self._conns.discard(conn)
            self._live -= 1
            live = self._live
            slot_waiters: list[Future] = []
            if self._slot_waiters:
                slot_waiters, self._slot_waiters = self._slot_waiters, []
            drained: list[Future] = [w for target, w in self._drain_waiters if live <= target]
            if drained:
                self._drain_waiters = [
                    (t, w) for t, w in self._drain_waiters if live > t
                ]
        for waiter in slot_waiters:
            waiter.set_result(None)
        for waiter in drained:
            waiter.set_result(None)

    # -- stopping ------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let live connections finish, then close what is left.

        Connections waiting in :func:`idle` (between requests) are closed at
        once; the others get ``timeout`` seconds (None: as long as they take)
        and are then closed (their greenlets get ``GreenletExit``). A private
        pool is shut down. Callable from any thread or pool greenlet, also
        from one of this server's own handlers; a second call waits for the
        first. Not from a hub's own callback (it would block that hub).
        """
        with self._lock:
            first = not self._stopping
            self._stopping = True
        if not first:
            if _current.get() not in self._conns:
                self._stopped.result()
            return
        me = _current.get()
        target = 1 if me in self._conns else 0
        try:
            for task, _exited in self._loops:
                task.cancel()
            for _task, exited in self._loops:
                exited.result()
            for sock in self._listeners:
                sock.close()
            self._close_idle()
            if not self._wait_drained(target, timeout):
                self._killing = True
                self._kill_connections(me)
                if not self._wait_drained(target, _KILL_GRACE):
                    log.warning("%r: %d connections ignored being closed", self, self._live)
            if self._owns_pool:
                here = current_hub()
                inside = here is not None and here.pool is self.pool
                # Handlers that ignored GreenletExit would hold a waiting
                # shutdown forever: stop() keeps its timeout and gives up on
                # them, as gevent's does (their hubs end when they return).
                stubborn = self._live > target
                self.pool.shutdown(wait=not inside and not stubborn, cancel_futures=stubborn)
        finally:
            self._stopped.set_result(None)

    def _close_idle(self) -> None:
        for conn in list(self._conns):
            hub = conn.hub
            if hub is not None and conn.idle:
                hub.call_soon_threadsafe(self._kill_if, conn, True)

    def _kill_connections(self, spare) -> None:
        for conn in list(self._conns):
            if conn is spare:
                continue
            if conn.state is _QUEUED and conn.future is not None:
                conn.future.cancel()
            hub = conn.hub
            if hub is not None:
                hub.call_soon_threadsafe(self._kill_if, conn, False)

    @staticmethod
    def _kill_if(conn: _Connection, only_idle: bool) -> None:
        """On the connection's hub: end its greenlet (if still idle, when asked)."""
        glet = conn.greenlet
        if glet is None or conn.state is not _RUNNING or (only_idle and not conn.idle):
            return
        glet.throw(GreenletExit)

    def _wait_drained(self, target: int, timeout: float | None) -> bool:
        with self._lock:
            if self._live <= target:
                return True
            waiter = Future()
            self._drain_waiters.append((target, waiter))
        try:
            waiter.result(timeout)
            return True
        except TimeoutError:
            return False

    def serve_forever(self) -> None:
        """Block until :meth:`stop` has finished.

        An exception while waiting (``KeyboardInterrupt``, ``SystemExit``, the
        waiting greenlet being killed) stops the server, giving connections
        :attr:`stop_timeout` seconds, and is re-raised.
        """
        try:
            self._stopped.result()
        except BaseException:
            self.stop(self.stop_timeout)
            raise

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop(self.stop_timeout)


def serve(
    handler: Callable[[Any, Any], Any],
    address: tuple[str, int] | str = ("127.0.0.1", 0),
    *,
    pool: Pool | None = None,
    hubs: int | None = None,
    backlog: int = 1024,
    ssl_context=None,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    spread: str = DEFAULT_SPREAD,
) -> Server:
    """Serve TCP on ``address``, running ``handler(sock, addr)`` per connection on the pool's hubs.

    ``sock`` is a gevent socket owned by the hub that runs the handler (a TLS
    socket when ``ssl_context`` is given); it is closed when the handler
    returns or raises. A handler that raises closes only its own connection
    and is logged on the ``greenpool`` logger. Returns once every hub is
    accepting.

    Why ``reuseport`` is the default ``spread``: it has the cheapest accept
    path (no thundering herd, no cross-thread hand-off) and spreads a burst of
    connects evenly, where ``shared`` once put all 64 of wrk's connections on
    one hub of four. Measured with wrk (64 connections, pinned to one CPU) on
    an HTTP hello handler, on 2 shared and busy cores: medians of 5
    alternating 2 s runs; "us" is the server's CPU time per request, steadier
    than requests/s on a shared machine:

        new connection per request   2 hubs            4 hubs
          reuseport                   7.6k/s  46 us     9.8k/s  59 us
          shared                      6.9k/s  50 us     8.5k/s  63 us
          dispatch                    8.3k/s  49 us     8.0k/s  80 us
        keep-alive
          reuseport                  38.9k/s  12.8 us  38.9k/s  19.2 us
          shared                     37.9k/s  12.3 us  33.5k/s  12.9 us (piled on one hub)
          dispatch                   41.9k/s  13.5 us  34.9k/s  18.4 us
        1 hub (any spread) vs gevent StreamServer: 8.6k/s vs 6.5k/s, 38 vs 40 us
        per new connection; 31.7k/s vs 36.5k/s, 11.2 vs 11.2 us keep-alive.

    A hub held by an unpatched blocking call also holds the new connections
    routed to it: with ``reuseport`` about 1/N of them (10-15 of 40 with 4
    hubs), with ``dispatch`` all of them when the held hub is the acceptor's,
    with ``shared`` none (the other hubs accept). Prefer ``shared`` when
    handlers make such calls.

    Errors: a handler exception is logged with its traceback at ERROR;
    network errors (``ConnectionError``, timeouts, TLS errors) at DEBUG.
    Stop the server before shutting a shared pool down: ``shutdown(wait=True)``
    waits for the accept loops.

    :param handler: called as ``handler(sock, addr)`` in a greenlet of its
        own for each accepted connection, on the hub that accepted it.
    :param address: ``(host, port)`` or ``"host:port"``; port 0 picks a free
        port (see :attr:`Server.address`). Bound before ``serve`` returns, so
        an unresolvable address raises ``socket.gaierror`` and a busy one
        ``OSError``, both naming it.
    :param pool: the :class:`Pool` whose hubs serve; by default a private pool
        of ``hubs`` hubs (CPU count) that :meth:`Server.stop` shuts down.
    :param hubs: the size of that private pool; with ``pool``, must match
        its size or be None.
    :param backlog: the ``listen()`` backlog of each listening socket.
    :param ssl_context: an ``ssl.SSLContext`` (stdlib or ``gevent.ssl``) to
        serve TLS with; each handshake runs on the connection's hub.
    :param max_connections: at most this many connections at once; at the
        limit the server stops accepting (new clients wait in the backlog)
        and resumes when one closes.
    :param idle_timeout: seconds a connection may wait on the network (a
        socket timeout; the TLS handshake included) before it is closed.
    :param spread: ``"reuseport"`` (default), ``"shared"`` or ``"dispatch"``
        (see :mod:`greenpool.server`). Where ``SO_REUSEPORT`` is missing,
        ``"reuseport"`` becomes ``"shared"``. Two ``reuseport`` servers of the
        same user on one explicit port share it instead of failing.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable(sock, addr), got {type(handler).__name__}")
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {', '.join(map(repr, SPREADS))}; got {spread!r}")
    if spread == "reuseport" and not hasattr(_socket, "SO_REUSEPORT"):
        spread = "shared"
    _check_positive("backlog", backlog, allow_none=False)
    _check_positive("max_connections", max_connections)
    _check_positive("idle_timeout", idle_timeout, kind=(int, float))
    if ssl_context is not None:
        check_server_context(ssl_context)
    if pool is not None:
        if not isinstance(pool, Pool):
            raise TypeError(f"pool must be a greenpool.Pool, got {type(pool).__name__}")
        if hubs is not None and hubs != pool.size:
            raise ValueError(f"hubs={hubs} does not match the given pool's size {pool.size}")
    family, sockaddr = resolve_address(address)
    owns_pool = pool is None
    if pool is None:
        pool = Pool(hubs, name="greenpool-server")
    listeners = []
    try:
        listeners = _bind_listeners(family, sockaddr, backlog, spread, pool.size)
        server = Server(handler, listeners, pool, owns_pool, spread, ssl_context,
                        max_connections, idle_timeout)
        server._start()
    except BaseException:
        for sock in listeners:
            sock.close()
        if owns_pool:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    return server

