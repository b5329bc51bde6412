"""What an idle keep-alive connection of greenpool's HTTP core keeps (issue 11: ~10 KiB each).

Between requests a connection holds no request (head, headers, body list)
and no parser: parsers in the state between two messages are lent to the
next connection that reads, so 10,000 idle connections do not hold 10,000
parsers, requests and queues.
"""

from __future__ import annotations

import gc
import socket
import threading

import pytest

import greenpool
from greenpool.http import Limits, Service, serve_connection
from greenpool.http.parser import Request, RequestParser

pytestmark = pytest.mark.timeout(30)


def echo_length(environ, start_response):
    body = b"%d" % len(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class CountingService(Service):
    """A Service that counts how often its connections start waiting for a request."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(echo_length, {"SERVER_NAME": "test", "SERVER_PORT": "0"}, limits)
        self.waits = 0
        self.changed = threading.Condition()

    def waiting(self, sock):
        service = self

        class Scope:
            def __enter__(self):
                with service.changed:
                    service.waits += 1
                    service.changed.notify_all()

            def __exit__(self, *exc_info):
                pass

        return Scope()

    def wait_for(self, waits: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.waits >= waits, timeout=10), self.waits


def exchange(sock: socket.socket, request: bytes, answers: int = 1) -> bytes:
    """Send ``request`` and read ``answers`` responses of one Content-Length-framed byte."""
    sock.sendall(request)
    data = b""
    while data.count(b"HTTP/1.1 200 ") < answers or not data.endswith((b"0", b"5")):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


POST = b"POST /idle-test HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
GET = b"GET /idle-test HTTP/1.1\r\nHost: t\r\n\r\n"


def serving(pool, header_count: int):
    """A CountingService with Limits of the test's own (to tell its parsers apart), served."""
    service = CountingService(Limits(header_count=header_count))
    server = greenpool.serve(lambda sock, addr: serve_connection(service, sock, addr),
                             pool=pool)
    return service, server


def live(kind, limits):
    gc.collect()
    found = [o for o in gc.get_objects() if type(o) is kind]
    if kind is RequestParser:  # this test's parsers, not those of other tests' servers
        found = [p for p in found if p._limits is limits]
    else:
        found = [r for r in found if r.target.startswith(b"/idle-test")]
    return found


def test_idle_connections_keep_no_request_and_no_parser(pool):
    service, server = serving(pool, 77)
    limits = service.limits
    socks = []
    try:
        for i in range(8):
            sock = socket.create_connection(server.address, timeout=10)
            socks.append(sock)
            # a body read by the app, then two pipelined requests in one send
            assert exchange(sock, POST).endswith(b"5")
            assert exchange(sock, POST + GET, answers=2).endswith(b"0")
            # each connection waits once before its first request and once
            # after each batch: all of them idle now, after their responses
            service.wait_for(3 * (i + 1))
            assert live(Request, limits) == []
            parsers = live(RequestParser, limits)
            # the one parser, lent from connection to connection, is not held by any
            assert len(parsers) == 1
            assert parsers[0] in service.spare_parsers
            assert type(parsers[0].ready) is list and parsers[0].ready == []
        # and the lent parser still parses: every connection is answered again
        for sock in socks:
            assert exchange(sock, GET).endswith(b"0")
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=1)


def test_a_refused_request_never_lends_its_parser(pool):
    service, server = serving(pool, 78)
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert exchange(sock, GET).endswith(b"0")
            service.wait_for(2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400 ")
        # the broken parser was dropped, not put back for the next connection
        assert service.spare_parsers == []
        with socket.create_connection(server.address, timeout=10) as sock:
            assert exchange(sock, GET).endswith(b"0")
    finally:
        server.stop(timeout=1)


def test_an_idle_connection_keeps_no_environ_of_a_simple_request(pool):
    # A plain GET read whole takes the simple-head path (no parser, no Request of
    # its own); its environ dict must not outlive the response either.
    service, server = serving(pool, 79)
    socks = []
    try:
        for i in range(4):
            sock = socket.create_connection(server.address, timeout=10)
            socks.append(sock)
            assert exchange(sock, b"GET /idle-env-%d HTTP/1.1\r\nHost: t\r\n\r\n" % i).endswith(
                b"0")
            service.wait_for(2 * (i + 1))  # waiting again after its response
        gc.collect()
        table = [entry[0] for entry in service.simple_lines.values()]  # per Service, by design
        held = [o for o in gc.get_objects()
                if type(o) is dict and str(o.get("PATH_INFO", "")).startswith("/idle-env-")
                and not any(o is t for t in table)]
        assert len(table) == 4 and held == []
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=1)
