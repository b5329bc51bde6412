"""A stdlib ``socketserver`` app, unchanged, served by every hub of a greenpool.

A ``ThreadingTCPServer`` subclass with ``allow_reuse_port = True`` and a line
protocol: each line received is answered with one JSON line that echoes it and
says which hub accepted the connection and which handled it (always the same:
a patched "thread" is a greenlet on the accepting hub). After
``gevent.monkey.patch_all()``, ``greenpool.run(serve, each_hub=True)`` runs one
server per hub on the same port (SO_REUSEPORT).

    python examples/legacy_socketserver.py --port 9000 --hubs 4
    printf 'hello\\n' | nc 127.0.0.1 9000

``--port 0`` picks a free port; the address is printed once every hub
listens. SIGINT/SIGTERM stops it (exit status 0). Needs Python 3.11+.
"""

from gevent import monkey

monkey.patch_all()  # first: before anything imports socket, threading, ssl...

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402

import greenpool  # noqa: E402


class Handler(socketserver.StreamRequestHandler):
    """The legacy app: one JSON line back per line in, until the client closes."""

    def handle(self) -> None:
        for line in self.rfile:
            reply = {
                "echo": line.decode().rstrip("\n"),
                "accepted_on": self.server.hub_index,
                "handled_on": greenpool.current_hub().index,
                "native_thread": threading.get_native_id(),
            }
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    allow_reuse_port = True  # every hub binds its own socket to the same port
    daemon_threads = True
    request_queue_size = 128  # the stdlib's 5 drops connection bursts (SYN retries)


class AllListening:
    """Called by each hub once its server listens; the last one prints the address."""

    def __init__(self, address: tuple[str, int], hubs: int) -> None:
        self.address = address
        self.left = hubs
        self.lock = greenpool.Lock()  # shared by all hubs

    def __call__(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                host, port = self.address
                hubs = greenpool.current_pool().size
                print(f"serving tcp://{host}:{port} on {hubs} hubs", flush=True)


def serve(address: tuple[str, int], listening: AllListening) -> None:
    """Runs on every hub: its own server on the shared port, until cancelled."""
    with Server(address, Handler) as server:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPUs)")
    opts = parser.parse_args(argv)
    hubs = opts.hubs or os.cpu_count() or 1
    reservation, port = reserve_port(opts.host, opts.port)
    with reservation:
        address = (opts.host, port)
        greenpool.run(serve, address, AllListening(address, hubs), size=hubs, each_hub=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
