"""A flask-sock WebSocket echo app, for greenpool's CLI or its gunicorn worker.

    python -m greenpool wsgi --patch --hubs 4 examples.websocket_echo:app
    gunicorn -k greenpool.gunicorn.Worker --threads 4 examples.websocket_echo:app

then, with websocket-client installed (``pip install websocket-client``)::

    python -c "import websocket; ws = websocket.create_connection('ws://127.0.0.1:8000/echo');
    ws.send('hi'); print(ws.recv())"

``/echo`` echoes every message; ``/`` is a page with a browser client.
Patched (``--patch``, and always under the gunicorn worker), flask-sock's
reader thread is a greenlet on the connection's hub. Unpatched, flask-sock
would start a native thread on a gevent socket: the app then tells it to
use gevent's greenlet and event instead (``SOCK_SERVER_OPTIONS``), as the
how-to "WebSockets and other long-lived connections" explains.
"""

from __future__ import annotations

import gevent
import gevent.event
from flask import Flask
from flask_sock import Sock

from greenpool import monkey


class GreenThread(gevent.Greenlet):
    """``threading.Thread(target=...)``'s shape on a greenlet, for an unpatched process."""

    def __init__(self, target, args=(), kwargs=None):
        super().__init__(target, *args, **(kwargs or {}))


app = Flask(__name__)
if not monkey.is_patched():
    app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": GreenThread,
                                         "event_class": gevent.event.Event}
sock = Sock(app)

PAGE = """<!doctype html><title>echo</title>
<input id=m value=hello><button onclick="ws.send(m.value)">send</button><pre id=log></pre>
<script>
const ws = new WebSocket(`ws://${location.host}/echo`);
ws.onmessage = (e) => { log.textContent += e.data + "\\n"; };
</script>"""


@sock.route("/echo")
def echo(ws):
    """Echo every message until the client closes."""
    while True:
        ws.send(ws.receive())


@app.route("/")
def index():
    return PAGE
