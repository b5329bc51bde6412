"""The WebSocket test app: flask-sock endpoints, raw upgrade endpoints, plain HTTP.

Imported in-process by tests/test_websocket.py (unpatched: flask-sock is
told to use gevent's greenlet and event, as the how-to says) and copied into
the directory of the CLI and gunicorn subprocesses (patched: the defaults,
threading.Thread and threading.Event, as an app written for threads has them).
"""

from __future__ import annotations

import os
import threading

import gevent
import gevent.event
from flask import Flask, request
from flask_sock import Sock

import greenpool
from greenpool import monkey

PATCHED = monkey.is_patched()


class GreenThread(gevent.Greenlet):
    """``threading.Thread(target=...)``'s shape on a greenlet, for an unpatched process."""

    def __init__(self, target, args=(), kwargs=None):
        super().__init__(target, *args, **(kwargs or {}))


Thread = threading.Thread if PATCHED else GreenThread

app = Flask(__name__)
if not PATCHED:
    app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": GreenThread,
                                         "event_class": gevent.event.Event}
sock = Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        ws.send(ws.receive())


@sock.route("/duplex")
def duplex(ws):
    """Sends ``tick 0``..``tick N-1`` from a second thread while echoing what comes in."""
    count = int(ws.receive())

    def ticker():
        for i in range(count):
            ws.send(f"tick {i}")
            gevent.sleep(0)  # lets the receiving side run between sends, either way patched

    thread = Thread(target=ticker)
    thread.start()
    while True:
        message = ws.receive()
        if message == "bye":
            break
        ws.send(f"echo {message}")
    thread.join()


@sock.route("/hold")
def hold(ws):
    """Answers ``open`` and holds the connection until the client sends anything."""
    ws.send("open")
    ws.receive()


@app.route("/")
def index():
    hub = greenpool.current_hub()
    return f"{os.getpid()} {hub.index} {hub.pool.size}"


#: ``/busy`` holds its app thread from BUSY_STARTED until RELEASE_BUSY (in-process tests).
BUSY_STARTED = greenpool.Event()
RELEASE_BUSY = greenpool.Event()


@app.route("/busy")
def busy():
    BUSY_STARTED.set()
    RELEASE_BUSY.wait(10)
    return "done"


@app.route("/env")
def environ():
    return request.environ["SERVER_SOFTWARE"]


@app.route("/refuse", websocket=True)  # werkzeug matches it to WebSocket requests only
def refuse():
    """An upgrade the app refuses: a 403, the socket untouched."""
    return "no upgrade here", 403


@app.route("/raw-echo")
def raw_echo():
    """Any ``Upgrade``: a 101 on ``greenpool.socket``, then echoes one read of bytes.

    The server's response to what Flask returns afterwards is dropped: the app
    took the connection.
    """
    conn = request.environ["greenpool.socket"]
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                 b"Connection: Upgrade\r\n\r\n")
    data = conn.recv(65536)
    conn.sendall(b"got:" + data)
    return "dropped"


def raw_101(environ, start_response):
    """Any ``Upgrade``, the PEP 3333 way: 101 through start_response, then the socket."""
    conn = environ["greenpool.socket"]
    write = start_response("101 Switching Protocols", [("Upgrade", "echo")])
    write(b"")  # the head goes out now
    data = conn.recv(65536)
    conn.sendall(b"got:" + data)
    return []


def plain_busy(environ, start_response):
    """A plain WSGI route (no router that refuses WebSocket requests, as Flask's does):
    it answers any request, a WebSocket handshake too, with HTTP, as ``/busy`` does."""
    BUSY_STARTED.set()
    RELEASE_BUSY.wait(10)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/raw-101":
        return raw_101(environ, start_response)
    if environ["PATH_INFO"] == "/plain-busy":
        return plain_busy(environ, start_response)
    return app(environ, start_response)
