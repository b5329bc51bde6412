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

import json  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402

import _every_hub  # noqa: E402  (beside this script)

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


def main(argv=None) -> int:
    return _every_hub.main(
        lambda address: Server(address, Handler),
        description=__doc__.splitlines()[0], default_port=9000,
        url="tcp://{host}:{port}", argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
