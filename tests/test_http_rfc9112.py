"""greenpool.wsgi against RFC 9112 on raw bytes: framing, smuggling, limits, PEP 3333 details.

Every refusal is checked the way a smuggling attempt would exploit it: a
second, valid request is sent right behind the bad one, and must never reach
the app (the server answers once, says ``Connection: close`` and closes).
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

import greenpool
from greenpool import wsgi
from tests.helpers import raw_request, shut_down

pytestmark = pytest.mark.timeout(30)

HOST = b"Host: x\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


class Recorder:
    """A WSGI app that records what it was given and answers according to the path."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.closed = 0

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read()
        keys = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI",
                "SERVER_PROTOCOL", "CONTENT_LENGTH", "CONTENT_TYPE")
        seen = {k: environ.get(k) for k in keys}
        seen["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        seen["body"] = body
        self.seen.append(seen)
        path = environ["PATH_INFO"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"one ", b"", b"two"])
        if path == "/empty":
            start_response("204 No Content", [])
            return [b"never sent"]
        if path == "/notmod":
            start_response("304 Not Modified", [("ETag", '"x"')])
            return [b"never sent"]
        if path == "/badheader":
            start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: evil=1")])
            return [b"no"]
        if path == "/unicode":
            start_response("200 OK", [("X-Name", "\u2603")])
            return [b"no"]
        if path == "/toolong":
            start_response("200 OK", [("Content-Length", "3")])
            return [b"abc", b"HTTP/1.1 200 OK\r\n\r\nforged"]
        if path == "/write":
            write = start_response("200 OK", [("Content-Length", "11")])
            write(b"hello ")
            return [b"world"]
        if path == "/exc_info":
            start_response("200 OK", [("Content-Length", "2")])
            try:
                raise RuntimeError("changed my mind")
            except RuntimeError:
                start_response("503 Service Unavailable", [("Content-Length", "4")], sys.exc_info())
            return [b"busy"]
        if path == "/closing":
            return Closing(self, start_response)
        answer = b"ok " + body
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]


class Closing:
    """A response iterable whose close() the server must call."""

    def __init__(self, recorder: Recorder, start_response) -> None:
        self.recorder = recorder
        start_response("200 OK", [("Content-Length", "6")])

    def __iter__(self):
        yield b"closed"

    def close(self) -> None:
        self.recorder.closed += 1


@pytest.fixture(scope="module")
def pool():
    p = greenpool.Pool(1, name="rfc9112")
    yield p
    shut_down(p)


@pytest.fixture
def app():
    return Recorder()


@pytest.fixture
def server(pool, app):
    srv = wsgi.serve(app, pool=pool, idle_timeout=5)
    yield srv
    srv.stop(timeout=1)


def parse_responses(data: bytes, head: bool = False) -> list[tuple[int, dict, bytes]]:
    """Split a byte stream into (status, headers, body) responses (CL, chunked or to EOF)."""
    responses = []
    while data:
        top, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head {top[:200]!r}"
        lines = top.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.strip().decode("latin-1")
        if status < 200:
            responses.append((status, headers, b""))
            continue
        if head or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            size = int(headers["content-length"])
            body, data = data[:size], data[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                chunk, data = data[:size], data[size + 2:]
                if size == 0:
                    break
                body += chunk
        else:
            body, data = data, b""
        responses.append((status, headers, body))
    return responses


def exchange(server, raw: bytes, head: bool = False):
    return parse_responses(raw_request(server.address, raw), head=head)


# -- refusals: the status the RFC names, one response, a closed connection ------------

REFUSED = {
    "Content-Length then Transfer-Encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n", {400}),
    "Transfer-Encoding then Content-Length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n", {400}),
    "duplicate Content-Length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", {400}),
    "differing Content-Length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", {400}),
    "Content-Length +5": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", {400}),
    "Content-Length -5": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", {400}),
    "Content-Length 0x5": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
                           {400}),
    "Content-Length list": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
                            {400}),
    "whitespace before the colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", {400}),
    "tab before the colon": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n", {400}),
    "NUL in a value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    "CR in a value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", {400}),
    "bare LF line ends": (b"GET / HTTP/1.1\nHost: x\n\n", {400}),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {400}),
    "space before the first header": (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", {400}),
    "xchunked": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                 {501}),
    "chunked, identity": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        {400, 501}),
    "chunked\\x0b": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n", {400}),
    "gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}),
    "identity": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nabc", {501}),
    "Transfer-Encoding twice": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n", {400, 501}),
    "Transfer-Encoding in HTTP/1.0": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    "bad chunk size": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        {400}),
    "chunk without its CRLF": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        {400}),
    "chunk size with a space": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        {400}),
    "HTTP/1.1 without Host": (b"GET / HTTP/1.1\r\n\r\n", {400}),
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "two Host headers in HTTP/1.0": (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "Transfer-Encoding twice, the first with a tab": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400, 501}),
    "HTTP/2.0": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", {505}),
    "HTTP/1.2": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", {400, 505}),
    "lower-case version": (b"GET / http/1.1\r\nHost: x\r\n\r\n", {400}),
    "space in the target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "control byte in the target": (b"GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "unknown method": (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "CONNECT": (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", {501}),
    "Upgrade with a body": (
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
        b"Content-Length: 5\r\n\r\nhello", {400}),
    "request line over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {414}),
    "header block over 64 KiB": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 70_000 + b"\r\n\r\n", {431}),
    "more than 100 headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120))
        + b"\r\n", {400}),
    "Content-Length over 2**64": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % 10**21, {400, 413}),
}


@pytest.mark.parametrize("raw, statuses", REFUSED.values(), ids=REFUSED.keys())
def test_refused_request_gets_its_status_and_a_closed_connection_and_nothing_behind_it_runs(
    server, app, raw, statuses
):
    responses = exchange(server, raw + SMUGGLED)  # raw_request reads until the server closes
    assert len(responses) == 1, responses
    status, headers, _body = responses[0]
    assert status in statuses
    assert headers["connection"] == "close"
    assert app.seen == []


def test_a_refusal_after_a_good_pipelined_request_answers_the_good_one_first(server, app):
    raw = (b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
           + SMUGGLED)
    responses = exchange(server, raw)
    assert [r[0] for r in responses] == [200, 400]
    assert [s["PATH_INFO"] for s in app.seen] == ["/first"]


# -- what valid requests get --------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_with_their_bodies(server, app):
    raw = (b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
           b"POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
           b"GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = exchange(server, raw)
    assert [(r[0], r[2]) for r in responses] == [
        (200, b"ok "), (200, b"ok hello"), (200, b"ok abcde"), (200, b"ok ")]
    assert [s["PATH_INFO"] for s in app.seen] == ["/1", "/2", "/3", "/4"]
    assert app.seen[2]["CONTENT_LENGTH"] is None
    assert "HTTP_X_TRAILER" not in app.seen[2]["headers"]  # trailers are not request headers
    assert responses[-1][1]["connection"] == "close"


def test_100_continue_is_sent_when_the_app_reads_the_body(server, app):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        data = b""
        while not data.endswith(b"ok data"):
            data += sock.recv(1000)
    assert parse_responses(data)[0][0] == 200


def test_no_100_continue_when_the_app_answers_without_the_body(pool):
    def no_read(environ, start_response):
        start_response("403 Forbidden", [("Content-Length", "2")])
        return [b"no"]

    srv = wsgi.serve(no_read, pool=pool)
    try:
        reply = raw_request(srv.address, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                            b"Expect: 100-continue\r\n\r\n")
    finally:
        srv.stop(timeout=1)
    assert b"100 Continue" not in reply
    # the body never came: the connection is closed rather than read as the next request
    [(status, headers, body)] = parse_responses(reply)
    assert (status, body) == (403, b"no")


def test_no_100_continue_for_http_1_0(server, app):
    reply = raw_request(server.address, b"PUT / HTTP/1.0\r\nContent-Length: 2\r\n"
                        b"Expect: 100-continue\r\n\r\nhi")
    assert b"100 Continue" not in reply
    assert parse_responses(reply)[0][2] == b"ok hi"


def test_refusals_and_answers_carry_a_date(server):
    [(status, headers, _)] = exchange(server, b"GET / HTTP/1.1\r\n\r\n")
    assert status == 400 and headers["date"].endswith(" GMT")
    [(status, headers, _)] = exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["date"].endswith(" GMT")


def test_head_gets_the_length_but_no_body_and_the_connection_stays_framed(server):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head1, rest = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 3" in head1
    head2, rest = rest.split(b"\r\n\r\n", 1)
    assert head2.startswith(b"HTTP/1.1 200 ") and b"one" not in head2
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\nok ")


def test_http_1_0_closes_unless_keep_alive_and_streams_to_the_close(server, app):
    [(status, headers, body)] = exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert (status, body, headers["connection"]) == (200, b"ok ", "close")
    assert app.seen[0]["SERVER_PROTOCOL"] == "HTTP/1.0"
    reply = exchange(server, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                             b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert [r[1].get("connection") for r in reply] == ["keep-alive", "close"]
    assert "transfer-encoding" not in reply[1][1] and reply[1][2] == b"one two"


def test_connection_close_from_the_client_is_honoured(server):
    [(status, headers, _)] = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                              b"Connection: close\r\n\r\n" + SMUGGLED)
    assert headers["connection"] == "close"


def test_absolute_form_target_gives_the_path_alone(server, app):
    exchange(server, b"GET http://example.com:8080/a%20b?x=1&y=%41 HTTP/1.1\r\n"
                     b"Host: example.com:8080\r\nConnection: close\r\n\r\n")
    seen = app.seen[0]
    assert seen["PATH_INFO"] == "/a b"
    assert seen["QUERY_STRING"] == "x=1&y=%41"
    assert seen["RAW_URI"] == seen["REQUEST_URI"] == "http://example.com:8080/a%20b?x=1&y=%41"
    assert seen["headers"]["HTTP_HOST"] == "example.com:8080"  # the client's header, as sent
    exchange(server, b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n"
                     b"Connection: close\r\n\r\n")
    assert app.seen[1]["PATH_INFO"] == "/"


def test_path_is_percent_decoded_as_latin_1_and_the_query_is_not(server, app):
    exchange(server, b"GET /caf%C3%A9/a%2Fb?q=%C3%A9 HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
    seen = app.seen[0]
    assert seen["PATH_INFO"] == "/caf\xc3\xa9/a/b"  # PEP 3333: bytes as latin-1
    assert seen["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b"
    assert seen["QUERY_STRING"] == "q=%C3%A9"


def test_header_values_repeated_headers_and_underscores(server, app):
    exchange(server, b"POST /h HTTP/1.1\r\nHost: x\r\nX-Multi: 1\r\nX-Multi: 2  \r\n"
                     b"X_Forwarded_For: evil\r\nX-Forwarded-For: proxy\r\nContent-Type: text/x\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    seen = app.seen[0]
    assert seen["headers"]["HTTP_X_MULTI"] == "1, 2"  # combined, trailing whitespace dropped
    assert seen["headers"]["HTTP_X_FORWARDED_FOR"] == "proxy"  # X_Forwarded_For is dropped
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == ("text/x", "2")
    assert "HTTP_CONTENT_TYPE" not in seen["headers"]
    assert seen["body"] == b"hi"


def test_responses_without_length_are_chunked_and_204_304_have_no_body(server):
    [(status, headers, body)] = exchange(server, b"GET /stream HTTP/1.1\r\nHost: x\r\n"
                                                 b"Connection: close\r\n\r\n")
    assert headers["transfer-encoding"] == "chunked" and body == b"one two"
    assert "date" in headers
    reply = raw_request(server.address, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /notmod HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"never sent" not in reply
    assert [r[0] for r in parse_responses(reply)] == [204, 304]


@pytest.mark.parametrize("path", ["/badheader", "/unicode"])
def test_a_response_header_with_cr_lf_or_beyond_latin_1_is_a_500_and_never_sent(server, path):
    reply = raw_request(server.address, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in reply and b"X-" not in reply


def test_a_body_longer_than_its_content_length_is_cut_off_and_the_connection_closed(server):
    reply = raw_request(server.address, b"GET /toolong HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED)
    assert reply.endswith(b"\r\n\r\nabc")
    assert b"forged" not in reply and reply.count(b"HTTP/1.1 ") == 1


def test_write_callable_exc_info_and_close(server, app):
    reply = raw_request(server.address, b"GET /write HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /exc_info HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /closing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [(r[0], r[2]) for r in parse_responses(reply)] == [
        (200, b"hello world"), (503, b"busy"), (200, b"closed")]
    assert app.closed == 1


def test_file_wrapper_is_sent_whole_over_plain_sockets(pool, tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "blob").write_bytes(data)

    def files(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(tmp_path / "blob", "rb"), 8192)

    srv = wsgi.serve(files, pool=pool)
    try:
        reply = raw_request(srv.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        srv.stop(timeout=1)
    first, second = reply.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 300000" in first
    assert second[:300_000] == data
    assert second[300_000:].startswith(b"HTTP/1.1 200 ")
    assert second[300_000:].endswith(b"\r\n\r\n")  # HEAD: no body


def test_wsgi_input_readline_readlines_and_iteration_on_a_chunked_body(pool):
    got = []

    def lines(environ, start_response):
        body = environ["wsgi.input"]
        got.append(body.readline())
        got.append(body.readline(2))
        got.append(body.readlines())
        got.append(list(body))
        start_response("200 OK", [("Content-Length", "0")])
        return []

    srv = wsgi.serve(lines, pool=pool)
    try:
        raw_request(srv.address, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: close\r\n\r\n4\r\none\n\r\n6\r\ntwo\nth\r\n4\r\nree\n\r\n"
                    b"0\r\n\r\n")
    finally:
        srv.stop(timeout=1)
    assert got == [b"one\n", b"tw", [b"o\n", b"three\n"], []]


def test_environ_is_complete(server, app):
    exchange(server, b"GET /p?q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    seen = app.seen[0]
    assert (seen["REQUEST_METHOD"], seen["PATH_INFO"], seen["QUERY_STRING"]) == ("GET", "/p", "q")

    captured = {}

    def env_app(environ, start_response):
        captured.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    srv = wsgi.serve(env_app, pool=server.pool)
    try:
        raw_request(srv.address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        srv.stop(timeout=1)
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.version",
                "wsgi.url_scheme", "wsgi.input", "wsgi.errors", "wsgi.multithread",
                "wsgi.multiprocess", "wsgi.run_once", "wsgi.file_wrapper", "RAW_URI"):
        assert key in captured, key
    assert captured["REMOTE_ADDR"] == "127.0.0.1"
    assert captured["SERVER_PORT"] == str(srv.address[1])
    assert captured["wsgi.version"] == (1, 0) and captured["SCRIPT_NAME"] == ""


def test_upgrade_request_without_a_body_is_served_then_closed(server, app):
    # The app does not take the connection: its answer, then the close; what
    # followed the request was the new protocol's, never parsed as HTTP.
    [(status, headers, _)] = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\n"
                                              b"Connection: upgrade\r\n\r\n" + SMUGGLED)
    assert status == 200 and headers["connection"] == "close"
    assert [s["PATH_INFO"] for s in app.seen] == ["/"]


def test_websocket_upgrade_without_its_key_and_version_is_refused_before_the_app(server, app):
    [(status, headers, _)] = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                              b"Connection: upgrade\r\n\r\n" + SMUGGLED)
    assert status == 400 and headers["connection"] == "close"
    assert app.seen == []


def test_a_header_that_never_ends_is_refused_once_past_the_limits(server, app):
    """A value sent without its line end is bounded too, not buffered until the timeout."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        reply = b""
        try:
            for _ in range(64):  # 64 x 16 KiB, far past the 64 KiB header block
                sock.sendall(b"v" * 16384)
        except OSError:  # the server refused and closed while we were still sending
            pass
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert app.seen == []
