"""A stdlib ``xmlrpc.server`` app, unchanged, served by every hub of a greenpool.

``SimpleXMLRPCServer`` with the stdlib ``ThreadingMixIn`` and
``allow_reuse_port = True``; after ``gevent.monkey.patch_all()``,
``greenpool.run(serve, each_hub=True)`` runs one server per hub on the same
port (SO_REUSEPORT), and each call runs in a greenlet on the hub that
accepted its connection. ``where()`` says which one.

    python examples/legacy_xmlrpc.py --port 8001 --hubs 4
    python -c "import xmlrpc.client as x; print(x.ServerProxy('http://127.0.0.1:8001').where())"

``--port 0`` picks a free port; the address is printed once every hub
listens. SIGINT/SIGTERM stops it (exit status 0). Needs Python 3.11+.
"""

from gevent import monkey

monkey.patch_all()  # first: before anything imports socket, threading, ssl...

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer  # noqa: E402

import greenpool  # noqa: E402


class QuietHandler(SimpleXMLRPCRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


class Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
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
                print(f"serving xmlrpc http://{host}:{port}/ on {hubs} hubs", flush=True)


def make_server(address: tuple[str, int]) -> Server:
    """The legacy app: a few functions registered on a stdlib XML-RPC server."""
    server = Server(address, requestHandler=QuietHandler, allow_none=True, logRequests=False)
    server.hub_index = greenpool.current_hub().index

    def where() -> dict:
        return {
            "accepted_on": server.hub_index,
            "handled_on": greenpool.current_hub().index,
            "native_thread": threading.get_native_id(),
        }

    server.register_function(where)
    server.register_function(lambda a, b: a + b, "add")
    server.register_introspection_functions()
    return server


def serve(address: tuple[str, int], listening: AllListening) -> None:
    """Runs on every hub: its own server on the shared port, until cancelled."""
    with make_server(address) as server:
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
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
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
