"""greenpool.wsgi against h11: the same raw bytes, the same verdict, the same request.

Every case is a raw byte string (one or more pipelined requests, well-formed
or mutated the way request smugglers and fuzzers mutate them). h11, the strict
pure-Python HTTP/1.1 parser, reads it request by request and says, for each,
accept (method, target, headers, body) or reject. The same bytes go to a
``greenpool.wsgi`` server on a fresh connection (the client then half-closes),
whose app answers everything it was handed (method, raw target,
``PATH_INFO``/``QUERY_STRING``, the ``HTTP_*``/``CONTENT_*`` environ, the body)
as JSON, in an ``X-Echo`` header (so ``HEAD`` answers carry it too) and in the
body. The server's output is read back with h11's client side, which also
checks that it is valid HTTP and that HEAD answers carry no body. The named
corpus also runs with its bytes arriving three at a time, and against
greenpool's gunicorn worker (the same core under gunicorn's settings).

The property, request by request:

* h11 accepts: greenpool answers 200 and its app got the same method, raw
  target, protocol, headers (names compared as PEP 3333 spells them,
  repeated fields joined with ``,`` or ``, ``) and body; ``PATH_INFO`` is the
  percent-decoded path of the target (absolute-form included) and
  ``QUERY_STRING`` the raw query.
* h11 rejects: greenpool answers one 4xx/5xx and closes: no answer to
  anything after it (a second answer is what request smuggling looks like).
* the bytes end inside a request (h11 waits for more, the client has
  half-closed): greenpool answers nothing or a 4xx/5xx, never a 2xx (an app
  must never be handed a truncated body as the whole one).
* h11 ends the connection (``Connection: close``, HTTP/1.0): greenpool
  answers nothing after that response.

Where the two may differ, on purpose (each request carries its allowances,
computed from its bytes; the failure message names them):

* ``cl+te`` (Content-Length and Transfer-Encoding together): h11 frames by
  Transfer-Encoding and keeps the connection. RFC 9112 6.3 lets a server
  reject it and requires closing after it; issue 11 asks for 400 and close,
  so greenpool MUST reject here (stricter than h11). So is an invalid Host
  value (not ``uri-host [":" port]``, RFC 9112 3.2 MUST 400; h11 takes any):
  the generated requests carry valid ones, tests/test_http_simple_review.py
  the invalid ones.
* May reject what h11 accepts (a 4xx/5xx, then close), because the RFC allows
  it and llhttp's strict mode does: obs-fold (RFC 9112 5.2; if accepted,
  values must equal h11's unfolded ones modulo runs of whitespace); bare LF
  line ends (RFC 9112 2.2 "MAY"); duplicate but equal Content-Length values
  (RFC 9110 8.6 "MAY reject"); more than one Content-Type (a singleton
  field, RFC 9110 5.3; if accepted, any one of them or all joined); CTLs
  other than NUL/CR/LF in field values
  (RFC 9110 5.5: invalid, "MAY retain"; h11 keeps them); methods outside RFC
  9110's and PATCH (501 for unknown methods, lowercase ones, CONNECT);
  versions other than 1.0/1.1 (505); targets with characters RFC 3986 does
  not allow, a fragment, userinfo, a non-http(s) scheme or ``*`` outside
  OPTIONS (RFC 9112 3.2 "MAY reject"); chunk extensions outside RFC 9112 7.1.1's
  grammar, whitespace after a chunk size (h11 takes ``;.*`` and trailing OWS)
  and whitespace (BWS) inside chunk extensions (the RFC says to accept it,
  llhttp refuses it: a refusal, never a different framing, and chunk
  extensions are all but unused); Transfer-Encoding in an HTTP/1.0 request
  (RFC 9112 6.1: the framing is faulty; if accepted, greenpool must close
  after it).
* Leading empty lines before a request line: h11 rejects them, RFC 9112 2.2
  says a server SHOULD ignore at least one. They are stripped before h11
  sees the request, and greenpool may either ignore them or reject.
* Header names with ``_`` may be left out of the environ (``X_A`` and ``X-A``
  are one ``HTTP_X_A``; gunicorn and nginx drop them against spoofing).
* ``Transfer-Encoding`` and ``Expect`` may be absent from the environ (the
  server consumed them); ``CONTENT_LENGTH``/``CONTENT_TYPE`` of ``""`` equal
  absent, and Content-Length values compare as numbers (h11 folds ``5, 5``).
* HTTP/1.0 with ``Connection: keep-alive``: h11 never keeps 1.0 connections,
  RFC 9112 9.3 lets a server do so; what follows such a request is unchecked.
* Whitespace before a chunk extension's ``;`` (RFC 9112 7.1.1 BWS) is not
  generated: h11 refuses it, the RFC allows it.
* Status codes are not compared (h11's hints are 400/501/431; the property
  is "4xx or 5xx, then close").

Mismatches found but not fixed yet are listed in ``KNOWN_MISMATCHES``: their
corpus cases are strict expected failures (a fix makes them fail until the
entry goes), and generated requests that match them are skipped.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

import h11
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import greenpool
from greenpool import wsgi
from tests.helpers import shut_down
from tests.procs import ServerProcess, python_cmd

pytestmark = pytest.mark.timeout(120)

#: The largest request head h11 takes (greenpool's MAX_HEADER_BYTES is 64 KiB;
#: generated heads stay far below both).
H11_MAX_HEAD = 64 * 1024


# -- the app and the server ----------------------------------------------------


def echo_app(environ, start_response):
    """Answer, as base64 JSON, what the server handed the app."""
    body = environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        "raw_target": environ.get("RAW_URI", environ.get("REQUEST_URI")),
        "script_name": environ.get("SCRIPT_NAME", ""),
        "path_info": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ.get("SERVER_PROTOCOL"),
        "headers": {
            k: v
            for k, v in environ.items()
            if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
        },
        "body": base64.b64encode(body).decode("ascii"),
    }
    payload = base64.b64encode(json.dumps(seen).encode())
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(payload))),
            ("X-Echo", payload.decode("ascii")),
        ],
    )
    return [payload]


@pytest.fixture(scope="module")
def address():
    """One greenpool.wsgi echo server (one hub) for the whole module."""
    pool = greenpool.Pool(1, name="differential")
    try:
        server = wsgi.serve(echo_app, pool=pool, idle_timeout=10)
        try:
            yield server.address
        finally:
            server.stop(timeout=1)
    finally:
        shut_down(pool)


@pytest.fixture(scope="module")
def worker_address():
    """The same echo app under gunicorn with greenpool's worker (its own HTTP settings)."""
    root = Path(__file__).resolve().parent.parent
    cmd = python_cmd(
        "-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "-b", "127.0.0.1:0", "-w", "1",
        "--no-control-socket", "tests.test_http_differential:echo_app",
    )
    with ServerProcess(cmd, cwd=root) as server:
        port = int(server.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        server.wait_for(r"Booting worker with pid")
        yield ("127.0.0.1", port)


def exchange(
    address, raw: bytes, cuts: tuple[int, ...] = (), timeout: float = 10.0
) -> tuple[bytes, bool]:
    """Send ``raw``, half-close, read to EOF: (what came back, whether it ended in a reset).

    With ``cuts``, ``raw`` goes out in pieces cut there, a millisecond apart, so
    the server tends to read them separately: its parser must give the same
    verdict however the bytes arrive (the pause only makes that likelier;
    nothing waits on it).
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for start, end in zip((0, *cuts), (*cuts, len(raw)), strict=True):
                if start:
                    time.sleep(0.001)
                sock.sendall(raw[start:end])
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server already answered an error and closed
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)


# -- what h11 makes of the bytes ----------------------------------------------

KNOWN_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH"}
_TARGET_CHARS = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*\Z")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE = re.compile(rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)")
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 7.1.1 without its BWS (llhttp refuses whitespace in chunk extensions).
_CHUNK_EXT = re.compile(rb"(?:;%s(?:=(?:%s|%s))?)*\Z" % (_TOKEN, _TOKEN, _QUOTED))
_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a head
_CHUNK_LINE = re.compile(rb"(?m)^[0-9A-Fa-f]+(.*?)\r?$")


@dataclass
class Expected:
    """One request h11 accepted, and where greenpool may differ."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes  # the bytes h11 took for this request
    closes: bool  # h11 ends the connection after answering it
    may_reject: list[str] = field(default_factory=list)
    must_reject: list[str] = field(default_factory=list)
    unchecked_after: bool = False  # what follows is not compared
    close_after: bool = False  # greenpool must close after answering it


@dataclass
class Verdict:
    requests: list[Expected]
    end: str  # "end" (clean), "closed" (h11 closes), "reject", "incomplete"
    reason: str = ""


def h11_verdict(raw: bytes) -> Verdict:
    """Read ``raw`` with h11, one request after another, as a server would."""
    requests: list[Expected] = []
    rest = raw
    while rest:
        stripped = rest.lstrip(b"\r\n")
        leading = len(rest) - len(stripped)
        if leading and not stripped:
            return Verdict(requests, "end")
        outcome = _h11_one(stripped)
        if isinstance(outcome, str):
            kind, _, reason = outcome.partition(":")
            return Verdict(requests, kind, reason)
        expected, consumed = outcome
        if leading:
            expected.may_reject.append("leading empty lines")
            expected.raw = rest[:leading] + expected.raw
        requests.append(expected)
        rest = stripped[consumed:]
        if expected.closes or expected.unchecked_after:
            return Verdict(requests, "closed")
    return Verdict(requests, "end")


def _h11_one(data: bytes):
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=H11_MAX_HEAD)
    conn.receive_data(data)
    request = None
    body = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return f"reject:{exc.error_status_hint} {exc}"
        if event is h11.NEED_DATA:
            return "incomplete:h11 needs more bytes"
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
    consumed = len(data) - len(conn.trailing_data[0])
    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    expected = Expected(
        method=bytes(request.method),
        target=bytes(request.target),
        version=bytes(request.http_version),
        headers=[(bytes(n), bytes(v)) for n, v in request.headers],
        body=b"".join(body),
        raw=data[:consumed],
        closes=conn.our_state is h11.MUST_CLOSE,
    )
    _allowances(expected)
    return expected, consumed


def _allowances(e: Expected) -> None:
    end = _BLANK_LINE.search(e.raw)
    head, after = e.raw[: end.start()], e.raw[end.end():]
    if re.search(rb"(?<!\r)\n", e.raw[: end.end()]):
        e.may_reject.append("bare LF line ends")
    if re.search(rb"\n[ \t]", head):
        e.may_reject.append("obs-fold")
    names = [n for n, _ in e.headers]
    raw_names = [
        line.split(b":", 1)[0].strip().lower() for line in re.split(rb"\r?\n", head)[1:]
    ]
    if b"transfer-encoding" in names and b"content-length" in raw_names:
        e.must_reject.append("Content-Length with Transfer-Encoding (issue 11: 400 and close)")
    if raw_names.count(b"content-length") > 1 or any(
        n == b"content-length" and b"," in v for n, v in _raw_fields(head)
    ):
        e.may_reject.append("duplicate equal Content-Length")
    if names.count(b"content-type") > 1:
        e.may_reject.append("more than one Content-Type (a singleton field, RFC 9110 5.3)")
    if any(re.search(rb"[\x01-\x08\x0a-\x1f\x7f]", v) for _, v in e.headers):
        e.may_reject.append("CTL in a field value")
    if e.method not in KNOWN_METHODS:
        e.may_reject.append("method not in RFC 9110 + PATCH")
    if e.version not in (b"1.0", b"1.1"):
        e.may_reject.append("HTTP version other than 1.0/1.1")
    target_problem = _target_problem(e.method, e.target)
    if target_problem:
        e.may_reject.append(target_problem)
    if b"transfer-encoding" in names:
        for match in _CHUNK_LINE.finditer(after):
            ext = match.group(1)
            if ext and not _CHUNK_EXT.match(ext):
                e.may_reject.append("chunk extension with whitespace or outside RFC 9112 7.1.1")
                break
        if e.version == b"1.0":
            e.may_reject.append("Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)")
            e.close_after = True
    if e.must_reject:
        e.close_after = True
    if e.version == b"1.0" and b"keep-alive" in b",".join(
        v.lower() for n, v in e.headers if n == b"connection"
    ):
        e.unchecked_after = True


def _raw_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    fields = []
    for line in re.split(rb"\r?\n", head)[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.strip().lower(), value.strip()))
    return fields


def _target_problem(method: bytes, target: bytes) -> str | None:
    if target == b"*":
        return None if method == b"OPTIONS" else "asterisk-form outside OPTIONS"
    if not _TARGET_CHARS.match(target) or _BAD_PERCENT.search(target):
        return "target characters outside RFC 3986"
    absolute = _ABSOLUTE.match(target)
    if absolute:
        if absolute["scheme"].lower() not in (b"http", b"https"):
            return "absolute-form with a scheme other than http(s)"
        if b"@" in absolute["authority"]:
            return "absolute-form with userinfo"
        return None
    if not target.startswith(b"/"):
        return "target neither origin-, absolute- nor asterisk-form"
    return None


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of an origin- or absolute-form target."""
    absolute = _ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end():]
    path, _, query = target.partition(b"?")
    return path, query


# -- what greenpool answered ----------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    closes: bool

    def echo(self) -> dict:
        value = dict(self.headers).get(b"x-echo")
        assert value is not None, f"a {self.status} answer without X-Echo: {self.headers}"
        return json.loads(base64.b64decode(value))


def read_answers(data: bytes, methods: list[bytes]) -> list[Answer]:
    """Parse what greenpool sent with h11's client side (so it must be valid HTTP).

    An error answer to a HEAD request may carry a body when the connection
    ends with it (the server refused the request, so it need not have read
    the method): it is read as an answer to GET.
    """
    answers: list[Answer] = []
    rest = data
    while rest:
        method = methods[len(answers)] if len(answers) < len(methods) else b"GET"
        try:
            answer, after = _read_answer(rest, method)
        except AssertionError as exc:
            if method != b"HEAD":
                raise AssertionError(f"after {len(answers)} answers: {exc}") from None
            answer, after = _read_answer(rest, b"GET")
            if answer.status < 400 or after:
                raise AssertionError(f"after {len(answers)} answers: {exc}") from None
        if method == b"HEAD" and answer.status >= 400 and after:
            try:
                as_get, rest_as_get = _read_answer(rest, b"GET")
            except AssertionError:
                pass
            else:
                if not rest_as_get:
                    answer, after = as_get, rest_as_get
        answers.append(answer)
        rest = after
    return answers


def _read_answer(data: bytes, method: bytes) -> tuple[Answer, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response, body = None, []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise AssertionError(f"greenpool sent invalid HTTP ({exc}): {data[:300]!r}") from None
        if isinstance(event, h11.InformationalResponse):  # 100 Continue
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        elif event is h11.NEED_DATA or event is h11.ConnectionClosed:
            raise AssertionError(f"greenpool's answer is cut off: {data[:300]!r}")
    answer = Answer(
        status=response.status_code,
        headers=[(bytes(n), bytes(v)) for n, v in response.headers],
        body=b"".join(body),
        closes=conn.their_state is h11.MUST_CLOSE,
    )
    return answer, conn.trailing_data[0]


# -- the comparison ------------------------------------------------------------


def environ_name(name: bytes) -> str:
    name = name.decode("latin-1").upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name


_OPTIONAL = {"HTTP_TRANSFER_ENCODING", "HTTP_EXPECT"}
_WS = re.compile(r"[ \t]+")


def compare_request(expected: Expected, seen: dict) -> list[str]:
    """What greenpool's app got that differs from what h11 read."""
    problems = []
    latin = lambda b: b.decode("latin-1")  # noqa: E731

    if seen["method"] != latin(expected.method):
        problems.append(f"method {seen['method']!r}, h11 {latin(expected.method)!r}")
    if seen["raw_target"] != latin(expected.target):
        problems.append(
            f"raw target (RAW_URI/REQUEST_URI) {seen['raw_target']!r}, "
            f"h11 {latin(expected.target)!r}"
        )
    if expected.target != b"*" and b"#" not in expected.target:
        path, query = split_target(expected.target)
        want_path = latin(unquote_to_bytes(path))
        got_path = seen["script_name"] + seen["path_info"]
        if got_path != want_path and not (want_path == "" and got_path == "/"):
            problems.append(f"SCRIPT_NAME+PATH_INFO {got_path!r}, expected {want_path!r}")
        if seen["query"] != latin(query):
            problems.append(f"QUERY_STRING {seen['query']!r}, expected {latin(query)!r}")
    if expected.version in (b"1.0", b"1.1"):
        want = "HTTP/" + latin(expected.version)
        if seen["protocol"] != want:
            problems.append(f"SERVER_PROTOCOL {seen['protocol']!r}, expected {want!r}")

    want_headers: dict[str, list[str]] = {}
    spellings: dict[str, set[bytes]] = {}
    for name, value in expected.headers:
        key = environ_name(name)
        want_headers.setdefault(key, []).append(latin(value))
        spellings.setdefault(key, set()).add(name)
    got = {k: v for k, v in seen["headers"].items()
           if not (k in ("CONTENT_TYPE", "CONTENT_LENGTH") and v == "")}
    folded = "obs-fold" in expected.may_reject
    for key, values in want_headers.items():
        underscore = any(b"_" in n for n in spellings[key])
        if key not in got:
            empty_content = key.startswith("CONTENT_") and (
                not any(values) or (key == "CONTENT_TYPE" and "" in values)
            )
            if key in _OPTIONAL or underscore or empty_content:
                continue
            problems.append(f"{key} missing (h11: {values!r})")
            continue
        value = got.pop(key)
        if underscore and len(spellings[key]) > 1:
            continue
        if key == "CONTENT_LENGTH":
            if not value.strip().isdigit() or int(value) != int(values[0]):
                problems.append(f"CONTENT_LENGTH {value!r}, h11 {values[0]!r}")
            continue
        if key == "HTTP_TRANSFER_ENCODING":
            value, values = value.lower(), [v.lower() for v in values]
        candidates = {", ".join(values), ",".join(values)}
        if key == "CONTENT_TYPE":
            candidates.update(values)  # a singleton: one of them, if not refused
        if key == "HTTP_COOKIE":
            candidates.add("; ".join(values))  # RFC 6265 5.4, as HTTP/2 and pywsgi join them
        if folded:
            value = _WS.sub(" ", value)
            candidates = {_WS.sub(" ", c) for c in candidates}
        if value not in candidates:
            problems.append(f"{key} {value!r}, h11 {values!r}")
    for key, value in got.items():
        problems.append(f"{key}={value!r} handed to the app, not in the request (h11)")

    body = base64.b64decode(seen["body"])
    if body != expected.body:
        problems.append(f"body {body[:200]!r}, h11 {expected.body[:200]!r}")
    return problems


def request_methods(raw: bytes) -> list[bytes]:
    """The method of every request in ``raw`` a server may answer (HEAD answers have no body).

    Unlike :func:`h11_verdict`, this reads past a request that ends the
    connection; where h11 cannot read a request, its method is guessed.
    """
    methods = []
    rest = raw
    while rest:
        rest = rest.lstrip(b"\r\n")
        outcome = _h11_one(rest)
        if isinstance(outcome, str):
            methods.append(b"HEAD" if rest.startswith(b"HEAD ") else b"GET")
            break
        methods.append(outcome[0].method)
        rest = rest[outcome[1]:]
    return methods


def check(address, raw: bytes, cuts: tuple[int, ...] = ()) -> None:
    """The differential property for one raw byte string (see the module docstring)."""
    verdict = h11_verdict(raw)
    data, reset = exchange(address, raw, cuts)
    answers = read_answers(data, request_methods(raw))
    context = (
        f"\nraw: {raw!r}{f' sent in pieces cut at {cuts}' if cuts else ''}"
        f"\nh11: {[(e.method, e.target) for e in verdict.requests]} then "
        f"{verdict.end} {verdict.reason}\ngreenpool: {[a.status for a in answers]}"
        f"{' then reset' if reset else ''}\nerror bodies: "
        f"{[a.body[:160] for a in answers if a.status >= 400]}\nraw answer: {data[:600]!r}"
    )

    problem = difference(verdict, answers)
    if problem:
        pytest.fail(problem + context, pytrace=False)


def difference(verdict: Verdict, answers: list[Answer]) -> str | None:
    """How greenpool's answers break the property for h11's verdict (None: they do not)."""
    for i, expected in enumerate(verdict.requests):
        allowed = expected.may_reject + expected.must_reject
        where = f"request {i} ({', '.join(allowed) or 'no allowances'})"
        if i >= len(answers):
            return f"{where}: h11 accepts it, greenpool did not answer"
        answer = answers[i]
        if answer.status >= 400:
            if not allowed:
                return f"{where}: h11 accepts it, greenpool answered {answer.status}"
            if len(answers) > i + 1:
                return f"{where}: greenpool answered after its {answer.status}"
            return None
        if expected.must_reject:
            return f"{where}: greenpool must refuse it (4xx, close), answered {answer.status}"
        if answer.status != 200:
            return f"{where}: answered {answer.status}"
        problems = compare_request(expected, answer.echo())
        if problems:
            return f"{where}: " + "; ".join(problems)
        if expected.unchecked_after:
            return None
        if (expected.closes or expected.close_after) and len(answers) > i + 1:
            return f"{where}: the connection had to end after it; greenpool answered more"
        if expected.closes or expected.close_after:
            return None

    n = len(verdict.requests)
    extra = answers[n:]
    if verdict.end == "reject":
        if not extra:
            return f"h11 rejects request {n} ({verdict.reason}); greenpool did not answer it"
        if not 400 <= extra[0].status < 600:
            return f"h11 rejects request {n} ({verdict.reason}); greenpool answered " + str(
                extra[0].status
            )
        if len(extra) > 1:
            return f"greenpool answered after refusing request {n}"
    elif verdict.end == "incomplete":
        if len(extra) > 1 or any(a.status < 400 for a in extra):
            return f"request {n} is cut off (client half-closed); greenpool answered it"
    elif extra:
        return f"greenpool answered {len(extra)} requests h11 never saw"
    return None


# -- the fixed corpus ----------------------------------------------------------

H = b"Host: example.com\r\n"

CORPUS: dict[str, bytes] = {
    # well-formed
    "get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "get-query": b"GET /search?q=a+b&x=%2F&empty= HTTP/1.1\r\n" + H + b"\r\n",
    "percent-decoding": b"GET /a%20b/%C3%A9/%7e?x=%41 HTTP/1.1\r\n" + H + b"\r\n",
    "percent-encoded-slash": b"GET /a%2Fb HTTP/1.1\r\n" + H + b"\r\n",
    "percent-lowercase-hex": b"GET /%c3%a9 HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form": b"GET http://example.com/p/a?q=1 HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-port": b"GET http://example.com:8080/p HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-https": b"GET https://example.com/p%20q HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-no-path": b"GET http://example.com HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-other-host": b"GET http://other.example/x HTTP/1.1\r\n" + H + b"\r\n",
    "options-asterisk": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "head": b"HEAD /x HTTP/1.1\r\n" + H + b"\r\n",
    "head-then-get": b"HEAD / HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
    "delete": b"DELETE /r/1 HTTP/1.1\r\n" + H + b"\r\n",
    "patch-body": b"PATCH /r HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\n{}",
    "repeated-header": b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\nX-B: q\r\nX-A: 2\r\n\r\n",
    "repeated-header-case": b"GET / HTTP/1.1\r\n" + H + b"x-a: 1\r\nX-A: 2\r\nX-a: 3\r\n\r\n",
    "repeated-cookie": b"GET / HTTP/1.1\r\n" + H + b"Cookie: a=1\r\nCookie: b=2\r\n\r\n",
    "repeated-header-empty": b"GET / HTTP/1.1\r\n" + H + b"X-A:\r\nX-A: b\r\nX-A: \r\n\r\n",
    "header-ows": b"GET / HTTP/1.1\r\n" + H + b"X-A: \t v  w \t\r\n\r\n",
    "header-empty-value": b"GET / HTTP/1.1\r\n" + H + b"X-A:\r\nX-B: \r\n\r\n",
    "header-obs-text": b"GET / HTTP/1.1\r\n" + H + b"X-A: caf\xe9 \xff\r\n\r\n",
    "header-tab-inside": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\tb\r\n\r\n",
    "header-name-token-chars": b"GET / HTTP/1.1\r\n" + H + b"X-!#$%&'*+.^`|~: v\r\n\r\n",
    "header-underscore": b"GET / HTTP/1.1\r\n" + H + b"X_A: v\r\n\r\n",
    "content-type": b"POST / HTTP/1.1\r\n" + H
    + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\nabc",
    "content-length": b"POST /u HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "content-length-zero": b"POST /u HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
    "content-length-leading-zeros": b"POST / HTTP/1.1\r\n" + H
    + b"Content-Length: 005\r\n\r\nhello",
    "content-length-binary-body": b"PUT / HTTP/1.1\r\n" + H
    + b"Content-Length: 6\r\n\r\n\x00\r\n\xff\n\r",
    "get-with-body": b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc",
    "chunked": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "chunked-uppercase-hex": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "chunked-leading-zeros": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n000\r\n\r\n",
    "chunked-coding-case": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "chunked-extensions": b"POST / HTTP/1.1\r\n" + H
    + b'Transfer-Encoding: chunked\r\n\r\n3;a=b;c="d e"\r\nabc\r\n0;last\r\n\r\n',
    "chunked-trailers": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
    "chunked-empty": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "expect-100-continue": b"POST / HTTP/1.1\r\n" + H
    + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    "pipelined": b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
    "pipelined-bodies": b"POST /1 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"
    + b"POST /2 HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    + b"GET /3 HTTP/1.1\r\n" + H + b"\r\n",
    "connection-close-stops": b"GET /1 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
    + b"GET /2 HTTP/1.1\r\n" + H + b"\r\n",
    "http10": b"GET /old HTTP/1.0\r\n\r\n",
    "http10-body": b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    "http10-stops": b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    "http10-keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\n" + H
    + b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(50)) + b"\r\n",
    "trace": b"TRACE / HTTP/1.1\r\n" + H + b"\r\n",
    "lowercase-names": b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz",
    # framing and smuggling (RFC 9112 6)
    "cl-and-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    + b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    "cl-and-te-chunked-body": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 30\r\n"
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /s HTTP/1.1\r\n" + H + b"\r\n",
    "cl-conflicting": b"POST / HTTP/1.1\r\n" + H
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-list-conflicting": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!",
    "cl-duplicate-equal": b"POST / HTTP/1.1\r\n" + H
    + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-list-equal": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-plus": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "cl-negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl-hex": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello",
    "cl-space-inside": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n0123456789",
    "cl-empty": b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n",
    "cl-decimal": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5.0\r\n\r\nhello",
    "cl-too-many-digits": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"1" * 25
    + b"\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-chunked-identity": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-chunked-vtab": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\x0b\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-chunked-twice": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-chunked-tab": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\t\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-two-headers": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-two-headers-tab": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\n"
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-empty": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    + b"GET /s HTTP/1.0\r\n\r\n",
    "chunk-size-invalid": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\ng\r\nabc\r\n0\r\n\r\n",
    "chunk-size-negative": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-leading-space": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-trailing-space": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk-size-empty": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 21 + b"\r\nabc\r\n0\r\n\r\n",
    "chunk-data-longer-than-size": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n",
    "chunk-missing-crlf": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc0\r\n\r\n",
    "chunk-lf-only-after-data": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    "chunk-ext-bare-semicolon": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3;\r\nabc\r\n0\r\n\r\n",
    "chunk-ext-unterminated-quote": b"POST / HTTP/1.1\r\n" + H
    + b'Transfer-Encoding: chunked\r\n\r\n3;a="b\r\nabc\r\n0\r\n\r\n',
    "chunked-no-last-chunk": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    "chunked-bad-trailer": b"POST / HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
    "cl-body-cut-off": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nhello",
    # field syntax (RFC 9112 5, RFC 9110 5.5)
    "ws-before-colon": b"POST / HTTP/1.1\r\n" + H + b"Content-Length : 0\r\n\r\n",
    "tab-before-colon": b"GET / HTTP/1.1\r\n" + H + b"X-A\t: v\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n  b\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\nX-B: c\r\n\r\n",
    "obs-fold-first-line": b"GET / HTTP/1.1\r\n X-A: a\r\n" + H + b"\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "cr-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "ctl-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\n" + H + b"X A: v\r\n\r\n",
    "nul-in-name": b"GET / HTTP/1.1\r\n" + H + b"X\x00A: v\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\n" + H + b": v\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\n" + H + b"X-A v\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: x\nX-A: 1\n\n",
    "bare-lf-mixed": b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
    "bare-cr-line-ends": b"GET / HTTP/1.1\rHost: x\r\r",
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two-hosts-http10": b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    # request line (RFC 9112 3)
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n",
    "double-space": b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
    "tab-separator": b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "nul-in-target": b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n",
    "fragment-in-target": b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\n" + H + b"\r\n",
    "method-bad-char": b"GE(T / HTTP/1.1\r\n" + H + b"\r\n",
    "http-version-lowercase": b"GET / http/1.1\r\n" + H + b"\r\n",
    "http-version-1.2": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "http-version-2.0": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http-version-11": b"GET / HTTP/11\r\n" + H + b"\r\n",
    "http-version-trailing-space": b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
    "http-09": b"GET /\r\n\r\n",
    "no-version": b"GET / \r\n" + H + b"\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


_TE_TAB = re.compile(rb"(?i)transfer-encoding:[^\n]*\t\r?\n")

#: Mismatches found and reported, not fixed yet: the corpus case that shows
#: each is an expected failure (strict: once fixed, it fails until removed
#: here), and the generated test leaves out the requests that match it.
KNOWN_MISMATCHES: dict[str, tuple[str, re.Pattern]] = {
    "double-space": (
        "a request line with two spaces between its parts is served (h11: 400; RFC 9112 3 "
        "allows lenient parsing but warns it enables smuggling)",
        re.compile(rb"(?:\A|\n)[!-~]+ {2,}[^ :]|(?:\A|\n)[!-~]+ [!-~]+ {2,}HTTP/"),
    ),
    "te-chunked-tab": (
        "'Transfer-Encoding: chunked<HTAB>' alone gets 400 (h11 takes the trailing HTAB as "
        "OWS, as greenpool does a trailing SP)",
        _TE_TAB,
    ),
}


def _corpus_params():
    for name in sorted(CORPUS):
        if name in KNOWN_MISMATCHES:
            reason = "known greenpool mismatch: " + KNOWN_MISMATCHES[name][0]
            yield pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
        else:
            yield name


@pytest.mark.parametrize("name", list(_corpus_params()))
def test_corpus_matches_h11(address, name):
    check(address, CORPUS[name])


@pytest.mark.parametrize("name", list(_corpus_params()))
def test_corpus_matches_h11_in_gunicorn_worker(worker_address, name):
    """greenpool's gunicorn worker serves with the same core: the same verdicts."""
    check(worker_address, CORPUS[name])


@pytest.mark.parametrize("name", list(_corpus_params()))
def test_corpus_in_pieces_matches_h11(address, name):
    """The same verdicts when the bytes arrive three at a time (the parser keeps its state)."""
    raw = CORPUS[name]
    check(address, raw, tuple(range(3, len(raw), 3)))


def _large_body_cases():
    """Bodies around and past a socket read (64 KiB), each followed by a pipelined GET."""
    after = b"GET /next HTTP/1.1\r\n" + H + b"\r\n"
    for size in (65535, 65537, 300_000):
        body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        yield pytest.param(
            b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % size + body + after,
            id=f"content-length-{size}",
        )
        sizes = [1, 7, 4096, 65536, 70000]
        chunks, at = [], 0
        while at < size:
            piece = body[at : at + sizes[len(chunks) % len(sizes)]]
            chunks.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
            at += len(piece)
        yield pytest.param(
            b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(chunks) + b"0\r\n\r\n" + after,
            id=f"chunked-{size}",
        )


@pytest.mark.parametrize("raw", list(_large_body_cases()))
def test_large_bodies_match_h11(address, raw):
    """Bodies that span several reads, whole and in pieces; the next request is not lost."""
    check(address, raw)
    check(address, raw, tuple(sorted({100, 65_000, 65_600, len(raw) - 30})))


# -- generated requests ---------------------------------------------------------

_PCHAR = st.sampled_from(
    [bytes([c]) for c in b"abcxyzABCXYZ0189-._~!$&'()*+,;=:@"]
    + [b"%%%02X" % i for i in (0x20, 0x25, 0x2F, 0x3F, 0x00, 0xE9, 0xFF)]
    + [b"%%%02x" % i for i in (0xC3, 0x41)]
)
_SEGMENT = st.lists(_PCHAR, max_size=6).map(b"".join)
_QUERY = st.lists(st.one_of(_PCHAR, st.sampled_from([b"/", b"?"])), max_size=8).map(b"".join)
_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]
_NAMES = [
    b"X-Foo", b"X-Bar", b"Accept", b"User-Agent", b"Cookie", b"Content-Type",
    b"Accept-Language", b"X-Forwarded-For", b"Cache-Control", b"If-None-Match", b"X-A1",
    b"x-weird!#$%&'*+.^`|~",
]
_VCHAR = [bytes([c]) for c in range(0x21, 0x7F)]
_VALUE = st.lists(
    st.one_of(
        st.sampled_from(_VCHAR),
        st.sampled_from([b" ", b"\t", b"\xe9", b"\x80"]),
    ),
    max_size=12,
).map(lambda parts: b"".join(parts).strip(b" \t"))


@st.composite
def targets(draw) -> bytes:
    path = b"/" + b"/".join(draw(st.lists(_SEGMENT, max_size=4)))
    if draw(st.booleans()):
        path += b"?" + draw(_QUERY)
    form = draw(st.sampled_from(["origin"] * 4 + ["absolute"]))
    if form == "absolute":
        host = draw(st.sampled_from([b"example.com", b"example.com:8080", b"127.0.0.1", b"x"]))
        scheme = draw(st.sampled_from([b"http", b"https", b"HTTP"]))
        path = scheme + b"://" + host + path
    return path


def _case(name: bytes, style: str) -> bytes:
    return {"lower": name.lower(), "upper": name.upper(), "same": name}[style]


@dataclass
class Msg:
    """A request as parts, rendered to bytes last, so mutations can reach every part."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[list[bytes]]  # [name, separator, value]
    body: bytes = b""
    chunked: bool = False
    chunks: list[list[bytes]] = field(default_factory=list)  # [size, ext, data, end]
    last_chunk: bytes = b"0"
    trailers: list[bytes] = field(default_factory=list)
    eol: bytes = b"\r\n"
    prefix: bytes = b""
    request_line: bytes | None = None
    cut: int | None = None

    def render(self) -> bytes:
        line = self.request_line
        if line is None:
            line = self.method + b" " + self.target + b" " + self.version
        head = self.prefix + line + self.eol
        head += b"".join(n + sep + v + self.eol for n, sep, v in self.headers) + self.eol
        if self.chunked:
            body = b"".join(s + e + b"\r\n" + d + end for s, e, d, end in self.chunks)
            body += self.last_chunk + b"\r\n" + b"".join(t + b"\r\n" for t in self.trailers)
            body += b"\r\n"
        else:
            body = self.body
        raw = head + body
        return raw if self.cut is None else raw[: self.cut]

    def header(self, name: bytes) -> list[bytes] | None:
        for h in self.headers:
            if h[0].lower() == name.lower():
                return h
        return None

    def make_chunked(self, draw) -> None:
        if self.chunked:
            return
        self.headers = [h for h in self.headers if h[0].lower() != b"content-length"]
        self.headers.append([b"Transfer-Encoding", b": ", b"chunked"])
        self.chunked = True
        body = self.body or b"abc"
        self.chunks = [[b"%x" % len(body), b"", body, b"\r\n"]]

    def some_chunk(self, draw) -> list[bytes]:
        self.make_chunked(draw)
        if not self.chunks:
            self.chunks.append([b"3", b"", b"abc", b"\r\n"])
        return self.chunks[draw(st.integers(0, len(self.chunks) - 1))]


_SEP = st.sampled_from([b": ", b": ", b":", b":\t", b":  "])
_OWS = st.sampled_from([b"", b"", b" ", b"\t "])
# No whitespace before ";": RFC 9112 7.1.1 allows it (BWS), h11 refuses it.
_EXT = st.sampled_from([b"", b"", b";a", b";a=b", b';q="x y"', b";a=1;b", b"; a = b"])


@st.composite
def requests(draw) -> Msg:
    """A well-formed HTTP/1.x request."""
    version = draw(st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0"]))
    method = draw(st.sampled_from(_METHODS))
    style = draw(st.sampled_from(["lower", "upper", "same"]))
    fields = draw(st.lists(st.tuples(st.sampled_from(_NAMES), _VALUE, _SEP, _OWS), max_size=6))
    headers = [[_case(name, style), sep, value + ows] for name, value, sep, ows in fields]
    if version == b"HTTP/1.1" or draw(st.booleans()):
        host = [b"Host", b": ", draw(st.sampled_from([b"example.com", b"x:80", b"127.0.0.1"]))]
        headers.insert(draw(st.integers(0, len(headers))), host)
    connection = draw(st.sampled_from(
        [None, None, None, b"close", b"keep-alive", b"Close", b"keep-alive, close", b"TE"]
    ))
    if connection:
        headers.append([b"Connection", b": ", connection])
    msg = Msg(method, draw(targets()), version, headers)
    framing = draw(st.sampled_from(["none", "none", "length", "chunked"]))
    msg.body = draw(st.binary(max_size=200)) if framing != "none" else b""
    if framing == "length" or (framing == "chunked" and version == b"HTTP/1.0"):
        msg.headers.append([b"Content-Length", b": ", b"%d" % len(msg.body)])
    elif framing == "chunked":
        msg.headers.append([b"Transfer-Encoding", b": ", b"chunked"])
        msg.chunked = True
        cuts = sorted(draw(st.lists(st.integers(0, len(msg.body)), max_size=3)))
        pieces = [msg.body[a:b] for a, b in zip([0, *cuts], [*cuts, len(msg.body)], strict=True)]
        for piece in filter(None, pieces):
            size = b"%x" % len(piece)
            size = draw(st.sampled_from([size, size.upper(), b"0" + size]))
            msg.chunks.append([size, draw(_EXT), piece, b"\r\n"])
        msg.last_chunk = draw(st.sampled_from([b"0", b"000", b"0;end"]))
        msg.trailers = draw(st.lists(st.sampled_from([b"X-T: 1", b"X-Sum: abc"]), max_size=2))
    if msg.body and version == b"HTTP/1.1" and draw(st.integers(0, 5)) == 0:
        msg.headers.append([b"Expect", b": ", b"100-continue"])
    return msg


def _pick_header(draw, msg: Msg) -> list[bytes]:
    if not msg.headers:
        msg.headers.append([b"X-Foo", b": ", b"bar"])
    return msg.headers[draw(st.integers(0, len(msg.headers) - 1))]


def m_cl_te(draw, msg):
    msg.make_chunked(draw)
    value = draw(st.sampled_from([b"0", b"3", b"%d" % len(msg.render()), b"100"]))
    at = draw(st.integers(0, len(msg.headers)))
    msg.headers.insert(at, [b"Content-Length", b": ", value])


def m_cl_duplicate(draw, msg):
    if msg.chunked or msg.header(b"content-length") is None:
        msg.chunked = False
        msg.headers = [h for h in msg.headers if h[0].lower() != b"transfer-encoding"]
        msg.headers.append([b"Content-Length", b": ", b"%d" % len(msg.body)])
    n = len(msg.body)
    other = draw(st.sampled_from([b"%d" % n, b"%d" % (n + 1), b"%d, %d" % (n, n),
                                  b"%d,%d" % (n, n + 1), b"0"]))
    msg.headers.insert(draw(st.integers(0, len(msg.headers))), [b"Content-Length", b": ", other])


def m_cl_value(draw, msg):
    if msg.header(b"content-length") is None:
        msg.chunked = False
        msg.headers = [h for h in msg.headers if h[0].lower() != b"transfer-encoding"]
        msg.headers.append([b"Content-Length", b": ", b""])
    n = len(msg.body)
    msg.header(b"content-length")[2] = draw(st.sampled_from([
        b"+%d" % n, b"-%d" % n, b"0x%x" % n, b"%d %d" % (n, n), b"", b"%d.0" % n, b"%d," % n,
        b"9" * 25, b"0%d" % n, b"%d\x00" % n, b"\xef\xbc\x95",
    ]))


def m_ws_before_colon(draw, msg):
    _pick_header(draw, msg)[1] = draw(st.sampled_from([b" : ", b"\t: ", b"  :"]))


def m_obs_fold(draw, msg):
    h = _pick_header(draw, msg)
    fold = draw(st.sampled_from([b"\r\n ", b"\r\n\t", b"\r\n   "]))
    h[2] = h[2] + fold + draw(st.sampled_from([b"x", b"more text", b""]))


def m_ctl_in_value(draw, msg):
    h = _pick_header(draw, msg)
    ctl = draw(st.sampled_from([b"\x00", b"\r", b"\x01", b"\x7f", b"\x0b", b"\x0c", b"\x1b"]))
    at = draw(st.integers(0, len(h[2])))
    h[2] = h[2][:at] + ctl + h[2][at:] + b"x"


def m_transfer_coding(draw, msg):
    msg.make_chunked(draw)
    coding = draw(st.sampled_from([
        b"xchunked", b"chunked, identity", b"identity", b"gzip, chunked", b"chunked\x0b",
        b"chunked, chunked", b"Chunked", b"chunked;q=1", b"", b"identity, chunked", b"chunke",
        b"\tchunked", b"chunked\t",
    ]))
    msg.header(b"transfer-encoding")[2] = coding
    if draw(st.booleans()):
        msg.headers.append([b"Transfer-Encoding", b": ", b"chunked"])


def m_chunk_size(draw, msg):
    chunk = msg.some_chunk(draw)
    n = len(chunk[2])
    chunk[0] = draw(st.sampled_from([
        b"g", b"-%x" % n, b"0x%x" % n, b" %x" % n, b"%x " % n, b"", b"1" * 25,
        b"%x" % (n + 1), b"%x" % (n - 1), b"+%x" % n, b"%x\t" % n,
    ]))


def m_chunk_framing(draw, msg):
    what = draw(st.sampled_from(["end", "ext", "last", "trailer"]))
    chunk = msg.some_chunk(draw)
    if what == "end":
        chunk[3] = draw(st.sampled_from([b"", b"\n", b"\r", b"XX\r\n"]))
    elif what == "ext":
        chunk[1] = draw(st.sampled_from([b";", b"; a", b';a="b', b";a b", b";\x00", b";=b",
                                         b";a=", b"\x00"]))
    elif what == "last":
        msg.last_chunk = draw(st.sampled_from([b"00x", b"", b"0 ", b"O"]))
    else:
        msg.trailers.append(draw(st.sampled_from([b"Bad Trailer", b" X: folded", b"X : y",
                                                  b"Content-Length: 5", b"X: a\x00b"])))


def m_bare_lf(draw, msg):
    msg.eol = b"\n"


def m_version(draw, msg):
    msg.version = draw(st.sampled_from([
        b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 ",
        b"HTTP/11", b"HTTP/1", b"HTTP/1.1x", b"HTTPS/1.1",
    ]))


def m_request_line(draw, msg):
    msg.request_line = draw(st.sampled_from([
        msg.method + b"  " + msg.target + b" HTTP/1.1",
        msg.method + b"\t" + msg.target + b" HTTP/1.1",
        msg.method + b" " + msg.target,
        msg.method.lower() + b" " + msg.target + b" HTTP/1.1",
        b"FOO " + msg.target + b" HTTP/1.1",
        b"GE(T " + msg.target + b" HTTP/1.1",
        msg.method + b" /a b HTTP/1.1",
        msg.method + b" /a\x00b HTTP/1.1",
        msg.method + b" /a#frag HTTP/1.1",
        msg.method + b" * HTTP/1.1",
        msg.method + b" a/b HTTP/1.1",
        msg.method + b" /\x7f HTTP/1.1",
        msg.method + b" /\xff HTTP/1.1",
        msg.method + b" /a\"<>{} HTTP/1.1",
        msg.method + b" http://u:p@h/x HTTP/1.1",
        msg.method + b" ftp://h/x HTTP/1.1",
        msg.method + b" /%zz HTTP/1.1",
        b" " + msg.method + b" / HTTP/1.1",
    ]))
    msg.version = b"HTTP/1.1"


def m_host(draw, msg):
    hosts = [h for h in msg.headers if h[0].lower() == b"host"]
    what = draw(st.sampled_from(["drop", "double", "empty"]))
    if what == "drop":
        msg.headers = [h for h in msg.headers if h[0].lower() != b"host"]
    elif what == "double":
        msg.headers.append([b"Host", b": ", b"other.example"])
    elif hosts:
        hosts[0][2] = b""


def m_header_name(draw, msg):
    line = draw(st.sampled_from([
        [b"X A", b": ", b"v"], [b"X@A", b": ", b"v"], [b"", b": ", b"v"], [b"X\x00A", b": ", b"v"],
        [b"\xffX", b": ", b"v"], [b"X-A v", b"", b""], [b" X-A", b": ", b"v"],
        [b"X_A", b": ", b"under"], [b"X-(A)", b": ", b"v"],
    ]))
    msg.headers.insert(draw(st.integers(0, len(msg.headers))), line)


def m_leading_crlf(draw, msg):
    msg.prefix = draw(st.sampled_from([b"\r\n", b"\r\n\r\n", b"\n"]))


def m_truncate(draw, msg):
    msg.cut = draw(st.integers(1, max(1, len(msg.render()) - 1)))


def m_http10_te(draw, msg):
    msg.version = b"HTTP/1.0"
    msg.make_chunked(draw)


MUTATIONS = [
    m_cl_te, m_cl_duplicate, m_cl_value, m_ws_before_colon, m_obs_fold, m_ctl_in_value,
    m_transfer_coding, m_chunk_size, m_chunk_framing, m_bare_lf, m_version, m_request_line,
    m_host, m_header_name, m_leading_crlf, m_truncate, m_http10_te,
]


@st.composite
def hostile_requests(draw) -> Msg:
    msg = draw(requests())
    mutation = draw(st.sampled_from(MUTATIONS))
    note(f"mutation: {mutation.__name__}")
    mutation(draw, msg)
    return msg


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(st.one_of(requests(), hostile_requests()), min_size=1, max_size=3),
    st.lists(st.integers(1, 10_000), max_size=3),
)
def test_generated_requests_match_h11(address, messages, cut_points):
    raw = b"".join(m.render() for m in messages)
    note(f"raw: {raw!r}")
    assume(not any(pattern.search(raw) for _, pattern in KNOWN_MISMATCHES.values()))
    cuts = tuple(sorted({c % len(raw) for c in cut_points} - {0}))
    check(address, raw, cuts)


def test_known_mismatch_patterns_match_their_cases():
    """Each known mismatch's filter matches its own corpus case (else it filters nothing)."""
    for name, (_, pattern) in KNOWN_MISMATCHES.items():
        assert pattern.search(CORPUS[name]), name
    assert not any(p.search(CORPUS["get"] + CORPUS["chunked"]) for _, p in
                   KNOWN_MISMATCHES.values())


# -- the harness itself ----------------------------------------------------------


def test_h11_verdicts_on_known_cases():
    """The reference side reads what the module docstring says it does."""
    assert h11_verdict(CORPUS["get"]).end == "end"
    assert h11_verdict(CORPUS["cl-plus"]).end == "reject"
    assert h11_verdict(CORPUS["te-xchunked"]).end == "reject"
    assert h11_verdict(CORPUS["cl-body-cut-off"]).end == "incomplete"
    assert h11_verdict(CORPUS["connection-close-stops"]).end == "closed"
    smuggle = h11_verdict(CORPUS["cl-and-te"])
    assert smuggle.requests[0].must_reject and smuggle.requests[0].close_after
    assert "obs-fold" in h11_verdict(CORPUS["obs-fold"]).requests[0].may_reject
    assert "bare LF line ends" in h11_verdict(CORPUS["bare-lf"]).requests[0].may_reject
    assert h11_verdict(CORPUS["leading-crlf"]).requests[0].may_reject == ["leading empty lines"]
    assert not h11_verdict(CORPUS["chunked-extensions"]).requests[0].may_reject
    piped = h11_verdict(CORPUS["pipelined-bodies"])
    assert [e.target for e in piped.requests] == [b"/1", b"/2", b"/3"]
    assert [e.body for e in piped.requests] == [b"abc", b"x", b""]


def test_compare_request_spots_differences():
    """A comparison that found nothing wrong with anything would be a stub."""
    expected = h11_verdict(CORPUS["repeated-header"]).requests[0]
    seen = {
        "method": "GET", "raw_target": "/", "script_name": "", "path_info": "/", "query": "",
        "protocol": "HTTP/1.1", "body": "",
        "headers": {"HTTP_HOST": "example.com", "HTTP_X_A": "1,2", "HTTP_X_B": "q"},
    }
    assert compare_request(expected, seen) == []
    seen["headers"]["HTTP_X_A"] = "1"
    seen["headers"]["HTTP_X_EVIL"] = "1"
    seen["path_info"] = "/x"
    seen["body"] = base64.b64encode(b"z").decode()
    problems = compare_request(expected, seen)
    assert len(problems) == 4, problems
