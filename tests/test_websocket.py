"""WebSockets (and any ``Upgrade``) on greenpool's HTTP core: real libraries, real clients.

The app is tests/ws_app.py (flask-sock endpoints, raw upgrade endpoints);
the clients are websocket-client and websockets' sync client. Served by
``greenpool.wsgi.serve`` in this process (unpatched), by ``python -m greenpool
wsgi --patch`` and by ``gunicorn -k greenpool.gunicorn.Worker`` (patched), on
1 and 4 hubs.
"""

from __future__ import annotations

import http.client
import io
import pathlib
import signal
import socket
import ssl
import threading

import pytest
import websocket
from websockets.sync.client import connect as websockets_connect

from greenpool import wsgi
from greenpool.http.connection import SERVER_SOFTWARE
from greenpool.http.upgrade import UpgradedSocket
from tests import ws_app
from tests.helpers import make_certificate, raw_request, wait_until
from tests.procs import ServerProcess, get, python_cmd
from tests.test_server import client_context

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parent.parent
LISTENING = r"serving \S+ on https?://127\.0\.0\.1:(\d+) with \d+ hubs?"
HANDSHAKE = (b"GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture
def serve(make_pool):
    """``greenpool.wsgi.serve(ws_app.wsgi)`` on a pool of ``hubs``; stopped after the test."""
    started = []

    def start(hubs: int = 1, **options):
        options.setdefault("pool", make_pool(hubs, name="ws"))
        server = wsgi.serve(ws_app.wsgi, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=1)


def ws_url(address, path="/echo") -> str:
    return f"ws://{address[0]}:{address[1]}{path}"


def masked_frame(text: bytes) -> bytes:
    """One masked (client) text frame of fewer than 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + payload


def read_until(sock, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def refuses_connections(address) -> bool:
    """True once the listener is closed (a connect that times out is retried by the caller)."""
    try:
        socket.create_connection(address, timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def check_echo(address, rounds: int = 3) -> None:
    ws = websocket.create_connection(ws_url(address), timeout=10)
    try:
        for i in range(rounds):
            ws.send(f"hello {i}")
            assert ws.recv() == f"hello {i}"
        ws.send_binary(b"\x00\xff" * 1000)
        assert ws.recv() == b"\x00\xff" * 1000
    finally:
        ws.close()


def check_duplex(address, ticks: int = 50, echoes: int = 50) -> None:
    """The server sends from a second thread while it receives and echoes: all of both arrive."""
    ws = websocket.create_connection(ws_url(address, "/duplex"), timeout=10)
    try:
        ws.send(str(ticks))
        for i in range(echoes):
            ws.send(f"m{i}")
        got = [ws.recv() for _ in range(ticks + echoes)]
        ws.send("bye")
    finally:
        ws.close()
    assert [m for m in got if m.startswith("tick ")] == [f"tick {i}" for i in range(ticks)]
    assert [m for m in got if m.startswith("echo ")] == [f"echo m{i}" for i in range(echoes)]


# -- greenpool.wsgi.serve, in this process -------------------------------------------


@pytest.mark.parametrize("hubs", [1, 4])
def test_flask_sock_echo_and_full_duplex_with_websocket_client(serve, hubs):
    server = serve(hubs)
    for _ in range(hubs * 2):  # new connections: several hubs take part
        check_echo(server.address)
        check_duplex(server.address)
    assert get(server.address)[0] == 200  # and plain HTTP alongside


@pytest.mark.parametrize("hubs", [1, 4])
def test_flask_sock_echo_with_the_websockets_sync_client(serve, hubs):
    server = serve(hubs)
    with websockets_connect(ws_url(server.address), open_timeout=10, close_timeout=5) as ws:
        for i in range(5):
            ws.send(f"message {i}")
            assert ws.recv(timeout=10) == f"message {i}"


def test_wss_echo_and_a_frame_sent_with_the_handshake_over_tls(serve, tmp_path):
    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(hubs=2, ssl_context=context)
    url = f"wss://localhost:{server.address[1]}/echo"
    ws = websocket.create_connection(url, timeout=10, sslopt={"ca_certs": cert})
    try:
        ws.send("over tls")
        assert ws.recv() == "over tls"
    finally:
        ws.close()
    # The early frame is decrypted with the request: the app gets it first.
    raw = socket.create_connection(server.address, timeout=10)
    with client_context(cert).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(HANDSHAKE % b"/echo" + masked_frame(b"early and secret"))
        data = read_until(tls, b"early and secret")
    assert data.startswith(b"HTTP/1.1 101 ")
    assert data.endswith(b"\x81\x10early and secret")


def test_server_software_names_greenpool(serve):
    server = serve()
    assert SERVER_SOFTWARE.startswith("greenpool/")
    assert get(server.address, "/env") == (200, SERVER_SOFTWARE.encode())


def test_the_access_log_says_101_for_an_upgraded_connection(serve):
    log = io.StringIO()
    server = serve(access_log=log)
    check_echo(server.address, rounds=1)
    wait_until(lambda: '"GET /echo HTTP/1.1" 101 0 ' in log.getvalue(),
               what="the WebSocket's access log line")
    # Flask answered "dropped" (200) after the app switched protocols itself: not logged.
    raw_request(server.address, b"GET /raw-echo HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\n"
                b"Connection: Upgrade\r\n\r\nping")
    wait_until(lambda: '"GET /raw-echo HTTP/1.1" 101 0 ' in log.getvalue(),
               what="the raw upgrade's access log line")


def test_an_upgraded_connection_has_no_idle_timeout(serve):
    server = serve(idle_timeout=0.2)
    ws = websocket.create_connection(ws_url(server.address), timeout=10)
    try:
        ws.settimeout(1.0)  # five idle timeouts with nothing sent either way
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
        ws.settimeout(10)
        ws.send("still open")
        assert ws.recv() == "still open"
    finally:
        ws.close()
    # An HTTP connection still gets the idle timeout.
    with socket.create_connection(server.address, timeout=10) as sock:
        assert sock.recv(1) == b""


def test_requests_pipelined_before_an_upgrade_are_answered_first(serve):
    server = serve()
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n" + HANDSHAKE % b"/echo"
                     + masked_frame(b"after both"))
        data = read_until(sock, b"after both")
    assert data.startswith(b"HTTP/1.1 200 ")
    assert SERVER_SOFTWARE.encode() in data.split(b"HTTP/1.1 101 ")[0]
    assert data.endswith(b"\x81\x0aafter both")


def test_an_upgrade_in_an_http_1_0_request_is_not_an_upgrade(serve):
    server = serve()
    request = b"GET /raw-echo HTTP/1.0\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    answer = raw_request(server.address, request + b"GET / HTTP/1.0\r\n\r\n")
    # No socket in the environ: the app's KeyError is a 500, and nothing after the
    # request is parsed (llhttp stopped there).
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_websocket_frame_sent_with_the_handshake_reaches_the_app(serve):
    server = serve()
    with socket.create_connection(server.address, timeout=10) as sock:
        # The frame rides in the same segment as the request: the server has it
        # in its buffer when the app takes the connection.
        sock.sendall(HANDSHAKE % b"/echo" + masked_frame(b"early bird"))
        data = read_until(sock, b"early bird")
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert frames == b"\x81\x0aearly bird"  # the echo, unmasked


@pytest.mark.parametrize("path", [b"/raw-echo", b"/raw-101"])
def test_bytes_pipelined_after_an_upgrade_belong_to_the_new_protocol(serve, path):
    server = serve()
    request = (b"GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
               % path)
    # What follows looks like an HTTP request; it is the new protocol's data.
    after = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
    answer = raw_request(server.address, request + after)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Connection: Upgrade" in head
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert rest == b"got:" + after  # echoed, not answered as a request; nothing after it


def test_an_upgrade_request_with_a_body_gets_400_and_never_reaches_the_app(serve):
    server = serve()
    for framing in (b"Content-Length: 5\r\n\r\nhello",
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        request = HANDSHAKE.replace(b"\r\n\r\n", b"\r\n" + framing) % b"/echo"
        answer = raw_request(server.address, request)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"101" not in answer


def test_a_refused_upgrade_gets_its_4xx_then_the_connection_closes(serve):
    server = serve()
    # The app answers 403 without touching the socket; the bytes behind the
    # request were meant for the new protocol and are not served as HTTP.
    pipelined = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    answer = raw_request(server.address, HANDSHAKE % b"/refuse" + pipelined)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert answer.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in answer
    # A websocket route asked without the upgrade: werkzeug's 400, nothing upgraded.
    status, _ = get(server.address, "/echo")
    assert status == 400
    # Upgrade without "Connection: upgrade" is no upgrade: an ordinary request.
    answer = raw_request(server.address, b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                         b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    # Nor is "Connection: upgrade" without Upgrade: the connection stays HTTP's.
    answer = raw_request(server.address, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n\r\n"
                         b"GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.endswith(SERVER_SOFTWARE.encode())


@pytest.mark.parametrize(("change", "status"), [
    ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
    ((b"Sec-WebSocket-Version: 13\r\n", b""), 400),
    ((b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400),
    ((b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), 400),  # 5 bytes, not 16
    ((b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64!"), 400),
    ((b"GET ", b"PUT "), 400),
])
def test_a_malformed_websocket_handshake_gets_a_4xx_before_the_app_runs(serve, caplog, change,
                                                                       status):
    server = serve()
    bad = (HANDSHAKE % b"/echo").replace(*change)
    answer = raw_request(server.address, bad)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in answer
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer  # RFC 6455 4.2.2
        assert b"\r\nUpgrade: websocket\r\n" in answer  # RFC 9110 15.5.22
    # flask-sock would have raised (a 500 and an ERROR record): it never ran.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_an_app_failure_after_taking_the_connection_is_logged_a_peer_gone_is_not(
    make_pool, caplog
):
    done = threading.Event()

    def app(environ, start_response):
        sock = environ["greenpool.socket"]
        try:
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            if environ["PATH_INFO"] == "/bug":
                open("/nonexistent/greenpool-config.json")  # FileNotFoundError: an OSError
            raise ConnectionResetError("the peer went away")
        finally:
            done.set()

    server = wsgi.serve(app, pool=make_pool(1, name="fail"))
    try:
        for path in ("/gone", "/bug"):
            done.clear()
            answer = raw_request(server.address, f"GET {path} HTTP/1.1\r\nHost: t\r\n"
                                 "Upgrade: x\r\nConnection: Upgrade\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 101 "), answer
            assert done.wait(10)
    finally:
        server.stop(timeout=1)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.exc_info[0] for r in errors] == [FileNotFoundError], errors


def test_a_client_that_vanishes_mid_frame_ends_only_its_own_connection(serve):
    server = serve(hubs=1)
    other = websocket.create_connection(ws_url(server.address), timeout=10)
    try:
        sock = socket.create_connection(server.address, timeout=10)
        sock.sendall(HANDSHAKE % b"/echo")
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        sock.sendall(masked_frame(b"half of this frame")[:8])
        sock.close()
        wait_until(lambda: server.connections == 1, what="the vanished client's connection to end")
        other.send("still here")
        assert other.recv() == "still here"
    finally:
        other.close()


def test_graceful_stop_gives_an_open_websocket_the_timeout_then_closes_it(serve):
    server = serve(hubs=2)
    ws = websocket.create_connection(ws_url(server.address), timeout=10)
    stopping = threading.Thread(target=server.stop, args=(3.0,))
    stopping.start()
    try:
        # Stopping: no new connections, but the open WebSocket still works.
        wait_until(lambda: refuses_connections(server.address), what="the stop to begin")
        ws.send("during the stop")
        assert ws.recv() == "during the stop"
        stopping.join(30)
        assert not stopping.is_alive()
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.send("after")
            ws.recv()
    finally:
        ws.close()


def test_an_open_websocket_counts_toward_max_connections(serve):
    server = serve(hubs=1, max_connections=2)
    first = websocket.create_connection(ws_url(server.address), timeout=10)
    second = websocket.create_connection(ws_url(server.address), timeout=10)
    try:
        with socket.create_connection(server.address, timeout=10) as third:
            third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            third.settimeout(0.5)
            with pytest.raises(TimeoutError):  # not accepted while two WebSockets are open
                third.recv(1)
            assert server.connections == 2
            first.close()
            third.settimeout(10)
            assert read_until(third, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    finally:
        second.close()


def test_open_websockets_leave_the_app_thread_bound_so_http_is_still_answered(serve):
    # 4 app threads, 100 WebSockets held in the app: none holds an app thread,
    # so requests still find a free one (with a 2 s wait for one, a held slot
    # would turn them into 503s).
    server = serve(hubs=2, app_threads=4, app_wait_timeout=2.0)
    clients = []
    try:
        for _ in range(100):
            ws = websocket.create_connection(ws_url(server.address, "/hold"), timeout=10)
            assert ws.recv() == "open"
            clients.append(ws)
        for _ in range(20):
            assert get(server.address)[0] == 200
        check_echo(server.address)
    finally:
        for ws in clients:
            ws.send("bye")
            ws.close()
    wait_until(lambda: server.connections == 0, what="the held WebSockets to end")
    assert get(server.address)[0] == 200


def test_a_handshake_does_not_wait_for_an_app_thread(serve):
    """Upgrade requests run on their connection's greenlet, never on one of the app threads."""
    server = serve(hubs=1, app_threads=1, app_wait_timeout=0.5)
    ws_app.BUSY_STARTED.clear()
    ws_app.RELEASE_BUSY.clear()
    answers: list = []
    holder = threading.Thread(target=lambda: answers.append(get(server.address, "/busy")))
    holder.start()
    try:
        assert ws_app.BUSY_STARTED.wait(10)
        assert get(server.address)[0] == 503  # the only app thread is busy...
        check_echo(server.address)  # ...and a WebSocket is served all the same
        # Another upgrade (curl --http2 sends this on every request) is bounded as any request.
        h2c = raw_request(server.address, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                          b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__"
                          b"\r\n\r\n")
        assert h2c.startswith(b"HTTP/1.1 503 "), h2c[:100]
    finally:
        ws_app.RELEASE_BUSY.set()
        holder.join(10)
    assert answers == [(200, b"done")]


def test_handshakes_to_a_route_that_never_takes_the_connection_are_bounded(serve):
    """Handshake headers sent to an HTTP route run its app on the connection's greenlet,
    but no more of them at once than the hub's app threads: the next one waits, then 503.
    (Flask refuses a WebSocket request to a route that is not one itself: a 400 before
    the view runs; a plain WSGI app, Django's say, runs the view.)"""
    server = serve(hubs=1, app_threads=1, app_wait_timeout=0.3)
    ws_app.BUSY_STARTED.clear()
    ws_app.RELEASE_BUSY.clear()
    answers: list = []
    holder = threading.Thread(target=lambda: answers.append(raw_request(
        server.address, HANDSHAKE % b"/plain-busy")))
    holder.start()
    try:
        assert ws_app.BUSY_STARTED.wait(10)  # a handshake in the app, its connection not taken
        second = raw_request(server.address, HANDSHAKE % b"/plain-busy")
        assert second.startswith(b"HTTP/1.1 503 "), second[:100]
        assert b"handshake slot" in second
        assert get(server.address)[0] == 200  # the app thread itself is free
    finally:
        ws_app.RELEASE_BUSY.set()
        holder.join(10)
    assert answers and answers[0].startswith(b"HTTP/1.1 200 "), answers
    # Once answered, its slot is free again; a real WebSocket takes its connection and
    # leaves the bound at once, so a held one never blocks the next handshake.
    ws = websocket.create_connection(ws_url(server.address, "/hold"), timeout=10)
    try:
        assert ws.recv() == "open"
        check_echo(server.address)
    finally:
        ws.send("bye")
        ws.close()


def test_reading_an_attribute_of_the_upgraded_socket_does_not_take_the_connection():
    """A middleware's getpeername() leaves the app's own answer (a 403) to be sent."""
    left, right = socket.socketpair()
    taken = []
    try:
        upgraded = UpgradedSocket(left, b"", lambda: taken.append(True))
        assert upgraded.getsockname() == left.getsockname() and upgraded.family == left.family
        assert not upgraded.taken and taken == []
        upgraded.settimeout(5)  # using the connection takes it
        assert upgraded.taken and taken == [True]
    finally:
        left.close()
        right.close()


def test_upgraded_socket_returns_pending_bytes_first_and_marks_the_take():
    left, right = socket.socketpair()
    taken = []
    try:
        upgraded = UpgradedSocket(left, b"abcdef", lambda: taken.append(True))
        assert not upgraded.taken
        assert upgraded.pending() == 6
        assert upgraded.recv(2, socket.MSG_PEEK) == b"ab"
        assert upgraded.recv(2) == b"ab"
        buffer = bytearray(10)
        assert upgraded.recv_into(buffer, 3) == 3 and buffer[:3] == b"cde"
        right.sendall(b"ghi\nrest")
        reader = upgraded.makefile("rb")
        assert reader.readline() == b"fghi\n"
        reader.close()
        upgraded.sendall(b"back")
        assert right.recv(4) == b"back"
        assert taken == [True]  # called once, at the first use
        upgraded.close()
        assert left.fileno() == -1
    finally:
        left.close()
        right.close()


# -- the CLI and the gunicorn worker, as subprocesses ---------------------------------


def start_cli(*options: str, app: str = "tests.ws_app:wsgi",
              ) -> tuple[ServerProcess, tuple[str, int]]:
    """``python -m greenpool wsgi --patch`` serving ``app`` on a free port."""
    server = ServerProcess(python_cmd("-m", "greenpool", "wsgi", "--patch", "-b", "127.0.0.1:0",
                                      *options, app), cwd=ROOT)
    try:
        port = int(server.wait_for(LISTENING, timeout=30).group(1))
    except BaseException:
        server.__exit__(None, None, None)
        raise
    return server, ("127.0.0.1", port)


def start_gunicorn(*options: str, app: str = "tests.ws_app:wsgi", env: dict | None = None,
                   ) -> tuple[ServerProcess, tuple[str, int]]:
    """gunicorn with greenpool's worker serving ``app`` on a free port."""
    server = ServerProcess(python_cmd(
        "-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "-b", "127.0.0.1:0",
        "--no-control-socket", *options, app), cwd=ROOT, env=env)
    try:
        port = int(server.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", timeout=30).group(1))
        server.wait_for(r"Booting worker with pid", timeout=30)
    except BaseException:
        server.__exit__(None, None, None)
        raise
    return server, ("127.0.0.1", port)


def wait_answering(address, path: str = "/") -> None:
    """Wait (bounded) until the server answers 200 on ``path``: gunicorn binds before the
    worker has loaded the app."""

    def answers():
        try:
            return get(address, path)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    wait_until(answers, timeout=30, interval=0.1, what="the server's first answer")


def check_hubs(address, hubs: int) -> None:
    """Echo and full duplex on new connections until every hub served one (bounded)."""
    seen: set[str] = set()
    for _ in range(hubs * 20):
        check_echo(address)
        check_duplex(address)
        seen.add(get(address)[1].split()[1].decode())
        if len(seen) == hubs:
            break
    assert len(seen) > 1 or hubs == 1, f"every connection went to hub {seen}"


@pytest.mark.parametrize("hubs", [1, 4])
def test_cli_serves_flask_sock_echo_and_full_duplex(hubs):
    server, address = start_cli("--hubs", str(hubs))
    with server:
        check_hubs(address, hubs)
        assert get(address, "/env") == (200, SERVER_SOFTWARE.encode())
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output


@pytest.mark.parametrize("hubs", [1, 4])
def test_gunicorn_worker_serves_flask_sock_echo_and_full_duplex(hubs):
    server, address = start_gunicorn("--threads", str(hubs), "--access-logfile", "-")
    with server:
        wait_answering(address)
        check_hubs(address, hubs)
        server.wait_for(r'"GET /echo HTTP/1.1" 101 ')  # gunicorn's access log
        status, body = get(address, "/env")
        assert status == 200
        assert body.startswith(SERVER_SOFTWARE.encode() + b" gunicorn/")
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output


def test_the_websocket_echo_example_runs_under_the_cli():
    server, address = start_cli("--hubs", "2", app="examples.websocket_echo:app")
    with server:
        check_echo(address)
        assert get(address)[0] == 200
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output


def sigterm_with_an_open_websocket(server: ServerProcess, address, stopping: str) -> None:
    """SIGTERM while a WebSocket is open: it is still served (the graceful timeout, once the
    log says ``stopping``), then the server exits 0 and the connection is closed."""
    ws = websocket.create_connection(ws_url(address), timeout=10)
    try:
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(stopping)
        ws.send("during the stop")  # still served within the graceful timeout
        assert ws.recv() == "during the stop"
        assert server.wait_exit(timeout=20) == 0
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.send("after")
            ws.recv()
    finally:
        ws.close()


def test_cli_sigterm_gives_an_open_websocket_the_graceful_timeout_then_exits(tmp_path):
    server, address = start_cli("--hubs", "2", "--graceful-timeout", "2")
    with server:
        sigterm_with_an_open_websocket(server, address, r"stopping \(up to 2\.0s")


def test_gunicorn_sigterm_gives_an_open_websocket_the_graceful_timeout_then_exits():
    server, address = start_gunicorn("--threads", "2", "--graceful-timeout", "2")
    with server:
        wait_answering(address)
        sigterm_with_an_open_websocket(server, address, r"Handling signal: term")


def test_gunicorn_worker_connections_count_open_websockets():
    server, address = start_gunicorn("--threads", "1", "--worker-connections", "2")
    with server:
        wait_answering(address)
        first = websocket.create_connection(ws_url(address), timeout=10)
        second = websocket.create_connection(ws_url(address), timeout=10)
        try:
            with socket.create_connection(address, timeout=10) as third:
                third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                third.settimeout(0.5)
                with pytest.raises(TimeoutError):  # waits for a slot of the worker's pool
                    third.recv(1)
                first.close()
                third.settimeout(10)
                assert read_until(third, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        finally:
            second.close()


def hold_100_websockets_and_get(address) -> None:
    """100 WebSockets held open in the app, then 20 HTTP requests: all answered."""
    clients = []
    try:
        for _ in range(100):
            ws = websocket.create_connection(ws_url(address, "/hold"), timeout=10)
            assert ws.recv() == "open"
            clients.append(ws)
        for _ in range(20):
            assert get(address)[0] == 200
    finally:
        for ws in clients:
            ws.close()


def test_gunicorn_app_threads_are_not_held_by_100_open_websockets():
    server, address = start_gunicorn("--threads", "2", env={"GREENPOOL_APP_THREADS": "4",
                                                            "GREENPOOL_APP_WAIT_TIMEOUT": "2"})
    with server:
        wait_answering(address)
        hold_100_websockets_and_get(address)
        assert server.stop(signal.SIGTERM) == 0
    assert "503" not in server.output


def test_cli_app_threads_are_not_held_by_100_open_websockets():
    server, address = start_cli("--hubs", "2", "--app-threads", "4", "--app-wait-timeout", "2")
    with server:
        hold_100_websockets_and_get(address)
        assert server.stop(signal.SIGTERM) == 0
    assert "503" not in server.output
