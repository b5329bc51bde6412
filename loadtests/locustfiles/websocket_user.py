"""WebSocket profile: each user holds one WebSocket to ``examples/websocket_broadcast.py``.

A user opens ``/ws`` once (websocket-client, cooperative under locust's
gevent), then sends text messages and waits for each echo; every round trip is
reported through ``environment.events.request`` (request_type ``"WS"``,
name ``"echo"``), so locust's statistics, CSV and HTML reports cover it as
they cover HTTP. One task in ``BROADCAST_EVERY`` asks the server's
broadcaster thread to send a message to every connected client instead; the
user then reads until its own broadcast comes back (``"broadcast"``), skipping
the other users' broadcasts it meets on the way, as every reader must.
``--host`` is ``ws://HOST:PORT``; ``LOADTEST_PAYLOAD`` sets the echo size
(default 64 bytes).
"""

from __future__ import annotations

import itertools
import os
import time

import websocket
from locust import User, constant, task

CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 15.0
BROADCAST_EVERY = 20
RECONNECT_BACKOFF = 0.05
_ids = itertools.count()


class Mismatch(Exception):
    """The server sent back something else than what was asked for."""


class WebSocketUser(User):
    """One WebSocket per user, back-to-back echo round trips, now and then a broadcast."""

    wait_time = constant(0)
    payload = "x" * int(os.environ.get("LOADTEST_PAYLOAD", "64"))

    def on_start(self) -> None:
        self.id = next(_ids)
        self.ws: websocket.WebSocket | None = None
        self.turn = 0

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def _connect(self) -> websocket.WebSocket:
        if self.ws is None:
            url = (self.host or "").rstrip("/") + "/ws"
            self.ws = websocket.create_connection(url, timeout=CONNECT_TIMEOUT)
            self.ws.settimeout(IO_TIMEOUT)
        return self.ws

    def _measure(self, name: str, exchange) -> None:
        start_time = time.time()
        t0 = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            length = exchange(self._connect())
        except (OSError, websocket.WebSocketException, Mismatch) as exc:
            exception = exc
            self.on_stop()
        self.environment.events.request.fire(
            request_type="WS", name=name, start_time=start_time,
            response_time=(time.perf_counter() - t0) * 1000, response_length=length,
            exception=exception, context={},
        )
        if exception is not None:
            time.sleep(RECONNECT_BACKOFF)

    def _echo(self, ws: websocket.WebSocket) -> int:
        ws.send(self.payload)
        while True:
            answer = ws.recv()
            if answer == self.payload:
                return len(answer)
            if not (isinstance(answer, str) and answer.startswith("from-")):
                raise Mismatch(f"sent {len(self.payload)} chars, got back {answer[:40]!r}")

    def _broadcast(self, ws: websocket.WebSocket) -> int:
        token = f"from-{self.id}-{self.turn}"
        ws.send("broadcast:" + token)
        while True:  # other users' broadcasts may come first
            answer = ws.recv()
            if answer == token:
                return len(answer)
            if not (isinstance(answer, str) and answer.startswith("from-")):
                raise Mismatch(f"waited for broadcast {token!r}, got {answer[:40]!r}")

    @task
    def exchange(self) -> None:
        self.turn += 1
        if self.turn % BROADCAST_EVERY == 0:
            self._measure("broadcast", self._broadcast)
        else:
            self._measure("echo", self._echo)
