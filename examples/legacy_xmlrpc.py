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

import socketserver  # noqa: E402
import threading  # noqa: E402
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer  # noqa: E402

import _every_hub  # noqa: E402  (beside this script)

import greenpool  # noqa: E402


class QuietHandler(SimpleXMLRPCRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


class Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    allow_reuse_port = True  # every hub binds its own socket to the same port
    daemon_threads = True
    request_queue_size = 128  # the stdlib's 5 drops connection bursts (SYN retries)


def make_server(address: tuple[str, int]) -> Server:
    """The legacy app: a few functions registered on a stdlib XML-RPC server."""
    server = Server(address, requestHandler=QuietHandler, allow_none=True, logRequests=False)

    def where() -> dict:
        return {
            "accepted_on": server.hub_index,  # set by _every_hub.serve
            "handled_on": greenpool.current_hub().index,
            "native_thread": threading.get_native_id(),
        }

    server.register_function(where)
    server.register_function(lambda a, b: a + b, "add")
    server.register_introspection_functions()
    return server


def main(argv=None) -> int:
    return _every_hub.main(
        make_server,
        description=__doc__.splitlines()[0], default_port=8001,
        url="xmlrpc http://{host}:{port}/", argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
