"""The command line: serve a WSGI app on every hub, in the conventions of gunicorn/uvicorn.

    python -m greenpool wsgi module:app --hubs 4 --bind 127.0.0.1:8000
    greenpool wsgi myproject.web:application --certfile cert.pem --keyfile key.pem

``module:app`` is imported with the current directory first on ``sys.path``
(as gunicorn does); ``app`` may be a dotted attribute path, and with
``--factory`` it is called (without arguments) to make the app. Requests are
served by greenpool's own HTTP/1.1 core (:mod:`greenpool.http`).

By default the process does not monkey-patch: blocking calls in the app hold
their hub (and release the GIL when they are C calls), so ``--hubs`` is also
how many such calls run at once. ``--patch`` calls
``greenpool.monkey.patch_all()`` before the app is imported (as ``gunicorn -k
gevent`` patches): pure-Python blocking I/O then yields to the hub.

SIGINT or SIGTERM stops gracefully: the listeners close, keep-alive
connections waiting for a request are closed, requests in progress get
``--graceful-timeout`` seconds, then the process exits 0. A second signal
exits at once (status 1).
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from greenpool.http.app_threads import (
    APP_THREADS_ENV,
    DEFAULT_APP_THREADS,
    DEFAULT_WAIT_TIMEOUT,
    WAIT_TIMEOUT_ENV,
    parse_app_threads,
    parse_wait_timeout,
    settings_from_env,
)

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("greenpool")

PROG = "greenpool"
DEFAULT_BIND = "127.0.0.1:8000"
# greenpool.server's SPREADS and DEFAULT_SPREAD, named here so that parsing the
# command line imports neither the server nor ssl before --patch has patched
# (tests/test_cli.py checks that they agree).
SPREADS = ("reuseport", "shared", "dispatch")
DEFAULT_SPREAD = "reuseport"


class CommandError(Exception):
    """A problem with the command line's arguments: reported on one line, exit status 2."""


class StartError(Exception):
    """The server could not start (busy address, unreadable certificate): exit status 1."""


# -- module:app ----------------------------------------------------------------


def load_app(spec: str, *, factory: bool = False) -> Callable:
    """Import ``module:attr`` (current directory first on sys.path) and return the callable.

    Raises :class:`CommandError` for a malformed spec, a module that does not
    exist, a missing attribute or a non-callable; an exception raised *while
    importing* the module propagates (it is a bug in the app, shown with its
    traceback).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"app {spec!r} must be 'module:attribute', e.g. 'myapp:app'")
    parts = attr.split(".")
    if not all(part.isidentifier() for part in parts):
        raise CommandError(f"app {spec!r}: {attr!r} is not a Python attribute name")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(
                f"app {spec!r}: no module named {missing!r} (looked in {cwd} and sys.path)"
            ) from None
        raise
    obj: Any = module
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = module_name + "".join("." + p for p in parts[:i])
            raise CommandError(f"app {spec!r}: {where!r} has no attribute {part!r}") from None
    if factory:
        if not callable(obj):
            raise CommandError(f"app {spec!r} is a {type(obj).__name__}, not a factory")
        obj = obj()
    if not callable(obj):
        raise CommandError(
            f"app {spec!r} is a {type(obj).__name__}, "
            "not a WSGI callable app(environ, start_response)"
        )
    return obj


# -- arguments -----------------------------------------------------------------


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (every interface) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{text!r}: write an IPv6 host in brackets, [::1]:8000")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port} is not in 0..65535")
    return host or "0.0.0.0", port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _check_address_free(address: tuple[str, int]) -> None:
    """Fail if something already listens on ``address``, even with SO_REUSEPORT.

    The reuseport spread sets SO_REUSEPORT, so a second server (a stale
    instance) would otherwise start on a busy port and silently take a share
    of its connections. As in gunicorn, sharing a port takes ``--reuse-port``.
    """
    import socket

    from greenpool.server import _format_address, resolve_address

    family, sockaddr = resolve_address(address)
    if sockaddr[1] == 0:
        return
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"{_format_address(sockaddr)} is already in use ({exc.strerror}); "
                "stop the other server, or pass --reuse-port to share it",
            ) from None


_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def byte_size(text: str) -> int:
    """A size in bytes: ``1048576``, ``512k``, ``1M``, ``2g`` (binary units, nginx-style)."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit.isdigit():
        number, unit = text.strip(), ""
    if unit not in _SIZE_UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes, or a number with K, M or G (e.g. 1M)"
        )
    return int(number) * _SIZE_UNITS[unit]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve on a pool of gevent hubs, one native thread each.",
    )
    from greenpool import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    wsgi = commands.add_parser(
        "wsgi",
        help="serve a WSGI app on every hub",
        description="Serve the WSGI app MODULE:APP on every hub (greenpool's HTTP/1.1 core: "
        "llhttp, strict RFC 9112 framing, keep-alive, chunked bodies). SIGINT/SIGTERM stop "
        "gracefully.",
    )
    wsgi.add_argument("app", metavar="MODULE:APP", help="the WSGI callable, e.g. myproject.web:app")
    wsgi.add_argument("-b", "--bind", type=parse_bind, default=DEFAULT_BIND, metavar="HOST:PORT",
                      help="address to listen on; port 0 picks a free one "
                      f"(default {DEFAULT_BIND})")
    wsgi.add_argument("--hubs", type=_positive_int, default=None, metavar="N",
                      help="hubs (native threads) to serve on (default: CPU count)")
    wsgi.add_argument("--cpu-affinity", type=_cpu_list, default=None, metavar="CPUS",
                      help="pin the hub threads to these CPUs, e.g. 0 or 0-1 or 0,2 "
                      "(pure-Python apps: keeps hubs from handing the GIL across cores)")
    wsgi.add_argument("--certfile", metavar="FILE", help="serve HTTPS with this PEM certificate")
    wsgi.add_argument("--keyfile", metavar="FILE",
                      help="the certificate's private key (if not in --certfile)")
    wsgi.add_argument("--access-log", action="store_true",
                      help="log one line per request to stderr")
    wsgi.add_argument("--spread", choices=SPREADS, default=DEFAULT_SPREAD,
                      help=f"how connections reach the hubs (default {DEFAULT_SPREAD})")
    wsgi.add_argument("--backlog", type=_positive_int, default=1024, metavar="N",
                      help="listen backlog (default 1024)")
    wsgi.add_argument("--max-connections", type=_positive_int, default=None, metavar="N",
                      help="stop accepting while N connections are open, upgraded ones "
                           "(WebSockets) included (default: no limit)")
    wsgi.add_argument("--reuse-port", action="store_true",
                      help="share the port with servers already listening on it "
                           "(SO_REUSEPORT); by default a busy port is an error")
    wsgi.add_argument("--max-body-size", type=byte_size, default=None, metavar="SIZE",
                      help="answer 413 to request bodies over SIZE bytes (K/M/G suffixes; "
                           "default: no limit)")
    wsgi.add_argument("--idle-timeout", type=_seconds, default=None, metavar="SECONDS",
                      help="close a connection that waits this long on the client (not once "
                           "the app took an upgraded connection: a WebSocket times itself)")
    wsgi.add_argument("--graceful-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                      help="on SIGINT/SIGTERM, how long requests in progress and upgraded "
                           "connections (WebSockets) may take before they are closed (default 30)")
    wsgi.add_argument("--app-threads", type=_app_threads, default=FROM_ENV, metavar="N",
                      help="requests in the app at once, each on a long-lived app thread with "
                           "its own thread-locals, as under gunicorn -k gthread; 0: no limit. "
                           f"Default: ${APP_THREADS_ENV}, else {DEFAULT_APP_THREADS} with --patch "
                           "and 0 without")
    wsgi.add_argument("--app-wait-timeout", type=_wait_timeout, default=FROM_ENV,
                      metavar="SECONDS",
                      help="how long a request waits for a free app thread before its 503; "
                           f"0: no limit (default ${WAIT_TIMEOUT_ENV}, else "
                           f"{DEFAULT_WAIT_TIMEOUT:g})")
    wsgi.add_argument("--patch", action="store_true",
                      help="monkey-patch with greenpool.monkey.patch_all() before importing the "
                           "app, so blocking socket/ssl/time calls yield (as gunicorn -k gevent)")
    wsgi.add_argument("--factory", action="store_true",
                      help="MODULE:APP is a factory: call it to get the WSGI app")
    wsgi.add_argument("--log-level", default="info",
                      choices=("debug", "info", "warning", "error", "critical"),
                      help="logging level for greenpool and the app (default info)")
    wsgi.set_defaults(run=run_wsgi)
    return parser


# -- serving -------------------------------------------------------------------


#: The app-thread options' default: not given, so the environment decides (their
#: parsed values, None included, are what the command line said). Not a string:
#: argparse would run a string default through the option's type.
FROM_ENV: Any = object()


def app_thread_settings(args: argparse.Namespace) -> tuple[int | str | None, float | None]:
    """``(app_threads, app_wait_timeout)`` for ``wsgi.serve``: the command line's, where
    given (``0``: None, no limit), else the environment's (CommandError if it is bad)."""
    try:
        env_threads, env_wait = settings_from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    threads = env_threads if args.app_threads is FROM_ENV else args.app_threads
    wait = env_wait if args.app_wait_timeout is FROM_ENV else args.app_wait_timeout
    return threads, wait


def _app_threads(text: str) -> int | None:
    try:
        return parse_app_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _wait_timeout(text: str) -> float | None:
    try:
        return parse_wait_timeout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cpu_list(text: str) -> set[int]:
    """``0``, ``0-3``, ``0,2`` -> a set of CPU numbers (argparse type)."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPUs like 0 or 0-3 or 0,2, got {text!r}")
    if not cpus:
        raise argparse.ArgumentTypeError("no CPU given")
    return cpus


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise CommandError("--keyfile needs --certfile")
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise StartError(f"cannot load certificate {certfile!r}: {exc}") from None
    return context


class _StopSignals:
    """SIGINT/SIGTERM: the first asks for a graceful stop, a second one exits at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        # A bare lock, released by the handler: threading.Event.set() takes a
        # lock the interrupted main thread may be holding at that moment.
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self.name: str | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if self.name is not None:
            sys.stderr.write(f"{PROG}: {signal.Signals(signum).name} again, exiting now\n")
            sys.stderr.flush()
            os._exit(1)
        self.name = signal.Signals(signum).name
        self._gate.release()

    def wait(self) -> None:
        while not self._gate.acquire(True, 3600):
            pass

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _format_url(scheme: str, address: tuple) -> str:
    from greenpool.server import _format_address

    return f"{scheme}://{_format_address(address)}"


def run_wsgi(args: argparse.Namespace) -> int:
    """``greenpool wsgi``: serve until SIGINT/SIGTERM, then stop gracefully."""
    if args.patch:
        from greenpool import monkey

        monkey.patch_all()  # before the app (and its libraries) import socket, ssl, threading
    from greenpool import wsgi
    from greenpool.pool import Pool

    app_threads, wait_timeout = app_thread_settings(args)
    context = _ssl_context(args.certfile, args.keyfile)
    try:
        app = load_app(args.app, factory=args.factory)
    except CommandError:
        raise
    except Exception as exc:  # raised while importing the app: a bug in the app
        traceback.print_exc()
        raise StartError(
            f"loading {args.app!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    hubs = args.hubs or os.cpu_count() or 1
    try:
        pool = Pool(hubs, name="greenpool-wsgi", cpu_affinity=args.cpu_affinity)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    stop = _StopSignals()
    try:
        try:
            if not args.reuse_port:
                _check_address_free(args.bind)
            server = wsgi.serve(
                app,
                args.bind,
                pool=pool,
                ssl_context=context,
                access_log=sys.stderr if args.access_log else None,
                spread=args.spread,
                backlog=args.backlog,
                max_connections=args.max_connections,
                idle_timeout=args.idle_timeout,
                max_body_size=args.max_body_size,
                app_threads=app_threads,
                app_wait_timeout=wait_timeout,
            )
        except OSError as exc:  # busy or unresolvable address
            raise StartError(str(exc)) from None
        url = _format_url("https" if context else "http", server.address)
        print(f"{PROG}: serving {args.app} on {url} with {hubs} hub{'s' * (hubs > 1)} "
              f"(spread={args.spread}); Ctrl-C to stop", flush=True)
        stop.wait()
        log.info("%s received, stopping (up to %ss for requests in progress)",
                 stop.name, args.graceful_timeout)
        server.stop(args.graceful_timeout)
        log.info("stopped")
        return 0
    finally:
        stop.restore()
        # On the way out of the process: greenlets the pool did not start (a
        # library's background loop, python-engineio's service task, which logs
        # the GreenletExit a kill would give it) are left as daemon threads are.
        pool.shutdown(wait=True, cancel_futures=True, strays="abandon")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m greenpool`` and the ``greenpool`` script; returns the status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
