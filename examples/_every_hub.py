"""Shared by the legacy_* examples: run one stdlib server per hub on one port.

Each example defines its unchanged stdlib server; :func:`main` parses
``--host/--port/--hubs``, reserves the port (so ``--port 0`` gives every hub
the same one), runs ``make_server(address)`` on every hub with
``greenpool.run(..., each_hub=True)`` and prints the address once all listen.
Import it only after ``gevent.monkey.patch_all()``.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable

import greenpool


class AllListening:
    """Called by each hub once its server listens; the last one prints the address."""

    def __init__(self, url: str, hubs: int) -> None:
        self.url = url
        self.left = hubs
        self.lock = greenpool.Lock()  # shared by all hubs

    def __call__(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                print(f"serving {self.url} on {greenpool.current_pool().size} hubs", flush=True)


def serve(make_server: Callable, address: tuple[str, int], listening: AllListening) -> None:
    """Runs on every hub: its own server on the shared port, until cancelled."""
    with make_server(address) as server:
        server.hub_index = greenpool.current_hub().index
        listening()
        server.serve_forever()


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) a SO_REUSEPORT socket so ``--port 0`` gives every hub one port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, sock.getsockname()[1]


def main(make_server: Callable, *, description: str, default_port: int, url: str,
         argv=None) -> int:
    """``url`` is a format string with ``{host}`` and ``{port}``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPUs)")
    opts = parser.parse_args(argv)
    hubs = opts.hubs or os.cpu_count() or 1
    reservation, port = reserve_port(opts.host, opts.port)
    with reservation:
        address = (opts.host, port)
        listening = AllListening(url.format(host=opts.host, port=port), hubs)
        greenpool.run(serve, make_server, address, listening, size=hubs, each_hub=True)
    return 0
