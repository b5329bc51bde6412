"""A fast upstream HTTP service for examples/legacy_flask_app.py: never the bottleneck.

    python examples/legacy_upstream.py --port 8001 [--delay-ms 100]

Answers every ``GET`` with a small JSON body, keep-alive, optionally after
``--delay-ms`` (an upstream that takes 100 ms, without holding anything while
it waits). It runs asyncio in its own process, sets TCP_NODELAY and writes each
response (headers and body) in one ``write``: a server that writes headers and
body separately with Nagle's algorithm on makes every keep-alive response wait
~40 ms for the client's delayed ACK, and the benchmark would measure that wait
instead of the app. Prints ``serving http://127.0.0.1:PORT/`` once listening;
SIGINT/SIGTERM (and, with ``--stop-on-eof``, the end of stdin) stop it with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import threading

BODY = b'{"upstream": "ok", "items": [1, 2, 3, 4, 5, 6, 7, 8]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 65536


class Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive, pipelining-safe: one response per request head, in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.skip = 0  # request body bytes still to discard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.skip:
                dropped = min(self.skip, len(self.buffer))
                self.buffer = self.buffer[dropped:]
                self.skip -= dropped
                if self.skip:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.reply(BAD_REQUEST, close=True)
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            self.skip = content_length(head)
            if self.skip < 0:
                self.reply(BAD_REQUEST, close=True)
                return
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self.reply, RESPONSE)
            else:
                self.reply(RESPONSE)

    def reply(self, data: bytes, close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def content_length(head: bytes) -> int:
    """The request's Content-Length (0 without one); -1 if malformed."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return 0


async def serve(host: str, port: int, delay: float, stop_on_eof: bool = False) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(delay), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"serving http://{bound[0]}:{bound[1]}/", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stop_on_eof:
        def watch_stdin() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="answer each request this many milliseconds late (default 0)")
    parser.add_argument("--stop-on-eof", action="store_true",
                        help="also stop when stdin closes (a parent process that started it ended)")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must be 0 or more")
    asyncio.run(serve(args.host, args.port, args.delay_ms / 1000, args.stop_on_eof))


if __name__ == "__main__":
    main()
