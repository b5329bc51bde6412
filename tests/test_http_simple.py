"""The HTTP core's fast path for simple heads: the same request as llhttp's, or llhttp decides.

A plain bodiless request read whole between requests (``SIMPLE_HEAD`` in
``greenpool.http.parser``) is turned into its environ without llhttp. These
tests pin that the fast path is only a shortcut: every head it takes is one
llhttp's strict mode accepts as the same request, its environ is the one the
general path (llhttp, the parser's checks, ``_environ``) makes of the same
bytes, and any head with something the general path must judge (framing,
upgrades, ``100-continue``, ``Connection`` options, ``Host`` rules, limits)
is left to it.
"""

from __future__ import annotations

import pytest
from gevent import socket as gsocket
from hypothesis import given, settings
from hypothesis import strategies as st

from greenpool.http import Limits, Service
from greenpool.http.connection import _Connection
from greenpool.http.parser import SIMPLE_HEAD, RequestParser

pytestmark = pytest.mark.timeout(60)


def _app(environ, start_response):  # never called: the tests build environs only
    raise AssertionError


@pytest.fixture
def make_conn():
    socks = []

    def make(limits: Limits | None = None) -> _Connection:
        a, b = gsocket.socketpair()
        socks.extend((a, b))
        service = Service(_app, {"SERVER_NAME": "test", "SERVER_PORT": "80"},
                          limits or Limits())
        return _Connection(service, a, ("10.0.0.1", 4321))

    yield make
    for sock in socks:
        sock.close()


def general(conn: _Connection, raw: bytes):
    """What llhttp and the parser's checks make of ``raw``: (error, request, environ)."""
    parser = RequestParser(conn.service.limits)
    parser.feed(raw)
    if parser.error is not None or len(parser.ready) != 1 or parser.current is not None:
        return parser.error, None, None
    req = parser.ready[0]
    return None, req, conn._environ(req)


def fast(conn: _Connection, raw: bytes):
    match = SIMPLE_HEAD.fullmatch(raw) if len(raw) <= conn.simple_max else None
    return None if match is None else conn._simple_environ(match)


def assert_same(conn: _Connection, raw: bytes) -> dict:
    env = fast(conn, raw)
    assert env is not None, f"{raw!r} should take the fast path"
    error, req, expected = general(conn, raw)
    assert error is None, (raw, error)
    fast_req = conn.req
    for field in ("method", "version", "keep_alive", "complete", "expect_continue", "chunked",
                  "content_length", "upgrade"):
        assert getattr(fast_req, field) == getattr(req, field), (raw, field)
    assert fast_req.body == [] and fast_req.error is None
    assert env.pop("wsgi.input").read() == b""
    expected.pop("wsgi.input")
    assert env == expected, raw
    return env


SIMPLE = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HEAD /a/b?c=d&e=%41 HTTP/1.1\r\nhost: x\r\n\r\n",
    b"DELETE /%2F%zz;p=1@:!$&'()*+,=~._- HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS /? HTTP/1.1\r\nHost:\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a:  2 \t\r\nX-B:\t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\nConnection: CLOSE\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nX_Spoof: y\r\n\r\n",
    b"PATCH / HTTP/1.1\r\nHost: x\r\nAccept: a b\tc\r\nCookie: a=b; c=d\r\n\r\n",
]


@pytest.mark.parametrize("raw", SIMPLE)
def test_simple_heads_get_the_general_paths_request_and_environ(make_conn, raw):
    env = assert_same(make_conn(), raw)
    assert "X_SPOOF" not in str(env)  # names with "_" are dropped, as on the general path


def test_keep_alive_follows_the_version_and_connection_header(make_conn):
    conn = make_conn()
    expected = {b"GET / HTTP/1.1\r\nHost: x\r\n\r\n": True,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n": False,
                b"GET / HTTP/1.0\r\n\r\n": False,
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n": True}
    for raw, keep_alive in expected.items():
        assert fast(conn, raw) is not None
        assert conn.req.keep_alive is keep_alive, raw


LEFT_TO_LLHTTP = [
    # framing, upgrades, continues: the parser's checks and llhttp's framing decide
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n",
    # Connection options other than one close or keep-alive
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE\r\n\r\n",
    # Host: missing in HTTP/1.1, twice anywhere (400 from the parser)
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\nhost: y\r\n\r\n",
]


@pytest.mark.parametrize("raw", LEFT_TO_LLHTTP)
def test_heads_the_parser_must_judge_are_left_to_it(make_conn, raw):
    assert SIMPLE_HEAD.fullmatch(raw) is not None  # the grammar matches; the fields decide
    assert fast(make_conn(), raw) is None


NOT_SIMPLE = [
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",  # runs of spaces (llhttp accepts them)
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # whitespace before the colon (400)
    b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: x\r\nA: \x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nA: \x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nA: caf\xe9\r\n\r\n",  # obs-text: llhttp's call
    b"GET /#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",  # absolute form
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n",  # not complete
    b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a leading empty line
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # pipelined
]


@pytest.mark.parametrize("raw", NOT_SIMPLE)
def test_other_heads_do_not_match_the_simple_grammar(raw):
    assert SIMPLE_HEAD.fullmatch(raw) is None


def test_limits_send_heads_to_the_parser(make_conn):
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: 1\r\n" * 4 + b"\r\n"
    assert fast(make_conn(Limits(header_count=5)), many) is not None
    assert fast(make_conn(Limits(header_count=4)), many) is None  # 400 from the parser
    long_target = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_field = b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"a" * 100 + b"\r\n\r\n"
    for raw, limits in ((long_target, Limits(request_line=100)),
                        (long_field, Limits(header_field=50)),
                        (long_field, Limits(header_block=50))):
        conn = make_conn(limits)
        assert fast(conn, raw) is None, limits
        assert general(conn, raw)[0] is not None, limits  # which the parser refuses
    # a head over the fast path's bound within every limit: the parser serves it
    conn = make_conn(Limits(header_field=50))
    assert fast(conn, long_target) is None and general(conn, long_target)[0] is None
    assert fast(make_conn(Limits(request_line=200)), long_target) is not None


_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PCHAR = "-._~%!$&'()*+,;=:@/?abcdefxyzABCXYZ0189"


@st.composite
def simple_heads(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    target = "/" + draw(st.text(_PCHAR, max_size=20))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    names = st.one_of(st.text(_TCHAR, min_size=1, max_size=8),
                      st.sampled_from(["Host", "host", "Connection", "Content-Type", "X-A",
                                       "content-length", "Expect", "Upgrade", "A_B"]))
    values = st.one_of(st.sampled_from(["close", "keep-alive", "Keep-Alive", "0", "x"]),
                       st.text("".join(map(chr, range(0x20, 0x7f))) + "\t", max_size=12))
    fields = draw(st.lists(st.tuples(names, values), max_size=6))
    if version == "1.1" and draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", "h"))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}:{v}\r\n" for n, v in fields)
    return (head + "\r\n").encode("latin-1")


@settings(max_examples=400, deadline=None)
@given(raw=simple_heads())
def test_what_the_fast_path_takes_the_general_path_takes_the_same_way(raw):
    a, b = gsocket.socketpair()
    try:
        service = Service(_app, {"SERVER_NAME": "test", "SERVER_PORT": "80"}, Limits())
        conn = _Connection(service, a, ("10.0.0.1", 4321))
        assert SIMPLE_HEAD.fullmatch(raw) is not None, raw
        if fast(conn, raw) is not None:
            assert_same(conn, raw)
    finally:
        a.close()
        b.close()


def test_request_lines_are_remembered_per_service_and_bounded(make_conn, monkeypatch):
    from greenpool.http import connection

    conn = make_conn()
    first = b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    again = b"GET /a?b HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n"
    assert_same(conn, first)
    assert list(conn.service.simple_lines) == [b"GET /a?b HTTP/1.1"]
    env = assert_same(conn, again)  # the remembered line, other fields
    assert env["HTTP_HOST"] == "y" and "HTTP_X_A" not in env and conn.req.keep_alive is False
    # the remembered part is copied, never handed out: the app may change its environ
    assert "HTTP_HOST" not in conn.service.simple_lines[b"GET /a?b HTTP/1.1"][0]
    monkeypatch.setattr(connection, "SIMPLE_LINES", 3)
    for i in range(5):
        assert_same(conn, b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        assert len(conn.service.simple_lines) <= 3


def test_a_simple_requests_input_is_empty_whatever_the_app_reads(make_conn):
    conn = make_conn()
    env = fast(conn, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    body = env["wsgi.input"]
    assert body.read() == b"" and body.read(10) == b"" and body.readline() == b""
    assert body.readlines() == [] and list(body) == []
    assert fast(conn, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")["wsgi.input"].read() == b""
