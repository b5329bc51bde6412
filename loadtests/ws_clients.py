"""Many WebSocket clients in one process: raw sockets on one gevent hub.

    python -m loadtests.ws_clients HOST PORT hold N      # open N, then obey stdin
    python -m loadtests.ws_clients HOST PORT echo N SECONDS
    python -m loadtests.ws_clients HOST PORT stress N BROADCASTS

The clients of ``benchmarks/websockets.py`` and of the WebSocket stress test
(``tests/reliability/test_websocket_stress.py``), talking to
``examples/websocket_broadcast.py`` (or its ASGI twin).
Kept deliberately cheap per message (prebuilt masked frames, one ``sendall``
and a buffered frame reader per round trip) so that the server, not this
client, is what a figure measures. ``hold`` opens N connections (at most 200
handshakes at once), prints ``{"open": N}`` and then reads commands from
stdin, one per line: ``count`` (the server's count of its clients),
``broadcast`` (one client asks the server to broadcast; prints the seconds
until every client got it) and ``close``. ``echo`` runs closed-loop echo round
trips of a 32-byte text message on N connections for SECONDS and prints the
count. ``stress`` opens N connections plus one that asks for BROADCASTS
broadcasts, one after the other, while all N run echo round trips; every
client checks that each echo comes back and that it gets every broadcast
exactly once, in order, and the totals are printed. Every answer is one JSON
line on stdout. Answers pings (uvicorn's ``websockets`` pings every 20 s).
"""

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pool import Pool  # noqa: E402

HANDSHAKES_AT_ONCE = 200
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class Conn:
    """One client WebSocket: a socket and a receive buffer."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(rest)

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def read(self) -> tuple[int, bytes]:
        """The next data frame's (opcode, payload); answers pings on the way."""
        while True:
            self._fill(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                self._fill(4)
                n, at = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                self._fill(10)
                n, at = struct.unpack_from("!Q", self.buf, 2)[0], 10
            self._fill(at + n)
            payload = bytes(self.buf[at:at + n])
            del self.buf[:at + n]
            opcode = b0 & 0x0F
            if opcode == PING:
                self.sock.sendall(frame(PONG, payload))
                continue
            if opcode == CLOSE:
                raise ConnectionError("server sent a close frame")
            return opcode, payload


def connect(host: str, port: int) -> Conn:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    sock.settimeout(None)
    return Conn(sock, rest)


def open_all(host: str, port: int, n: int) -> list[Conn]:
    pool = Pool(HANDSHAKES_AT_ONCE)
    return list(pool.imap_unordered(lambda _: connect(host, port), range(n)))


def say(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def receive_token(conn: Conn, token: bytes, got: list, total: int, done: Event) -> None:
    """Read until ``token`` arrives; the last of ``total`` readers to get it sets ``done``."""
    while conn.read()[1] != token:
        pass
    got[0] += 1
    if got[0] == total:
        done.set()


def hold(host: str, port: int, n: int) -> None:
    conns = open_all(host, port, n)
    say(open=len(conns))
    for line in sys.stdin:
        command = line.strip()
        if command == "count":
            conns[0].sock.sendall(frame(TEXT, b"count"))
            say(count=int(conns[0].read()[1]))
        elif command == "broadcast":
            token = f"b{time.monotonic_ns()}".encode()
            done, got = Event(), [0]
            readers = [gevent.spawn(receive_token, conn, token, got, len(conns), done)
                       for conn in conns]
            gevent.sleep(0)
            t0 = time.perf_counter()
            conns[0].sock.sendall(frame(TEXT, b"broadcast:" + token))
            finished = done.wait(60)
            say(broadcast_s=time.perf_counter() - t0, received=got[0], complete=bool(finished))
            gevent.killall(readers)
        elif command == "close":
            break
    for conn in conns:
        conn.sock.close()


def echo(host: str, port: int, n: int, seconds: float) -> None:
    conns = open_all(host, port, n)
    message = b"x" * 32
    counts = [0]
    errors = [0]
    stop_at = [0.0]

    def loop(conn: Conn) -> None:
        try:
            while time.perf_counter() < stop_at[0]:
                conn.sock.sendall(frame(TEXT, message))
                if conn.read()[1] != message:
                    raise ValueError("echo mismatch")
                counts[0] += 1
        except Exception:
            errors[0] += 1

    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(loop, conn) for conn in conns])
    elapsed = time.perf_counter() - t0
    say(roundtrips=counts[0], seconds=elapsed, rate=counts[0] / elapsed, errors=errors[0])
    for conn in conns:
        conn.sock.close()


def stress(host: str, port: int, n: int, broadcasts: int, timeout: float = 120) -> None:
    conns = open_all(host, port, n + 1)
    trigger, clients = conns[0], conns[1:]
    tokens = [f"tok{i}".encode() for i in range(broadcasts)]
    echoes, mismatched, errors = [0], [0], [0]
    received: list[list[bytes]] = [[] for _ in conns]
    finished = Event()

    def client(index: int, conn: Conn) -> None:
        seq = 0
        got = received[index]
        try:
            while len(got) < broadcasts:
                seq += 1
                message = f"e{index}:{seq}".encode()
                conn.sock.sendall(frame(TEXT, message))
                while True:
                    answer = conn.read()[1]
                    if answer.startswith(b"tok"):
                        got.append(answer)
                        continue
                    if answer != message:
                        mismatched[0] += 1
                    break
                echoes[0] += 1
        except Exception:
            errors[0] += 1

    def trigger_all() -> None:
        got = received[0]
        try:
            for token in tokens:
                trigger.sock.sendall(frame(TEXT, b"broadcast:" + token))
                while conn_read_token(trigger, got) != token:
                    pass
        except Exception:
            errors[0] += 1
        finished.set()

    t0 = time.perf_counter()
    workers = [gevent.spawn(client, i + 1, conn) for i, conn in enumerate(clients)]
    gevent.spawn(trigger_all)
    finished.wait(timeout)
    gevent.joinall(workers, timeout=max(1.0, timeout - (time.perf_counter() - t0)))
    gevent.killall(workers)
    lost = duplicated = out_of_order = 0
    for got in received:
        lost += len(set(tokens) - set(got))
        duplicated += len(got) - len(set(got))
        out_of_order += int(got != [t for t in tokens if t in got])
    say(clients=n, broadcasts=broadcasts, echoes=echoes[0], mismatched=mismatched[0],
        errors=errors[0], lost=lost, duplicated=duplicated, out_of_order=out_of_order,
        seconds=time.perf_counter() - t0)
    for conn in conns:
        conn.sock.close()


def conn_read_token(conn: Conn, got: list) -> bytes:
    """The trigger's next broadcast (it sends no echoes), recorded in ``got``."""
    answer = conn.read()[1]
    got.append(answer)
    return answer


def main() -> None:
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4])
    if mode == "hold":
        hold(host, port, n)
    elif mode == "echo":
        echo(host, port, n, float(sys.argv[5]))
    elif mode == "stress":
        stress(host, port, n, int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: hold, echo or stress")


if __name__ == "__main__":
    main()
