"""Target servers for the harness, each run on a greenpool pool in its own process.

    python -m loadtests.targets echo --hubs 2 --bind 127.0.0.1:9000
    python -m loadtests.targets wsgi --hubs 2 --bind 127.0.0.1:9000 [--app loadtests.apps:app]

``echo`` is ``examples/echo_server.py``'s accept loop under ``greenpool.run``
(connections spread round-robin over the hubs). ``wsgi`` serves a WSGI app with
one gevent ``WSGIServer`` per hub, all accepting on one shared listening socket.
Both serve until SIGINT/SIGTERM and then exit with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import socket as stdlib_socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import greenpool

ECHO_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "echo_server.py"


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


def parse_bind(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--bind must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "wsgi"))
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPU count)")
    parser.add_argument("--bind", type=parse_bind, default=("127.0.0.1", 0), help="HOST:PORT")
    parser.add_argument("--app", default="loadtests.apps:app", help="WSGI app, module:callable")
    opts = parser.parse_args(argv)
    host, port = opts.bind
    print(f"greenpool {opts.kind} target on {host}:{port}, {opts.hubs or 'CPU-count'} hubs",
          file=sys.stderr, flush=True)
    if opts.kind == "echo":
        serve_echo(host, port, opts.hubs)
    else:
        serve_wsgi(host, port, opts.hubs, load_app(opts.app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
