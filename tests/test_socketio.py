"""Flask-SocketIO, default async mode, on greenpool's servers: both transports, real clients.

The app is tests/socketio_app.py; the client is python-socketio's
``socketio.Client`` (``requests`` for long-polling, websocket-client for the
WebSocket transport). Each server gets acknowledged calls, an event answered
with an event, and a background task broadcasting numbered messages to
every client while they emit: each client must get every message once, in
order. Served by ``greenpool.wsgi.serve`` in this process (unpatched, one
hub), by ``python -m greenpool wsgi --patch`` and by ``gunicorn -k
greenpool.gunicorn.Worker`` (patched), on 1 and 4 hubs.
"""

from __future__ import annotations

import signal
import threading

import pytest
import socketio

from greenpool import wsgi
from tests import socketio_app
from tests.procs import get
from tests.test_websocket import start_cli, start_gunicorn, wait_answering

pytestmark = pytest.mark.timeout(90)

TRANSPORTS = ["websocket", "polling"]
CLIENTS = 3
#: Messages a broadcast sends. Fewer than 16: a long-polling response carries
#: whatever queued up, and python-engineio's client refuses a payload of more
#: than 16 packets (``Payload.max_decode_packets``) as "Unexpected packet".
NEWS = 12


class _Client:
    """A connected ``socketio.Client`` and what it received."""

    def __init__(self, address, transport: str) -> None:
        self.news: list[int] = []
        self.all_news = threading.Event()
        self.shouted: list[str] = []
        self.shout_back = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("news", self._on_news)
        self.sio.on("shouted", self._on_shouted)
        self.sio.connect(f"http://{address[0]}:{address[1]}", transports=[transport],
                         wait_timeout=10)

    def _on_news(self, i) -> None:
        self.news.append(i)
        if len(self.news) >= NEWS:
            self.all_news.set()

    def _on_shouted(self, data) -> None:
        self.shouted.append(data)
        self.shout_back.set()


def check_socketio(address, transport: str) -> None:
    clients = [_Client(address, transport) for _ in range(CLIENTS)]
    try:
        for client in clients:
            assert client.sio.transport() == transport
            for i in range(3):
                assert client.sio.call("echo", f"hi {i}", timeout=10) == {"echo": f"hi {i}"}
            client.sio.emit("shout", "hey")
            assert client.shout_back.wait(10), "no 'shouted' event came back"
            assert client.shouted == ["hey"]
        # A background task broadcasts while the clients keep emitting.
        assert clients[0].sio.call("broadcast", NEWS, timeout=10) == "started"
        for i, client in enumerate(clients):
            assert client.sio.call("echo", f"during {i}", timeout=10) == {"echo": f"during {i}"}
        for client in clients:
            assert client.all_news.wait(20), f"got {client.news} of {NEWS} messages"
            assert client.news == list(range(NEWS))  # none lost, none twice, in order
    finally:
        for client in clients:
            client.sio.disconnect()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_flask_socketio_in_process_on_one_hub(make_pool, transport):
    server = wsgi.serve(socketio_app.app, pool=make_pool(1, name="sio"))
    try:
        assert get(server.address, "/mode") == (200, b"gevent")
        check_socketio(server.address, transport)
    finally:
        server.stop(timeout=1)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("hubs", [1, 4])
def test_flask_socketio_under_the_cli(hubs, transport):
    server, address = start_cli("--hubs", str(hubs), app="tests.socketio_app:app")
    with server:
        assert get(address, "/mode") == (200, b"gevent")
        check_socketio(address, transport)
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output  # engineio's service task is left, not killed


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("hubs", [1, 4])
def test_flask_socketio_under_the_gunicorn_worker(hubs, transport):
    server, address = start_gunicorn("--threads", str(hubs), app="tests.socketio_app:app")
    with server:
        wait_answering(address, "/mode")
        check_socketio(address, transport)
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output  # engineio's service task is left, not killed



