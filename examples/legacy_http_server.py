"""A stdlib ``http.server`` app, unchanged, served by every hub of a greenpool.

The app is plain blocking code: a ``ThreadingHTTPServer`` subclass with
``allow_reuse_port = True`` and a ``BaseHTTPRequestHandler``. After
``gevent.monkey.patch_all()`` its sockets are cooperative and its "threads"
are greenlets, so ``greenpool.run(serve, each_hub=True)`` runs one copy of the
server per hub, every copy bound to the same port (SO_REUSEPORT): the kernel
spreads connections over the hubs and each request is handled by a greenlet
on the hub that accepted it. The response says where, as JSON.

    python examples/legacy_http_server.py --port 8000 --hubs 4
    curl http://127.0.0.1:8000/anything        # {"accepted_on": 2, "handled_on": 2, ...}

``--port 0`` picks a free port; the address is printed once every hub
listens. SIGINT/SIGTERM stops it (exit status 0). Needs Python 3.11+
(``allow_reuse_port``).
"""

from gevent import monkey

monkey.patch_all()  # first: before anything imports socket, threading, ssl...

import argparse  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402

import greenpool  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    """The legacy app: answers every GET with the hub that accepted and handled it."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "path": self.path,
                "accepted_on": self.server.hub_index,
                "handled_on": greenpool.current_hub().index,
                "native_thread": threading.get_native_id(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # quiet
        pass


class Server(http.server.ThreadingHTTPServer):
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
                print(f"serving http://{host}:{port}/ on {hubs} hubs", flush=True)


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
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
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
