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

import http.server  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402

import _every_hub  # noqa: E402  (beside this script)

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


def main(argv=None) -> int:
    return _every_hub.main(
        lambda address: Server(address, Handler),
        description=__doc__.splitlines()[0], default_port=8000,
        url="http://{host}:{port}/", argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
