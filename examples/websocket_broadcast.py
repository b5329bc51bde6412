"""A thread-style WebSocket app (flask-sock): echo, and a broadcaster thread.

    python -m greenpool wsgi examples.websocket_broadcast:app --patch --hubs 4

``/ws`` echoes every message back, except a text message starting with
``broadcast:``, whose remainder goes to every connected client (the sender
included), and ``count``, answered with the number of connected clients.
The broadcaster is a plain ``threading.Thread`` fed by a ``queue.Queue``, as a
thread-style app has it: under greenpool it writes to connections whose
readers wait on other hubs. Unchanged, it also runs under ``gunicorn -k
gevent`` and ``-k gthread``. It is the app of ``benchmarks/websockets.py`` and
of the load-test harness's ``websocket`` target.
"""

from __future__ import annotations

import queue
import threading

from flask import Flask
from flask_sock import Sock

BROADCAST = "broadcast:"

app = Flask(__name__)
sock = Sock(app)

_clients: set = set()
_clients_lock = threading.Lock()
_broadcasts: queue.Queue = queue.Queue()
_broadcaster_started = False


def _broadcaster() -> None:
    """Send each queued message to every client connected at that moment."""
    while True:
        message = _broadcasts.get()
        with _clients_lock:
            clients = list(_clients)
        for ws in clients:
            try:
                ws.send(message)
            except Exception:  # a client that went away meanwhile
                pass


def _start_broadcaster() -> None:
    global _broadcaster_started
    with _clients_lock:
        if _broadcaster_started:
            return
        _broadcaster_started = True
    threading.Thread(target=_broadcaster, name="broadcaster", daemon=True).start()


@sock.route("/ws")
def ws_endpoint(ws) -> None:
    _start_broadcaster()
    with _clients_lock:
        _clients.add(ws)
    try:
        while True:
            message = ws.receive()
            if isinstance(message, str):
                if message.startswith(BROADCAST):
                    _broadcasts.put(message[len(BROADCAST):])
                    continue
                if message == "count":
                    with _clients_lock:
                        ws.send(str(len(_clients)))
                    continue
            ws.send(message)
    finally:
        with _clients_lock:
            _clients.discard(ws)


@app.route("/")
def index() -> str:
    return "ok\n"


