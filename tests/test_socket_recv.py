"""recv/recv_into that wait without raising EAGAIN first (greenpool.monkey.sockets, C extension).

With the extension built, ``greenpool.monkey.sockets.install()`` replaces gevent's
``SocketMixin.recv``/``recv_into`` with C versions that make the
non-blocking ``recv(2)`` themselves. They must be indistinguishable from
gevent's: every case below runs once with gevent's methods and once with the
installed ones, in the same patched child, and the outcomes (value, buffer
contents, or exception type, errno and message) must be identical.
"""

from __future__ import annotations

import json
import os

import pytest

from .helpers import run_python_ok

pytestmark = pytest.mark.timeout(60)

PURE = bool(os.environ.get("GREENPOOL_PURE_PYTHON"))

CHILD = r"""
import array, json, socket, struct
from gevent import monkey; monkey.patch_all()
import gevent
from gevent import _socketcommon
from greenpool.monkey import sockets as _socket_follow
from greenpool._compiled import speedups

Mixin = _socketcommon.SocketMixin
NAMES = ("recv", "recv_into")
gevent_methods = {n: Mixin.__dict__[n] for n in NAMES}
_socket_follow.install()
installed = {n: Mixin.__dict__[n] for n in NAMES}

def pair(data=b"", close_peer=False):
    a, b = socket.socketpair()
    if data:
        b.sendall(data)
    if close_peer:
        b.close()
    return a, b

def outcome(fn):
    try:
        value = fn()
    except BaseException as exc:
        return ["err", type(exc).__name__, getattr(exc, "errno", None), str(exc)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).hex()
    elif isinstance(value, tuple):
        value = [bytes(v).hex() if isinstance(v, (bytes, bytearray)) else v for v in value]
    return ["ok", value]

def later(sock, data):
    gevent.spawn_later(0.01, sock.sendall, data)

def reset_pair():
    listener = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(listener.getsockname())
    s, _ = listener.accept()
    listener.close()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    gevent.sleep(0.01)
    return c, None

def case_recv_into(data, make_buffer, *args, close_peer=False):
    a, b = pair(data, close_peer)
    buf = make_buffer()
    n = a.recv_into(buf, *args)
    return n, bytes(buf)

def timed_out():
    a, b = pair()
    a.settimeout(0.02)
    return a.recv(1)

def nonblocking(into=False):
    a, b = pair()
    a.setblocking(False)
    return a.recv_into(bytearray(4)) if into else a.recv(4)

def closed(into=False):
    a, b = pair(b"x")
    a.close()
    return a.recv_into(bytearray(4)) if into else a.recv(4)

def waits(into=False):
    a, b = pair()
    later(b, b"late")
    if into:
        buf = bytearray(8)
        return a.recv_into(buf), bytes(buf)
    return a.recv(8)

def closed_while_waiting():
    a, b = pair()
    gevent.spawn_later(0.01, a.close)
    return a.recv(4)

def peek_then_read():
    a, b = pair(b"hello")
    return a.recv(5, socket.MSG_PEEK), a.recv(5)

def udp_pair():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    w.connect(r.getsockname())
    return r, w

def udp_zero_keeps_the_datagram():
    r, w = udp_pair()
    w.send(b"one")
    gevent.sleep(0.01)
    return r.recv(0), r.recv(10)

def udp_truncated():
    r, w = udp_pair()
    w.send(b"datagram!")
    gevent.sleep(0.01)
    return len(r.recv(4, int(socket.MSG_TRUNC)))

def zero_without_data(into=False, nonblocking=False):
    a, b = pair()
    if nonblocking:
        a.setblocking(False)
    return a.recv_into(bytearray(0)) if into else a.recv(0)

def resized_while_waiting():
    a, b = pair()
    buf = bytearray(4)
    def other():
        gevent.sleep(0.01)
        buf.extend(b"zz")  # a BufferError if the buffer stayed exported during the wait
        b.send(b"hi")
    gevent.spawn(other)
    return a.recv_into(buf), bytes(buf)

def big_read(into=False):
    a, b = pair(b"x" * 70000)
    if into:
        buf = bytearray(1 << 17)
        return a.recv_into(buf)
    return len(a.recv(1 << 17))

class Wrapped:
    # Something other than a _socket.socket in self._sock: its own recv is called.
    def __init__(self, sock): self.sock = sock
    def recv(self, *args): return b"wrapped:" + self.sock.recv(*args)
    def recv_into(self, buf, *args): return 42
    def fileno(self): return self.sock.fileno()

def replaced_sock(into=False):
    a, b = pair(b"data")
    real = a._sock
    a._sock = Wrapped(real)
    try:
        return a.recv_into(bytearray(4)) if into else a.recv(4)
    finally:
        a._sock = real

def reset(into=False):
    c, _ = reset_pair()
    return c.recv_into(bytearray(4)) if into else c.recv(4)

CASES = {
    "recv some": lambda: pair(b"hello")[0].recv(10),
    "recv exact": lambda: pair(b"hello")[0].recv(5),
    "recv part": lambda: pair(b"hello")[0].recv(2),
    "recv zero": lambda: pair(b"hello")[0].recv(0),
    "recv eof": lambda: pair(close_peer=True)[0].recv(4),
    "recv peek": peek_then_read,
    "recv negative": lambda: pair(b"x")[0].recv(-1),
    "recv str size": lambda: pair(b"x")[0].recv("4"),
    "recv float size": lambda: pair(b"x")[0].recv(4.0),
    "recv bool size": lambda: pair(b"x")[0].recv(True),
    "recv str flags": lambda: pair(b"x")[0].recv(4, "0"),
    "recv huge": lambda: pair(b"x")[0].recv(2 ** 70),
    "recv huge flags": lambda: pair(b"x")[0].recv(4, 2 ** 40),
    "recv keyword": lambda: pair(b"x")[0].recv(bufsize=4),
    "recv no args": lambda: pair(b"x")[0].recv(),
    "recv three args": lambda: pair(b"x")[0].recv(4, 0, 0),
    "recv nonblocking": nonblocking,
    "recv timeout": timed_out,
    "recv closed": closed,
    "recv waits": waits,
    "recv closed while waiting": closed_while_waiting,
    "recv reset": reset,
    "into bytearray": lambda: case_recv_into(b"hello", lambda: bytearray(10)),
    "into nbytes": lambda: case_recv_into(b"hello", lambda: bytearray(10), 3),
    "into nbytes zero": lambda: case_recv_into(b"hello", lambda: bytearray(10), 0),
    "into flags peek": lambda: case_recv_into(b"hello", lambda: bytearray(10), 0,
                                              socket.MSG_PEEK),
    "into too small": lambda: case_recv_into(b"hello", lambda: bytearray(4), 10),
    "into negative": lambda: case_recv_into(b"hello", lambda: bytearray(4), -1),
    "into bytes": lambda: case_recv_into(b"hello", lambda: b"immutable"),
    "into str": lambda: case_recv_into(b"hello", lambda: "text"),
    "into memoryview slice": lambda: case_recv_into(b"hello",
                                                    lambda: memoryview(bytearray(10))[2:5]),
    "into readonly view": lambda: case_recv_into(b"hello", lambda: memoryview(b"0123")),
    "into array": lambda: case_recv_into(b"hello", lambda: array.array("b", [0] * 8)),
    "into empty": lambda: case_recv_into(b"hello", lambda: bytearray(0)),
    "into eof": lambda: case_recv_into(b"", lambda: bytearray(4), close_peer=True),
    "into keyword": lambda: pair(b"x")[0].recv_into(bytearray(4), nbytes=2),
    "into no args": lambda: pair(b"x")[0].recv_into(),
    "into nonblocking": lambda: nonblocking(into=True),
    "into closed": lambda: closed(into=True),
    "into waits": lambda: waits(into=True),
    "into reset": lambda: reset(into=True),
    "recv zero without data": zero_without_data,
    "recv zero nonblocking": lambda: zero_without_data(nonblocking=True),
    "into empty without data": lambda: zero_without_data(into=True),
    "into nbytes zero empty buffer": lambda: pair()[0].recv_into(bytearray(0), 0),
    "recv zero udp keeps the datagram": udp_zero_keeps_the_datagram,
    "recv udp truncated": udp_truncated,
    "recv int flags peek": lambda: pair(b"hello")[0].recv(5, int(socket.MSG_PEEK)),
    "recv intflag flags peek": lambda: pair(b"hello")[0].recv(5, socket.MSG_PEEK),
    "into int flags peek": lambda: case_recv_into(b"hello", lambda: bytearray(8), 0,
                                                  int(socket.MSG_PEEK)),
    "into resized while waiting": resized_while_waiting,
    "recv big": big_read,
    "into big": lambda: big_read(into=True),
    "recv many args": lambda: pair(b"x")[0].recv(1, 2, 3, 4, 5, 6, 7, 8, 9),
    "recv replaced _sock": replaced_sock,
    "into replaced _sock": lambda: replaced_sock(into=True),
}

results = {}
for name, fn in CASES.items():
    got = {}
    for label, methods in (("gevent", gevent_methods), ("installed", installed)):
        for n, m in methods.items():
            setattr(Mixin, n, m)
        got[label] = outcome(fn)
    results[name] = got
print(json.dumps({
    "results": results,
    "compiled": speedups is not None,
    "replaced": {n: installed[n] is not gevent_methods[n] for n in NAMES},
}))
"""


def run_child() -> dict:
    return json.loads(run_python_ok(CHILD).splitlines()[-1])


def test_installed_recv_and_recv_into_behave_exactly_as_geventss():
    report = run_child()
    results = report["results"]
    assert len(results) >= 55
    mismatches = {name: got for name, got in results.items() if got["gevent"] != got["installed"]}
    assert not mismatches, json.dumps(mismatches, indent=1)
    # The table covers what it claims: data, waits, and each kind of refusal.
    kinds = {got["gevent"][1] if got["gevent"][0] == "err" else "ok" for got in results.values()}
    assert {"ok", "ValueError", "TypeError", "OverflowError", "BlockingIOError", "TimeoutError",
            "OSError", "ConnectionResetError"} <= kinds
    assert results["recv waits"]["installed"] == ["ok", b"late".hex()]
    assert results["into waits"]["installed"] == ["ok", [4, b"late\0\0\0\0".hex()]]
    # recv(0) never touches the socket (CPython's rule): no wait, no datagram lost.
    assert results["recv zero without data"]["installed"] == ["ok", ""]
    assert results["recv zero udp keeps the datagram"]["installed"] == ["ok", ["", b"one".hex()]]
    assert results["into resized while waiting"]["installed"] == ["ok", [2, b"hi\0\0zz".hex()]]


def test_recv_and_recv_into_are_replaced_exactly_when_the_extension_is_built():
    report = run_child()
    assert report["compiled"] is (not PURE)
    assert report["replaced"] == {"recv": not PURE, "recv_into": not PURE}
