"""The Flask-SocketIO test app, in Flask-SocketIO's default async mode.

With gevent installed (and no eventlet or gevent-websocket) that mode is
``gevent``: python-engineio then uses simple-websocket for the WebSocket
transport, with gevent's Greenlet, Event, queue and selectors, and gevent's
queue and events for the long-polling transport.
"""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("echo")
def on_echo(data):
    """Answers through the acknowledgement."""
    return {"echo": data}


@socketio.on("shout")
def on_shout(data):
    """Answers with an event of its own."""
    emit("shouted", data)


@socketio.on("broadcast")
def on_broadcast(count):
    """Starts a background task that sends ``count`` numbered messages to every client."""

    def task():
        for i in range(count):
            socketio.emit("news", i)
            socketio.sleep(0)

    socketio.start_background_task(task)
    return "started"


@app.route("/mode")
def mode():
    return socketio.async_mode
