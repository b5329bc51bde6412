"""greenpool.run(server): gevent StreamServer/WSGIServer objects served on every hub.

Each test runs the server in a child process (signals, the main thread's hub)
and talks to it over loopback.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import make_certificate, run_python
from tests.test_server import client_context

pytestmark = pytest.mark.timeout(60)

STREAM_SERVER_FROM_SOCKET = """
    import socket, sys, greenpool
    from gevent.server import StreamServer

    def handle(sock, addr):
        data = sock.recv(100)
        sock.sendall(b"%d:" % greenpool.current_hub().index + data)

    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    print("run returned", greenpool.run(StreamServer(listener, handle), size=2), flush=True)
"""

WSGI_SERVER_FROM_ADDRESS = """
    import socket, sys, greenpool
    from gevent.pywsgi import WSGIServer

    def app(environ, start_response):
        body = b"hub %d" % greenpool.current_hub().index
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = WSGIServer(("127.0.0.1", port), app, log=None)
    print(port, flush=True)
    print("run returned", greenpool.run(server, size=4), flush=True)
"""


class Child:
    """A child process serving on a port it prints first."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.port = int(self.proc.stdout.readline())

    def connect(self) -> socket.socket:
        """Connect, retrying while the child's hubs come up (bounded by the test timeout)."""
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except ConnectionRefusedError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read()) from None
                time.sleep(0.01)

    def terminate(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def child():
    children = []

    def start(code: str) -> Child:
        c = Child(code)
        children.append(c)
        return c

    yield start
    for c in children:
        c.kill()


def test_stream_server_on_a_shared_socket_answers_then_stops_on_sigterm(child):
    server = child(STREAM_SERVER_FROM_SOCKET)
    replies = []
    for i in range(20):
        with server.connect() as sock:
            sock.sendall(b"req%d" % i)
            replies.append(sock.recv(100))
    assert all(r.split(b":")[1] == b"req%d" % i for i, r in enumerate(replies))
    assert {r.split(b":")[0] for r in replies} <= {b"0", b"1"}
    code, out, err = server.terminate()
    assert code == 0, err
    assert "run returned None" in out
    assert "Traceback" not in err


def test_wsgi_server_from_an_address_serves_on_several_hubs(child):
    server = child(WSGI_SERVER_FROM_ADDRESS)
    server.connect().close()
    hubs = set()
    for _ in range(40):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        hubs.add(response.read())
        conn.close()
    assert len(hubs) > 1, hubs
    code, out, err = server.terminate()
    assert code == 0, err
    assert "Traceback" not in err


def test_sigterm_with_an_open_keep_alive_connection_still_exits(child):
    server = child(WSGI_SERVER_FROM_ADDRESS)
    server.connect().close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read().startswith(b"hub ")
    code, out, err = server.terminate()  # the connection is still open
    conn.close()
    assert code == 0, err
    assert "run returned None" in out
    assert "Traceback" not in err


TLS_STREAM_SERVER = """
    import socket, ssl, greenpool
    from gevent.server import StreamServer

    def handle(sock, addr):
        sock.sendall(b"%d:" % greenpool.current_hub().index + sock.recv(100))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain({cert!r}, {key!r})
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    greenpool.run(StreamServer(listener, handle, ssl_context=context), size=2)
"""


def test_tls_stream_server_wraps_connections_on_each_hub(child, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = child(TLS_STREAM_SERVER.format(cert=cert, key=key))
    context = client_context(cert)
    for i in range(4):
        with context.wrap_socket(server.connect(), server_hostname="localhost") as tls:
            tls.sendall(b"secret%d" % i)
            assert tls.recv(100).endswith(b":secret%d" % i)
    code, out, err = server.terminate()
    assert code == 0, err
    assert "Traceback" not in err


def test_run_refuses_servers_it_cannot_serve():
    result = run_python("""
        import greenpool
        from gevent.server import DatagramServer, StreamServer
        try:
            greenpool.run(DatagramServer(("127.0.0.1", 0), lambda data, addr: None))
        except TypeError as exc:
            print("TypeError:", exc)
        server = StreamServer(("127.0.0.1", 0), lambda sock, addr: None)
        server.start()
        try:
            greenpool.run(server)
        except ValueError as exc:
            print("ValueError:", exc)
        server.stop()
    """)
    assert result.returncode == 0, result.stderr
    assert "TypeError: run(server) serves gevent StreamServer" in result.stdout
    assert "ValueError: run(server) needs a server that has not been started" in result.stdout
