"""Sockets follow the greenlet that uses them (greenpool.monkey.sockets, issue 10).

Every scenario runs in a patched subprocess; this (unpatched) process runs
the peers: a threaded echo server (plain or TLS), a keep-alive HTTP server,
and uses the local Redis. A child must exit 0 with an empty stderr: nothing
printed at exit for sockets whose hub has stopped.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import StreamRequestHandler, ThreadingTCPServer

import pytest

from .helpers import make_certificate, need_service, run_python

ROOT = Path(__file__).resolve().parent.parent

#: Patching used by the socket-level scenarios: gevent's, plus only this piece,
#: so they test socket following alone.
PATCH_SOCKETS = """
import warnings
from gevent import monkey; monkey.patch_all()
from greenpool.monkey import sockets; sockets.install()
warnings.filterwarnings("ignore", "gevent.monkey.patch_all.. alone", RuntimeWarning)
"""

#: The whole of greenpool.monkey (cross-hub locks for the client libraries' pools).
PATCH_ALL = """
import greenpool.monkey; greenpool.monkey.patch_all()
"""

COMMON = """
import socket, ssl, sys, threading, time
import gevent, greenpool
from gevent.exceptions import ConcurrentObjectUseError
from greenpool.errors import WrongHubError

ADDRESS = ("127.0.0.1", int(sys.argv[1]))
CAFILE = sys.argv[2] if len(sys.argv) > 2 else None
pool = greenpool.Pool(4)

def on(index, fn, *args):
    return pool.spawn_on(index, fn, *args).result(20)

def here():
    return greenpool.current_hub().index

def bounded_wait(predicate, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.001)

def waiting_here(sock):
    event = sock._read_event
    return sock.hub is gevent.get_hub() and event is not None and event.callback is not None

def echo_while_waiting(sock, line, read=None):
    # ask the echo server for the line only once the read waits on this hub
    reader = gevent.spawn(read or sock.recv, 64)
    bounded_wait(lambda: waiting_here(sock), "the read to wait on this hub")
    sock.sendall(line)
    return reader.get(timeout=10)
"""


class _EchoHandler(StreamRequestHandler):
    """Echoes each line; ``twice:X`` answers ``X`` twice in one write (to fill a buffer)."""

    def handle(self) -> None:
        for line in self.rfile:
            if line.startswith(b"twice:"):
                self.wfile.write(line[6:] * 2)
            else:
                self.wfile.write(line)


class _EchoServer(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TLSEchoServer(_EchoServer):
    def __init__(self, address, handler, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def echo_port():
    server, thread = _serve(_EchoServer(("127.0.0.1", 0), _EchoHandler))
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def tls_echo(tmp_path):
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server, thread = _serve(_TLSEchoServer(("127.0.0.1", 0), _EchoHandler, context))
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()
    thread.join(10)


def run_child(body: str, *args, patch: str = PATCH_SOCKETS, timeout: float = 40):
    """Run ``patch + COMMON + body`` with ``args``; it must print ok and nothing to stderr."""
    code = f"import sys; sys.argv[1:] = {[str(a) for a in args]!r}\n" + patch + COMMON + body
    proc = run_python(code, timeout=timeout, cwd=ROOT)
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert proc.stderr == "", output
    assert proc.stdout.strip().endswith("ok"), output
    return proc.stdout


@pytest.mark.timeout(60)
def test_plain_socket_made_on_hub_0_is_used_in_turn_from_hubs_1_2_3(echo_port):
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
fd, hub0 = sock.fileno(), sock.hub

def exchange(n):
    data = echo_while_waiting(sock, b"hello %d\\n" % n)   # the wait moves it here
    return here(), sock.hub is gevent.get_hub(), sock.fileno(), data

for n in (1, 2, 3, 0, 2):
    assert on(n, exchange, n) == (n, True, fd, b"hello %d\\n" % n), n
assert sock.hub is not hub0        # it moved, in place, and came back
on(2, sock.close)                   # closed on the hub it lives on
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_the_main_thread_and_a_native_thread_count_as_hubs_too(echo_port):
    run_child("""
from gevent.monkey import get_original
start_new_thread = get_original("_thread", "start_new_thread")
sock = on(0, socket.create_connection, ADDRESS)
assert echo_while_waiting(sock, b"main\\n") == b"main\\n"   # the main thread's hub
assert sock.hub is gevent.get_hub()

box, done = [], get_original("threading", "Event")()
def native():                       # a plain OS thread: its own hub on first wait
    try:
        box.append((echo_while_waiting(sock, b"native\\n"), sock.hub is gevent.get_hub()))
    except BaseException as exc:
        box.append(exc)
    done.set()
start_new_thread(native, ())
assert done.wait(20) and box == [(b"native\\n", True)], box
assert on(1, echo_while_waiting, sock, b"back\\n") == b"back\\n"
sock.close()                         # from the main thread, the socket on hub 1
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_a_wait_on_a_watcher_retired_by_a_move_waits_on_the_current_one(echo_port):
    """A greenlet that read ``sock._read_event`` just before another hub moved the socket.

    The stale watcher is never waited on (nobody would wake it): the wait goes
    to the direction's current watcher. Only a greenlet on another hub really
    waiting in the same direction is an error (the two-hubs test below).
    """
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
stale = sock._read_event                       # what gevent's recv passes to _wait
on(1, greenpool.rebind, sock)                  # moved away and back: new watchers
on(0, greenpool.rebind, sock)
assert sock._read_event is not stale

def stale_wait_then_recv(size):
    sock._wait(stale)                          # retired: waits on the current watcher
    return sock.recv(size)

assert on(0, echo_while_waiting, sock, b"stale\\n", stale_wait_then_recv) == b"stale\\n"
assert on(0, echo_while_waiting, sock, b"still fine\\n") == b"still fine\\n"
on(0, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_a_handover_right_after_a_wait_prints_nothing(echo_port):
    """libev stops a watcher once more after its callback: it may be retired by then."""
    run_child("""
from gevent.monkey import get_original
real_sleep = get_original("time", "sleep")
handed = get_original("_thread", "allocate_lock")()   # native: release() never yields
handed.acquire()
sock = on(0, socket.create_connection, ADDRESS)

def recv_then_hand_over(size):
    data = sock.recv(size)
    handed.release()                 # hub 0 has not regained control yet...
    deadline = time.monotonic() + 10
    while sock.hub is not pool.hubs[1].gevent_hub:   # ...when hub 1 takes the socket
        assert time.monotonic() < deadline, "hub 1 did not take the socket"
        real_sleep(0.001)
    return data

def second_user():
    assert handed.acquire(timeout=10)
    return echo_while_waiting(sock, b"two\\n")

second = pool.spawn_on(1, second_user)
assert on(0, echo_while_waiting, sock, b"one\\n", recv_then_hand_over) == b"one\\n"
assert second.result(10) == b"two\\n"
on(1, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_tls_socket_keeps_its_openssl_state_and_handshakes_on_the_hub_that_waits(tls_echo):
    port, cafile = tls_echo
    run_child("""
context = ssl.create_default_context(cafile=CAFILE)

def connect():
    raw = socket.create_connection(ADDRESS)
    return context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)

tls = on(0, connect)
on(1, tls.do_handshake)            # the TLS handshake waits on hub 1
sslobj = tls._sslobj                # one OpenSSL connection throughout

def exchange(n):
    data = echo_while_waiting(tls, b"tls %d\\n" % n)
    return here(), tls.hub is gevent.get_hub(), data, tls._sslobj is sslobj

for n in (2, 3, 0, 1):
    got = on(n, exchange, n)
    assert got == (n, True, b"tls %d\\n" % n, True), got
on(3, tls.close)
pool.shutdown()
print("ok")
""", port, cafile)


@pytest.mark.timeout(60)
def test_makefile_reader_keeps_its_buffered_bytes_on_another_hub(echo_port):
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
reader = sock.makefile("rb")

def first():
    sock.sendall(b"twice:line\\n")
    return reader.readline()       # the second copy stays in the reader's buffer

def second():
    return reader.readline()       # served from the buffer: no wait, no move

def third():
    data = echo_while_waiting(sock, b"more\\n", read=lambda size: reader.readline())
    return here(), data, sock.hub is gevent.get_hub()

assert on(0, first) == b"line\\n"
assert on(1, second) == b"line\\n"
assert on(2, third) == (2, b"more\\n", True)
on(3, lambda: (reader.close(), sock.close()))
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_two_hubs_waiting_on_one_socket_get_a_clear_error_not_a_hang(echo_port):
    run_child("""
from greenpool.monkey.sockets import ConcurrentSocketUseError
sock = on(0, socket.create_connection, ADDRESS)
waiting = pool.spawn_on(0, sock.recv, 64)     # nothing to read yet: it waits on hub 0
bounded_wait(lambda: sock._read_event.callback is not None, "hub 0 to wait")

second = pool.spawn_on(1, sock.recv, 64)
error = second.exception(10)
assert isinstance(error, ConcurrentSocketUseError), repr(error)
assert isinstance(error, WrongHubError) and isinstance(error, ConcurrentObjectUseError)
assert not isinstance(error, OSError)          # pools must not retry it as a network error
assert "fd=%d" % sock.fileno() in str(error), str(error)
assert str(ADDRESS[1]) in str(error), str(error)                 # names the connection
assert "hub 'greenpool-" in str(error), str(error)             # and both hubs
print(error)

sock.sendall(b"wake\\n")                        # no wait: sending does not move it
assert waiting.result(10) == b"wake\\n"        # the first user is unharmed
assert sock.hub is pool.hubs[0].gevent_hub
on(1, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_racing_users_on_four_hubs_get_the_error_or_their_bytes_never_a_hang(echo_port):
    """Deliberate misuse under contention: every outcome is a clear error or data.

    Racers on one hub get gevent's own ConcurrentObjectUseError; across hubs,
    its subclass ConcurrentSocketUseError.
    """
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
sock.settimeout(15)                     # a hang would be a timeout: reported, not waited out
ROUNDS, MESSAGE = 150, b"01234567\\n"

from greenpool.monkey.sockets import ConcurrentSocketUseError
refusals = {"same hub": 0, "across hubs": 0}

def refused(exc):
    refusals["across hubs" if isinstance(exc, ConcurrentSocketUseError) else "same hub"] += 1
    gevent.sleep(0)

def racer():
    for _ in range(ROUNDS):
        while True:                     # send one message...
            try:
                sock.sendall(MESSAGE)
                break
            except ConcurrentObjectUseError as exc:
                refused(exc)
        wanted = len(MESSAGE)           # ...and read as many bytes, whoever's they were
        while wanted:
            try:
                wanted -= len(sock.recv(wanted))
            except ConcurrentObjectUseError as exc:
                refused(exc)

futures = [pool.spawn_on(n % 4, racer) for n in range(8)]
for f in futures:
    f.result(40)
print(refusals)
assert refusals["across hubs"] > 0, "the racers never met: the test raced nothing"
sock.settimeout(0)
try:
    extra = sock.recv(64)
except BlockingIOError:
    extra = b""
assert extra == b"", extra               # every byte sent was read once
on(1, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_closing_on_another_hub_wakes_the_waiter_with_ebadf_as_on_one_hub(echo_port):
    run_child("""
import errno
sock = on(0, socket.create_connection, ADDRESS)
waiting = pool.spawn_on(0, sock.recv, 64)
bounded_wait(lambda: sock._read_event.callback is not None, "hub 0 to wait")
on(1, sock.close)                               # the owning hub does the real close
error = waiting.exception(10)
assert isinstance(error, OSError) and error.errno == errno.EBADF, repr(error)
assert sock.fileno() == -1
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_shutdown_from_another_hub_wakes_the_waiter_through_the_kernel(echo_port):
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
waiting = pool.spawn_on(0, sock.recv, 64)
bounded_wait(lambda: sock._read_event.callback is not None, "hub 0 to wait")
on(1, sock.shutdown, socket.SHUT_RDWR)          # hub 0's loop is left alone
assert waiting.result(10) == b""                # EOF, as between threads
on(1, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(60)
def test_sockets_whose_hub_stopped_close_silently_even_at_exit(echo_port, tls_echo):
    """Without it: 'ValueError: operation on destroyed loop' from close() and at exit."""
    tls_port, cafile = tls_echo
    run_child("""
import gc
socks = [on(n, socket.create_connection, ADDRESS) for n in range(4)]
reader = socks[3].makefile("rb")
context = ssl.create_default_context(cafile=CAFILE)
TLS_ADDRESS = (ADDRESS[0], int(sys.argv[3]))
tls = on(1, lambda: context.wrap_socket(socket.create_connection(TLS_ADDRESS),
                                        server_hostname="localhost"))
other_tls = on(2, lambda: context.wrap_socket(socket.create_connection(TLS_ADDRESS),
                                              server_hostname="localhost"))
pool.shutdown()                               # every hub stops: their loops are destroyed
socks[0].close()                              # in the main thread
threading.Thread(target=socks[1].close).start()   # in a thread without a hub
socks[1].close()
socks.pop(2)
gc.collect()                                  # dropped without close
tls.close()
leftover = socks, other_tls                   # closed at exit
print("ok")
""", echo_port, cafile, tls_port)


@pytest.mark.timeout(60)
def test_rebind_moves_in_place_once_installed(echo_port):
    run_child("""
sock = on(0, socket.create_connection, ADDRESS)
moved = on(1, greenpool.rebind, sock)
assert moved is sock and sock.hub is pool.hubs[1].gevent_hub

def use_file(f):                 # socket files may cross hubs now: the socket follows
    sock.sendall(b"file\\n")
    return f.readline()

assert on(2, use_file, sock.makefile("rb")) == b"file\\n"
on(2, sock.close)
pool.shutdown()
print("ok")
""", echo_port)


@pytest.mark.timeout(30)
def test_greenpool_monkey_installs_socket_following():
    proc = run_python(PATCH_ALL + """
from gevent import _socketcommon
from greenpool.monkey import sockets as _socket_follow
from greenpool._compiled import speedups
assert _socket_follow.installed()
wait = _socketcommon.SocketMixin.__dict__["_wait"]
assert wait is _socket_follow._installed_wait
# the C same-hub wait where the extension is built, else the pure-Python one
assert (wait is _socket_follow._wait) is (speedups is None), wait
_socket_follow.install()         # twice: harmless
assert _socketcommon.SocketMixin.__dict__["_wait"] is wait
print("ok")
""", cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class _PathHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def http_port():
    server, thread = _serve(_HTTPServer(("127.0.0.1", 0), _PathHandler))
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.timeout(120)
def test_requests_session_shared_by_greenlets_on_four_hubs(http_port):
    run_child("""
import os, requests
os.environ["no_proxy"] = "*"
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
url = "http://%s:%d" % ADDRESS

def get(tag):
    response = session.get(url + "/" + tag, timeout=10)
    return response.status_code, response.text

for rep in range(10):               # enough to catch a 1-in-10 problem
    for n in range(8):              # sequential: one connection passed hub to hub
        assert on(n % 4, get, "s%d.%d" % (rep, n)) == (200, "/s%d.%d" % (rep, n))
    futures = [pool.spawn_on(n % 4, get, "c%d.%d" % (rep, n)) for n in range(32)]
    assert [f.result(20) for f in futures] == [(200, "/c%d.%d" % (rep, n)) for n in range(32)]
pool.shutdown()
print("ok")
""", http_port, patch=PATCH_ALL, timeout=100)


def _need_redis() -> None:
    need_service("Redis", 6379)


@pytest.mark.timeout(120)
def test_redis_client_shared_by_greenlets_on_four_hubs():
    _need_redis()
    run_child("""
import redis
client = redis.Redis(host=ADDRESS[0], port=ADDRESS[1], socket_timeout=10)
prefix = "greenpool-test-socket-follow-%d:" % time.time_ns()

def roundtrip(key):
    client.set(prefix + key, key)
    return client.get(prefix + key).decode()

for rep in range(10):
    for n in range(8):
        assert on(n % 4, roundtrip, "s%d.%d" % (rep, n)) == "s%d.%d" % (rep, n)
    futures = [pool.spawn_on(n % 4, roundtrip, "c%d.%d" % (rep, n)) for n in range(32)]
    assert [f.result(20) for f in futures] == ["c%d.%d" % (rep, n) for n in range(32)]
client.delete(*client.keys(prefix + "*"))
client.close()
pool.shutdown()
print("ok")
""", 6379, patch=PATCH_ALL, timeout=100)



@pytest.mark.timeout(60)
def test_a_socket_of_a_destroyed_hub_moves_to_the_threads_new_hub(echo_port):
    """The main greenlet is its hub's parent, but a destroyed hub is not where to wait.

    Its socket moves to the thread's new hub, as the pure-Python wait always did
    (before the fix the C wait tried the dead loop: "operation on destroyed loop").
    """
    run_child("""
sock = socket.create_connection(ADDRESS)          # on the main thread's hub
old = gevent.get_hub()
old.destroy(destroy_loop=True)
new = gevent.get_hub()
assert new is not old and sock.hub is old
# The reader waits before anything is sent: a recv() of a reply already in (sent first,
# then read) would not wait, and only a wait moves the socket (seen once under load).
reader = gevent.spawn(sock.recv, 5)
gevent.sleep(0)
assert sock.hub is new  # the reader is waiting, on the new hub
sock.sendall(b"ping\\n")
with gevent.Timeout(10):
    assert reader.get() == b"ping\\n"
assert sock.hub is new
sock.close()
pool.shutdown()
print("ok")
""", echo_port)
