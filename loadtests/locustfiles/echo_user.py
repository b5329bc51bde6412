"""Raw-TCP echo profile: a locust ``User`` with its own socket client.

Each user keeps one connection to the echo server and sends a payload, then
reads until the same bytes came back. Every round trip is reported through
``environment.events.request`` (request_type ``"TCP"``), so locust's
statistics, CSV and HTML reports cover TCP exactly as they cover HTTP.
``--host`` is ``tcp://HOST:PORT``. ``LOADTEST_PAYLOAD`` sets the payload size
in bytes (default 64).
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

from locust import User, constant, task

CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 5.0
# After a connection error, wait this long before reconnecting, so a dead
# target yields a steady stream of failures instead of a busy loop.
RECONNECT_BACKOFF = 0.05


class EchoMismatch(Exception):
    """The server sent back bytes that differ from what was sent."""


def parse_tcp_host(host: str) -> tuple[str, int]:
    """``"tcp://127.0.0.1:9000"`` or ``"127.0.0.1:9000"`` -> ``("127.0.0.1", 9000)``."""
    parts = urlsplit(host if "://" in host else f"tcp://{host}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"echo host must be tcp://HOST:PORT, got {host!r}")
    return parts.hostname, parts.port


class EchoClient:
    """A blocking socket client (gevent-cooperative under locust) that reports each round trip."""

    def __init__(self, address: tuple[str, int], request_event) -> None:
        self.address = address
        self.request_event = request_event
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT)
            sock.settimeout(IO_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
        return self.sock

    def roundtrip(self, payload: bytes, name: str = "echo") -> None:
        """Send ``payload``, read it back, fire one request event (never raises)."""
        start_time = time.time()
        t0 = time.perf_counter()
        received = bytearray()
        exception: Exception | None = None
        try:
            sock = self._connect()
            sock.sendall(payload)
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("echo server closed the connection")
                received += chunk
            if received != payload:
                raise EchoMismatch(f"sent {len(payload)} bytes, got back different bytes")
        except (OSError, EchoMismatch) as exc:
            exception = exc
            self.close()
        self.request_event.fire(
            request_type="TCP",
            name=name,
            start_time=start_time,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=len(received),
            exception=exception,
            context={},
        )
        if exception is not None:
            time.sleep(RECONNECT_BACKOFF)


class EchoUser(User):
    """One connection, back-to-back echo round trips (closed loop, no think time)."""

    wait_time = constant(0)
    payload = b"x" * int(os.environ.get("LOADTEST_PAYLOAD", "64"))

    def on_start(self) -> None:
        self.client = EchoClient(parse_tcp_host(self.host or ""), self.environment.events.request)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def echo(self) -> None:
        self.client.roundtrip(self.payload)
