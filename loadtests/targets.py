"""Target servers for the harness, each run on a greenpool pool in its own process.

    python -m loadtests.targets echo --hubs 2 --bind 127.0.0.1:9000
    python -m loadtests.targets wsgi --hubs 2 --bind 127.0.0.1:9000 [--app loadtests.apps:app]
    python -m loadtests.targets legacy --hubs 4 --bind 127.0.0.1:9000 [--upstream-delay-ms 100]

``echo`` is ``examples/echo_server.py``'s accept loop under ``greenpool.run``
(connections spread round-robin over the hubs). ``wsgi`` serves a WSGI app with
one gevent ``WSGIServer`` per hub, all accepting on one shared listening socket.
``legacy`` is ``examples/legacy_flask_app.py`` (a thread-style Flask app; it
needs PostgreSQL on 127.0.0.1:5432) served unchanged by ``gunicorn -k
greenpool.gunicorn.Worker --threads HUBS``, with ``examples/legacy_upstream.py``
as its upstream service; both are child processes of this one. All serve until
SIGINT/SIGTERM and then exit with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import signal
import socket as stdlib_socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import greenpool

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ECHO_EXAMPLE = EXAMPLES / "echo_server.py"
UPSTREAM_EXAMPLE = EXAMPLES / "legacy_upstream.py"
LEGACY_APP = "examples.legacy_flask_app:app"


def load_echo_example() -> ModuleType:
    """Import ``examples/echo_server.py`` (not a package) by path."""
    spec = importlib.util.spec_from_file_location("greenpool_echo_example", ECHO_EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ECHO_EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_app(ref: str) -> Callable:
    """Resolve ``"package.module:name"`` to the WSGI callable it names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app must look like 'module:callable', got {ref!r}")
    return getattr(importlib.import_module(module_name), attr)


def _echo_accept_loop(raw: stdlib_socket.socket, server: Callable) -> int:
    from gevent import socket

    listener = socket.socket(fileno=raw.detach())
    return server(listener)


def serve_echo(host: str, port: int, hubs: int | None) -> None:
    """Serve the example echo server until a signal stops ``greenpool.run``."""
    echo = load_echo_example()
    raw = echo.bind(host, port)
    greenpool.run(_echo_accept_loop, raw, echo.server, size=hubs)


def _wsgi_on_this_hub(listener_fd: int, app: Callable) -> None:
    from gevent import socket
    from gevent.pywsgi import WSGIServer

    listener = socket.socket(fileno=os.dup(listener_fd))
    server = WSGIServer(listener, app, log=None)
    # Accept one connection per wake-up, so a burst of new connections is shared
    # between the hubs woken by the shared listener instead of all going to the first.
    server.max_accept = 1
    try:
        server.serve_forever()
    finally:
        server.stop(timeout=1)


def serve_wsgi(host: str, port: int, hubs: int | None, app: Callable) -> None:
    """Serve ``app`` with a WSGIServer on every hub, sharing one listening socket.

    TCP_NODELAY is set on the listener (accepted sockets inherit it on Linux):
    gevent's pywsgi sends a response's headers and body in two writes, and
    with Nagle's algorithm the second waits for the client's delayed ACK,
    about 40 ms per keep-alive request.
    """
    with stdlib_socket.create_server((host, port), backlog=1024) as raw:
        raw.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        greenpool.run(_wsgi_on_this_hub, raw.fileno(), app, size=hubs, each_hub=True)


def start_upstream(delay_ms: float) -> tuple[subprocess.Popen, str]:
    """Start ``examples/legacy_upstream.py`` on a free port; -> (process, its URL).

    In a session of its own, so a signal to this process group (the runner's
    SIGTERM) does not stop it under requests gunicorn is still finishing; it
    stops when its stdin closes, that is when this process ends however it ends.
    """
    upstream = subprocess.Popen(
        [sys.executable, str(UPSTREAM_EXAMPLE), "--port", "0", "--delay-ms", f"{delay_ms:g}",
         "--stop-on-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    banner = upstream.stdout.readline()
    match = re.search(r"serving (http://\S+)", banner)
    if match is None:
        upstream.kill()
        upstream.wait()
        raise RuntimeError(f"the upstream stand-in did not start: {banner!r}")
    return upstream, match.group(1)


def gunicorn_command(host: str, port: int, hubs: int | None, app: str) -> list[str]:
    """One gunicorn worker process of the greenpool worker class, ``hubs`` hubs."""
    return [sys.executable, "-m", "gunicorn", "-k", "greenpool.gunicorn.Worker",
            "--threads", str(hubs or os.cpu_count() or 1), "--workers", "1",
            "--bind", f"{host}:{port}", "--graceful-timeout", "5", "--log-level", "warning",
            "--no-control-socket", app]


def serve_legacy(host: str, port: int, hubs: int | None, upstream_delay_ms: float) -> int:
    """Serve the legacy Flask example under gunicorn until SIGINT/SIGTERM; gunicorn's status.

    A signal to this process is passed on to gunicorn (the runner signals the
    whole process group, so gunicorn may have it already: a second SIGTERM
    during its graceful stop changes nothing). The upstream is stopped last.
    """
    server: subprocess.Popen | None = None
    stopping: list[int] = []

    def pass_on(signum: int, frame) -> None:
        stopping.append(signum)
        if server is not None and server.poll() is None:
            server.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, pass_on)
    upstream, url = start_upstream(upstream_delay_ms)
    try:
        if stopping:
            return 0
        server = subprocess.Popen(gunicorn_command(host, port, hubs, LEGACY_APP),
                                  env=dict(os.environ, LEGACY_UPSTREAM=url))
        if stopping:  # the signal came before `server` was set
            server.send_signal(stopping[0])
        return server.wait()
    finally:
        upstream.stdin.close()  # the upstream's cue to stop
        try:
            upstream.wait(10)
        except subprocess.TimeoutExpired:
            upstream.kill()
            upstream.wait()
        upstream.stdout.close()


def parse_bind(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--bind must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "wsgi", "legacy"))
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPU count)")
    parser.add_argument("--bind", type=parse_bind, default=("127.0.0.1", 0), help="HOST:PORT")
    parser.add_argument("--app", default="loadtests.apps:app", help="WSGI app, module:callable")
    parser.add_argument("--upstream-delay-ms", type=float,
                        default=float(os.environ.get("LEGACY_UPSTREAM_DELAY_MS", "0")),
                        help="legacy: the upstream answers this late [env "
                             "LEGACY_UPSTREAM_DELAY_MS, default 0]")
    opts = parser.parse_args(argv)
    host, port = opts.bind
    print(f"greenpool {opts.kind} target on {host}:{port}, {opts.hubs or 'CPU-count'} hubs",
          file=sys.stderr, flush=True)
    if opts.kind == "echo":
        serve_echo(host, port, opts.hubs)
    elif opts.kind == "legacy":
        return serve_legacy(host, port, opts.hubs, opts.upstream_delay_ms)
    else:
        serve_wsgi(host, port, opts.hubs, load_app(opts.app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
