"""Hostile input to the WSGI server: fuzzed request lines and headers, oversized requests.

Every exchange must end in a response of ``ACCEPTED`` statuses or a closed
connection: never a 500, an ERROR logged by the server, a hang (each client
socket has a timeout, and each request is half-closed after sending so the
server sees its end), or a hub left stuck (afterwards every hub answers a
call and normal requests succeed at once).

The server refuses bodies over 1 MiB with 413 (``max_body_size``); the
application reads whatever body it is given.
"""

from __future__ import annotations

import collections
import json
import logging
import string
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import greenpool
import greenpool.wsgi
from tests.helpers import shut_down
from tests.procs import ServerProcess
from tests.reliability._http import (
    CLIENT_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_BODY,
    acceptable,
    app,
    exchange,
)
from tests.reliability._support import REPO_ROOT, sized

HUBS = 4


@pytest.fixture
def server():
    pool = greenpool.Pool(HUBS, name="http")
    srv = greenpool.wsgi.serve(
        app, pool=pool, idle_timeout=IDLE_TIMEOUT, backlog=4096, max_body_size=MAX_BODY
    )
    try:
        yield srv
    finally:
        srv.stop(5)
        shut_down(pool)


def assert_every_hub_still_serves(server) -> float:
    """Each hub answers a call and 20 normal requests succeed; returns the slowest, in s."""
    hubs = [f.result(2) for f in server.pool.broadcast(lambda: greenpool.current_hub().index)]
    assert hubs == list(range(HUBS)), "a hub is stuck"
    slowest = 0.0
    for _ in range(20):
        began = time.monotonic()
        statuses, ending = exchange(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        slowest = max(slowest, time.monotonic() - began)
        assert statuses == [200], (statuses, ending)
    assert slowest < 1.0
    return slowest


# -- fuzzed request lines and headers ------------------------------------------------

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"


def mostly(valid, hostile):
    """Three draws in four from ``valid``: hostile parts then reach deeper into the parser."""
    return st.integers(0, 3).flatmap(lambda k: hostile if k == 0 else valid)


token = st.text(alphabet=TCHAR, min_size=1, max_size=16).map(str.encode)
junk = st.binary(max_size=40)
methods = mostly(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS"]),
    st.one_of(token, junk, st.just(b"CONNECT")),
)
targets = mostly(
    st.one_of(st.just(b"/"), token.map(lambda t: b"/" + t), token.map(lambda t: b"/?q=" + t)),
    st.one_of(
        junk.map(lambda b: b"/" + b),
        st.binary(max_size=200),
        st.integers(8000, 9000).map(lambda n: b"/" + b"a" * n),  # around the 8 KiB line limit
        st.sampled_from([b"*", b"http://example.com/x", b"/%00", b"/../../etc/passwd"]),
    ),
)
versions = mostly(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    st.one_of(st.sampled_from([b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1 x", b"http/1.1", b""]), junk),
)
header_names = mostly(
    st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect",
                     b"Connection", b"Content-Type", b"Upgrade"]),
    st.one_of(token, junk),
)
header_values = st.one_of(
    st.integers(-10, 10**21).map(lambda n: str(n).encode()),
    st.sampled_from([b"chunked", b"gzip, chunked", b"100-continue", b"close", b"keep-alive",
                     b"", b" ", b"\x00"]),
    junk,
    st.integers(60_000, 70_000).map(lambda n: b"v" * n),  # around the 64 KiB header limit
)
line_ends = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b""]))
separators = mostly(st.just(b": "), st.sampled_from([b":", b" : ", b"", b":\r\n "]))
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.lists(st.binary(min_size=1, max_size=40), max_size=4).map(
        lambda parts: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    ),
)


@st.composite
def requests(draw) -> bytes:
    """An HTTP/1.x request with every part possibly malformed, or plain garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=500))
    end = draw(line_ends)
    head = draw(methods) + b" " + draw(targets) + b" " + draw(versions) + end
    if draw(st.integers(0, 3)):  # HTTP/1.1 needs one Host: without it most stop at 400
        head += b"Host: x" + end
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=12)):
        head += name + draw(separators) + value + end
    if draw(st.integers(0, 4)) == 0:
        head += b"X: y\r\n" * draw(st.integers(95, 110))  # around the 100-header limit
    return head + draw(line_ends) + draw(bodies)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # long reprs
@sized(150, 5000, fast_timeout=60, full_timeout=600)
def test_fuzzed_requests_get_a_refusal_or_a_close_never_a_crash_or_hang(
    record, server, caplog, size
):
    outcomes: collections.Counter = collections.Counter()
    bad: list = []
    slowest = [0.0]

    @settings(
        max_examples=size,
        deadline=None,
        database=None,
        derandomize=size < 1000,  # the fast variant is the same every run
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=requests())
    def one_request(raw: bytes) -> None:
        began = time.monotonic()
        statuses, ending = exchange(server.address, raw)
        slowest[0] = max(slowest[0], time.monotonic() - began)
        outcomes["/".join(map(str, statuses)) or ending] += 1
        if not acceptable(statuses, ending):
            bad.append(raw)
        assert acceptable(statuses, ending), (raw[:300], statuses, ending)

    after = None
    with caplog.at_level(logging.WARNING):
        try:
            one_request()
            after = assert_every_hub_still_serves(server)
        finally:
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            record(
                "fuzzed HTTP requests (hypothesis) to greenpool.wsgi",
                f"{sum(outcomes.values()):,} requests",
                len(errors) + len(bad),
                "answers " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
                + f"; slowest {slowest[0]:.2f} s"
                + (f"; normal request after {after * 1e3:.0f} ms" if after is not None else ""),
            )
    assert not errors, errors[0].getMessage()


# -- oversized requests ---------------------------------------------------------------

BIG = 16 * 2**20
HOST = b"Host: x\r\n"
GET = b"GET / HTTP/1.1\r\n" + HOST
POST = b"POST / HTTP/1.1\r\n" + HOST
OVERSIZED = {
    "request line 9 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", {414}),
    "header line 70 KiB": (GET + b"X: " + b"a" * 70_000 + b"\r\n\r\n", {400, 431}),
    "200 headers": (
        GET + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n",
        {400, 431},
    ),
    "body 16 MiB": (
        POST + b"Content-Length: %d\r\n\r\n" % BIG + b"z" * BIG, {413},
    ),
    "chunked body 16 MiB": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n"
        + (b"100000\r\n" + b"z" * 2**20 + b"\r\n") * 16 + b"0\r\n\r\n",
        {413},
    ),
    "Content-Length 10**21": (POST + b"Content-Length: %d\r\n\r\nabc" % 10**21, {413}),
    "Content-Length -5": (POST + b"Content-Length: -5\r\n\r\nabc", {400}),
    "Content-Length junk": (POST + b"Content-Length: abc\r\n\r\nabc", {400}),
    "chunk size junk": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", {400},
    ),
    "body cut short": (POST + b"Content-Length: 100\r\n\r\nabc", {400}),
}


@sized(1, 20, fast_timeout=60, full_timeout=300)
def test_oversized_requests_are_refused_and_every_hub_keeps_serving(
    record, server, caplog, size
):
    results: list = []
    lock = threading.Lock()

    def client(name: str, raw: bytes, allowed: set) -> None:
        statuses, ending = exchange(server.address, raw)
        # A refusal may be lost to a reset when the server closes with unread input.
        ok = ending != "hang" and (statuses[-1:] and statuses[-1] in allowed
                                   or not statuses and ending == "reset")
        with lock:
            results.append((name, statuses, ending, ok))

    with caplog.at_level(logging.WARNING):
        began = time.monotonic()
        for _ in range(size):
            threads = [threading.Thread(target=client, args=(name, raw, allowed))
                       for name, (raw, allowed) in OVERSIZED.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(CLIENT_TIMEOUT + 5)
        seconds = time.monotonic() - began
        after = assert_every_hub_still_serves(server)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    wrong = [r for r in results if not r[3]]
    record(
        "oversized/invalid HTTP requests",
        f"{size} x {len(OVERSIZED)} kinds, each round concurrent",
        len(wrong) + len(errors) + size * len(OVERSIZED) - len(results),
        f"{seconds:.2f} s; normal request after {after * 1e3:.0f} ms",
    )
    assert not wrong, wrong[:5]
    assert not errors, errors[0].getMessage()
    assert len(results) == size * len(OVERSIZED)


@pytest.mark.timeout(30)
def test_a_header_block_over_the_limit_gets_431(server):
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X%d: %s\r\n" % (i, b"v" * 60_000) for i in range(90)
    ) + b"\r\n"
    statuses, ending = exchange(server.address, raw)
    assert ending != "hang"
    assert statuses == [431], statuses


# -- coverage-guided fuzzing with atheris (optional) ----------------------------------

ATHERIS_SCRIPT = r"""
import json, logging, os, sys
import atheris

with atheris.instrument_imports(include=["greenpool.http"]):
    import greenpool.http  # noqa: F401 - instrumented: coverage feedback from the HTTP core

import greenpool
import greenpool.wsgi
from tests.reliability._http import (
    IDLE_TIMEOUT, MAX_BODY, acceptable, app, exchange,
)

RUNS = int(sys.argv[1])
errors = []


class CountErrors(logging.Handler):
    def emit(self, record):
        errors.append(record.getMessage())


logging.getLogger().addHandler(CountErrors(logging.ERROR))
pool = greenpool.Pool(4, name="atheris")
server = greenpool.wsgi.serve(app, pool=pool, idle_timeout=IDLE_TIMEOUT, max_body_size=MAX_BODY)
done = [0]


def one_input(data: bytes) -> None:
    statuses, ending = exchange(server.address, data)
    if not acceptable(statuses, ending) or errors:
        raise AssertionError(f"{data[:200]!r}: {statuses} {ending} {errors[:1]}")
    done[0] += 1
    if done[0] == RUNS:
        hubs = [f.result(2) for f in pool.broadcast(lambda: greenpool.current_hub().index)]
        statuses, ending = exchange(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        outcome = {"runs": done[0], "hubs": hubs, "after": statuses}
        print("result " + json.dumps(outcome), flush=True)
        os._exit(0)


atheris.Setup(
    [sys.argv[0], f"-runs={2 * RUNS}", "-max_len=2048", f"-artifact_prefix={sys.argv[3]}/",
     sys.argv[2]],
    one_input,
)
atheris.Fuzz()
"""

SEEDS = {
    "get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "post": b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n",
    "expect": b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
}


@sized(300, 20_000, fast_timeout=60, full_timeout=600)
def test_atheris_fuzzing_finds_no_crash_or_hang(record, tmp_path, size):
    pytest.importorskip("atheris", reason="atheris is optional: pip install atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, seed in SEEDS.items():
        (corpus / name).write_bytes(seed)
    began = time.monotonic()
    with ServerProcess(
        [sys.executable, "-c", ATHERIS_SCRIPT, str(size), str(corpus), str(tmp_path)],
        cwd=REPO_ROOT,
    ) as proc:
        code = proc.wait_exit(550)
        output = proc.output
    seconds = time.monotonic() - began
    ok = code == 0 and "result " in output
    outcome = json.loads(output.split("result ", 1)[1].splitlines()[0]) if ok else {}
    record(
        "fuzzed HTTP requests (atheris, coverage-guided) to greenpool.wsgi",
        f"{outcome.get('runs', 0):,} inputs",
        0 if ok else 1,
        f"{seconds:.1f} s"
        + ("; every hub and a normal request served after" if ok else ""),
    )
    found = output[output.find("=== Uncaught"):] if "=== Uncaught" in output else output
    assert ok, f"exit code {code}:\n{found[-3000:]}"
    assert outcome["hubs"] == [0, 1, 2, 3]
    assert outcome["after"] == [200]


def hello(environ, start_response):
    """An app that never reads the request body (most GET handlers)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


@pytest.mark.timeout(30)
def test_an_empty_chunk_size_line_is_a_client_error_not_an_application_failure(caplog):
    pool = greenpool.Pool(1, name="chunk")
    server = greenpool.wsgi.serve(hello, pool=pool, idle_timeout=IDLE_TIMEOUT)
    try:
        with caplog.at_level(logging.WARNING):
            statuses, ending = exchange(
                server.address,
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            )
    finally:
        server.stop(5)
        pool.shutdown(wait=True, cancel_futures=True)
    assert statuses in ([200], [400]) and ending != "hang"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.timeout(30)
def test_a_one_digit_http_version_gets_400_without_a_traceback(capfd):
    pool = greenpool.Pool(1, name="version")
    server = greenpool.wsgi.serve(hello, pool=pool, idle_timeout=IDLE_TIMEOUT)
    try:
        statuses, ending = exchange(server.address, b"GET / HTTP/1\r\n\r\n")
    finally:
        server.stop(5)
        pool.shutdown(wait=True, cancel_futures=True)
    assert statuses == [400] and ending != "hang"
    assert "Traceback" not in capfd.readouterr().err
