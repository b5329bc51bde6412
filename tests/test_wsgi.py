"""greenpool.wsgi: HTTP over real sockets, served by greenpool's HTTP core on every hub."""

from __future__ import annotations

import http.client
import io
import logging
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from gevent.socket import socket as GeventSocket
from hypothesis import given, settings
from hypothesis import strategies as st

import greenpool
from greenpool import wsgi
from greenpool.http.body import IncompleteBody, Input
from greenpool.http.parser import Limits, RequestParser
from tests.helpers import make_certificate, raw_request
from tests.test_server import client_context, recv_exactly

pytestmark = pytest.mark.timeout(30)


def hello(environ, start_response):
    body = b"hello from hub %d" % greenpool.current_hub().index
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo_body(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return iter([b"got ", body])  # no length: the response is chunked


def describe(environ, start_response):
    keys = ("wsgi.url_scheme", "wsgi.multithread", "SERVER_PORT", "PATH_INFO", "QUERY_STRING")
    body = repr({k: environ[k] for k in keys}).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def broken(environ, start_response):
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("application exploded")
    return hello(environ, start_response)


@pytest.fixture
def serve(pool):
    """greenpool.wsgi.serve on the test pool; servers are stopped afterwards."""
    started = []

    def start(app, **options):
        options.setdefault("pool", pool)
        server = wsgi.serve(app, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=1)


def http_get(address, path="/", **headers):
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_hello_is_served_on_several_hubs(serve):
    server = serve(hello)
    bodies = {http_get(server.address)[1] for _ in range(40)}
    assert len(bodies) > 1
    assert all(body.startswith(b"hello from hub ") for body in bodies)


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    server = serve(hello)
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        for _ in range(5):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read().startswith(b"hello")
            assert response.getheader("Connection") != "close"
    finally:
        conn.close()
    assert server.accepted == 1


def test_chunked_request_and_response_bodies(serve):
    server = serve(echo_body)
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request("POST", "/", body=iter([b"abc", b"def" * 1000]),
                     headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"got abc" + b"def" * 1000
        conn.request("POST", "/", body=b"second")  # and the connection is still usable
        assert conn.getresponse().read() == b"got second"
    finally:
        conn.close()


def test_malformed_request_gets_400_and_the_server_keeps_serving(serve):
    server = serve(hello)
    reply = raw_request(server.address, b"THIS IS NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert http_get(server.address)[0] == 200


def test_bad_chunk_size_gets_400(serve):
    server = serve(echo_body)
    reply = raw_request(server.address, b"POST / HTTP/1.1\r\nHost: x\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_request_line_over_the_limit_gets_414(serve):
    server = serve(hello)
    reply = raw_request(server.address, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414 ")
    assert http_get(server.address)[0] == 200


def test_too_many_headers_get_400_without_a_traceback(serve, capsys):
    server = serve(hello)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    reply = raw_request(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert "Traceback" not in capsys.readouterr().err


def test_application_error_gets_500_and_is_logged(serve, caplog):
    server = serve(broken)
    with caplog.at_level(logging.ERROR, logger="greenpool.wsgi"):
        assert http_get(server.address, "/fail")[0] == 500
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)
    assert http_get(server.address, "/ok")[0] == 200


def test_access_log_to_a_file_and_to_a_logger(serve, caplog):
    stream = io.StringIO()
    server = serve(hello, access_log=stream)
    http_get(server.address, "/logged")
    server.stop(timeout=5)
    assert '"GET /logged HTTP/1.1" 200' in stream.getvalue()

    logger = logging.getLogger("test.access")
    with caplog.at_level(logging.INFO, logger="test.access"):
        server = serve(hello, access_log=logger)
        http_get(server.address, "/via-logging")
        server.stop(timeout=5)
    assert any("/via-logging" in r.getMessage() for r in caplog.records)


def test_no_access_log_by_default(serve, capsys):
    server = serve(hello)
    http_get(server.address, "/quiet")
    server.stop(timeout=5)
    assert "/quiet" not in capsys.readouterr().err


def test_environ_says_multithread_port_and_scheme(serve):
    server = serve(describe)
    status, body = http_get(server.address, "/p?q=1")
    environ = eval(body)  # noqa: S307 - our own repr of plain values
    assert environ == {"wsgi.url_scheme": "http", "wsgi.multithread": True,
                       "SERVER_PORT": str(server.address[1]), "PATH_INFO": "/p",
                       "QUERY_STRING": "q=1"}


def test_https_round_trip(serve, tmp_path):
    cert, key = make_certificate(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = serve(describe, ssl_context=server_ctx)
    conn = http.client.HTTPSConnection("localhost", server.address[1], timeout=10,
                                       context=client_context(cert))
    try:
        for _ in range(2):
            conn.request("GET", "/secure")
            body = conn.getresponse().read()
            assert "'wsgi.url_scheme': 'https'" in body.decode()
    finally:
        conn.close()


def test_graceful_stop_closes_idle_keep_alive_and_finishes_a_request(serve):
    release = greenpool.Future()
    started = greenpool.Future()

    def slow(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set_result(None)
            release.result()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(slow)
    idle_conn = http.client.HTTPConnection(*server.address, timeout=10)
    idle_conn.request("GET", "/")
    assert idle_conn.getresponse().read() == b"ok"  # now idle, kept alive
    busy = socket.create_connection(server.address, timeout=10)
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    started.result(timeout=10)

    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 20})
    stopper.start()
    # The idle keep-alive connection is closed without waiting for the timeout...
    assert idle_conn.sock.recv(10) == b""
    idle_conn.close()
    assert stopper.is_alive()
    # ...while the request in progress is allowed to finish.
    release.set_result(None)
    reply = recv_exactly(busy, 200)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"ok")
    busy.close()
    stopper.join(10)
    assert server.stopped


@pytest.mark.parametrize("tls", [False, True])
def test_file_wrapper_uses_sendfile_on_plain_sockets_and_iterates_over_tls(
    serve, tmp_path, monkeypatch, tls
):
    data = os.urandom(200_000)
    (tmp_path / "blob").write_bytes(data)
    sendfiles = []
    real_sendfile = GeventSocket.sendfile

    def counting_sendfile(self, *args, **kwargs):
        sendfiles.append(args)
        return real_sendfile(self, *args, **kwargs)

    monkeypatch.setattr(GeventSocket, "sendfile", counting_sendfile)

    def files(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(tmp_path / "blob", "rb"))

    if tls:
        cert, key = make_certificate(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = serve(files, ssl_context=context)
        conn = http.client.HTTPSConnection("localhost", server.address[1], timeout=10,
                                           context=client_context(cert))
    else:
        server = serve(files)
        conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.read() == data
    finally:
        conn.close()
    assert len(sendfiles) == (0 if tls else 1)


def test_private_pool_with_hubs(tmp_path):
    server = wsgi.serve(hello, hubs=2)
    try:
        assert server.pool.size == 2
        assert http_get(server.address)[0] == 200
    finally:
        server.stop(timeout=5)
    assert not any(h.is_alive() for h in server.pool.hubs)


def test_bad_app_and_access_log_are_type_errors():
    with pytest.raises(TypeError, match="WSGI callable"):
        wsgi.serve(None)
    with pytest.raises(TypeError, match="access_log"):
        wsgi.serve(hello, access_log=42)


CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_body_limit_is_off_by_default(serve):
    server = serve(echo_body)
    body = b"x" * 300_000
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request("POST", "/", body=body)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"got " + body)
    finally:
        conn.close()


def test_content_length_over_max_body_size_gets_413_before_the_app_runs(serve, caplog):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return echo_body(environ, start_response)

    server = serve(app, max_body_size=10)
    with caplog.at_level(logging.WARNING, logger="greenpool.wsgi"):
        reply = raw_request(server.address, b"POST /big HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 11\r\n"
                            b"Expect: 100-continue\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply  # refused before the client sends the body
    assert calls == []
    assert "over max_body_size 10" in caplog.text
    # at the limit is fine, and so is the server afterwards
    reply = raw_request(server.address, b"POST /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Length: 10\r\n\r\n0123456789")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"0123456789" in reply
    assert calls == ["/ok"]


def test_chunked_body_over_max_body_size_gets_413_when_the_app_reads_it(serve):
    server = serve(echo_body, max_body_size=8)
    reply = raw_request(server.address, CHUNKED_POST
                        + chunked(b"1234", b"5678", b"9"))
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"got" not in reply
    # exactly at the limit: answered, and the connection stays usable (keep-alive)
    with socket.create_connection(server.address, timeout=10) as sock:
        for _ in range(2):
            sock.sendall(CHUNKED_POST
                         + chunked(b"1234", b"5678"))
            head = b""
            while b"0\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ") and b"got " in head and b"12345678" in head


def body_reader(raw: bytes, limit: int | None, read_size: int = 4096):
    """``(wsgi.input, stream)`` for the request ``raw``, read ``read_size`` bytes at a time."""
    stream = io.BytesIO(raw)
    parser = RequestParser(Limits(max_body_size=limit))
    parser.feed(stream.read(len(raw.partition(b"\r\n\r\n")[0]) + 4))
    request = parser.ready.pop(0)

    def pull():
        data = stream.read(read_size)
        if not data:
            raise IncompleteBody("end of stream")
        parser.feed(data)

    return Input(request, pull), stream


def test_chunked_body_over_the_limit_is_never_buffered_past_it():
    """An app reading wsgi.input whole gets BodyTooLarge after at most limit + 1 chunk."""
    limit = 1000
    head = CHUNKED_POST
    body, stream = body_reader(head + chunked(*[b"y" * 4096] * 64), limit)  # 256 KiB
    with pytest.raises(wsgi.BodyTooLarge, match="over 1000 bytes"):
        body.read()
    assert stream.tell() < len(head) + limit + 4096 + 64  # read into the chunk that crossed it
    body, _ = body_reader(head + chunked(b"a\n", b"bc\n"), 5, read_size=3)
    assert body.readline() == b"a\n"
    assert body.read(3) == b"bc\n"
    assert body.read() == b""


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    payload=st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"\n")),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    read_size=st.integers(1, 9),
    chunked_body=st.booleans(),
    ops=st.lists(st.tuples(st.sampled_from(["read", "readline"]), st.integers(-1, 12)),
                 max_size=40),
)
def test_wsgi_input_reads_like_a_file_whatever_the_chunks_and_the_reads(
    payload, cuts, read_size, chunked_body, ops
):
    bounds = sorted({0, len(payload), *(c for c in cuts if c <= len(payload))})
    pieces = [payload[i:j] for i, j in zip(bounds, bounds[1:], strict=False)]
    if chunked_body:
        raw = CHUNKED_POST + chunked(*pieces)
    else:
        raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
        raw += payload
    body, _ = body_reader(raw, None, read_size=read_size)
    reference = io.BytesIO(payload)
    for op, size in [*ops, ("read", -1)]:
        assert getattr(body, op)(size) == getattr(reference, op)(size), (op, size)
    assert body.read() == b""


def test_app_that_answered_without_reading_an_oversized_chunked_body_closes_the_connection(
    serve, caplog
):
    server = serve(hello, max_body_size=4)
    with caplog.at_level(logging.WARNING, logger="greenpool.wsgi"):
        reply = raw_request(server.address, CHUNKED_POST
                            + chunked(b"x" * 100) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # the app's own answer, once: the rest of the stream is not parsed as a second request
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.count(b"HTTP/1.1 ") == 1
    assert "request body over max_body_size 4; closing" in caplog.text
    assert "WSGI application failed" not in caplog.text


def test_app_that_swallows_body_too_large_cannot_let_the_rest_of_the_body_in_as_a_request(
    serve
):
    """No request smuggling: a body cut off at the limit always ends the connection."""
    served = []

    def catching(environ, start_response):
        served.append(environ["PATH_INFO"])
        try:
            environ["wsgi.input"].read()
        except wsgi.BodyTooLarge:  # a framework turning every error into a response
            start_response("400 Bad Request", [("Content-Length", "3")])
            return [b"no!"]
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(catching, max_body_size=8)
    hidden = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = raw_request(server.address, CHUNKED_POST
                        + chunked(b"123456789" + hidden))
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1
    assert served == ["/"]


def test_app_error_with_an_unread_oversized_body_is_still_a_logged_500(serve, caplog):
    def broken_without_reading(environ, start_response):
        raise RuntimeError("application exploded")

    server = serve(broken_without_reading, max_body_size=4)
    with caplog.at_level(logging.WARNING, logger="greenpool.wsgi"):
        reply = raw_request(server.address, CHUNKED_POST
                            + chunked(b"x" * 100))
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert "WSGI application failed" in caplog.text and "application exploded" in caplog.text


def test_a_client_uploading_megabytes_over_the_limit_reads_the_413_not_a_reset(serve):
    """The refused body is drained for a bounded time (lingering close), so the 413 arrives."""
    server = serve(echo_body, max_body_size=1024)
    for _ in range(3):
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        try:
            conn.request("POST", "/", body=b"z" * (8 * 2**20))  # no Expect: sent in full
            response = conn.getresponse()
            assert response.status == 413
            assert response.getheader("Connection") == "close"
        finally:
            conn.close()


def test_bad_max_body_size_is_refused_at_the_call():
    with pytest.raises(TypeError, match="max_body_size must be an int"):
        wsgi.serve(hello, max_body_size="1M")
    with pytest.raises(ValueError, match="max_body_size must be >= 0"):
        wsgi.serve(hello, max_body_size=-1)


def test_idle_timeout_answers_408_to_a_client_that_stalls_in_its_headers(serve, capsys):
    server = serve(hello, idle_timeout=0.3)
    with socket.create_connection(server.address, timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\n")  # and never finishes the request
        assert recv_exactly(slow, 1000).startswith(b"HTTP/1.1 408 ")
    assert "Traceback" not in capsys.readouterr().err


def test_idle_timeout_closes_an_idle_keep_alive_connection(serve):
    server = serve(hello, idle_timeout=0.3)
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read().startswith(b"hello")
    assert conn.sock.recv(100) == b""  # closed after 0.3 s without a request
    conn.close()


def test_idle_timeout_counts_from_each_wait_not_from_the_first(serve):
    """A busy keep-alive connection outlives its idle timeout many times over."""
    server = serve(hello, idle_timeout=0.3)
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        began = time.monotonic()
        while time.monotonic() - began < 1.2:  # four idle timeouts, never idle for one
            conn.request("GET", "/")
            assert conn.getresponse().read().startswith(b"hello")
    finally:
        conn.close()
    assert server.accepted == 1


def test_hello_example_serves_and_stops_on_sigterm():
    example = pathlib.Path(__file__).parent.parent / "examples" / "wsgi_hello.py"
    proc = subprocess.Popen(
        [sys.executable, str(example), "--bind", "127.0.0.1:0", "--hubs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        banner = proc.stdout.readline()  # "serving http://127.0.0.1:PORT/ on 2 hubs; ..."
        port = int(banner.split("http://127.0.0.1:")[1].split("/")[0])
        status, body = http_get(("127.0.0.1", port))
        assert status == 200 and body.startswith(b"Hello, world from hub ")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_limits_set_the_request_line_header_and_body_bounds(serve):
    server = serve(hello, limits=wsgi.Limits(request_line=100, header_count=3, header_field=50,
                                             max_body_size=5))
    ok = b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert raw_request(server.address, ok % (b"a" * 50)).startswith(b"HTTP/1.1 200 ")
    assert raw_request(server.address, ok % (b"a" * 100)).startswith(b"HTTP/1.1 414 ")
    four = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert raw_request(server.address, four).startswith(b"HTTP/1.1 400 ")
    wide = b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"v" * 60 + b"\r\n\r\n"
    assert raw_request(server.address, wide).startswith(b"HTTP/1.1 431 ")
    body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n123456"
    assert raw_request(server.address, body).startswith(b"HTTP/1.1 413 ")


def test_bad_limits_are_refused_at_the_call():
    with pytest.raises(TypeError, match="limits must be a greenpool.wsgi.Limits"):
        wsgi.serve(hello, limits={"request_line": 100})
    with pytest.raises(ValueError, match="Limits.header_count must be positive"):
        wsgi.Limits(header_count=0)
    with pytest.raises(TypeError, match="Limits.request_line must be an int"):
        wsgi.Limits(request_line=1.5)
