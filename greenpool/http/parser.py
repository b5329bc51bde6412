"""Request parsing: llhttp (httptools) plus the RFC 9112 checks it leaves to its user.

Free of I/O, like h11: :class:`RequestParser` is fed bytes and queues
:class:`Request` heads; the connection decides when to read more. llhttp in
its default (strict) mode already refuses, with a parse error (400):
``Content-Length`` together with ``Transfer-Encoding``, duplicate or
non-digit ``Content-Length`` (``+5``, ``1, 1``), whitespace before the colon,
CR/LF/NUL and other control bytes in values, obs-fold, bare LF line ends,
invalid chunk framing, a second ``Transfer-Encoding`` header. On top of it,
this module refuses what llhttp lets through:

* a transfer coding other than one final ``chunked`` (``gzip, chunked``,
  ``xchunked``, a second ``Transfer-Encoding`` field): 501 (RFC 9112 6.1);
* ``Transfer-Encoding`` in an HTTP/1.0 request: 400 (faulty framing, 6.1);
* an HTTP/1.1 request without ``Host``, any request with two: 400 (3.2);
* HTTP/0.9 and HTTP/2.0, the other versions llhttp parses: 505 (it
  refuses other version strings, ``HTTP/1.2``, ``http/1.1``, itself: 400);
* ``CONNECT``: 501 (a WSGI server cannot tunnel); an ``Upgrade`` request
  that declares a body: 400 (llhttp would not frame that body);
* an upgrade request (``Upgrade`` plus ``Connection: upgrade``) is the last
  request parsed on its connection: the bytes after its head are kept in
  :attr:`RequestParser.rest` for the new protocol, not parsed as HTTP (an
  ``Upgrade`` in an HTTP/1.0 request is not an upgrade, RFC 9110 7.8, but
  nothing after it is parsed either);
* the limits of :class:`Limits`: 414 (request line), 431 (a header field,
  the header block), 400 (number of headers), 413 (``Content-Length`` over
  ``max_body_size``, checked by the connection before the app runs).

Any refusal leaves the parser broken: nothing after it on the connection is
parsed, so no byte a Content-Length-framing proxy counts as part of a
refused request is ever answered as a request of its own.

Where llhttp differs from h11 (the strict reference) and is kept: a request
line with runs of spaces between its parts is accepted (RFC 9112 3 allows
it); only the methods llhttp knows are accepted (others: 400); a value
ending in HTAB on ``Transfer-Encoding`` is refused (400). Trailer fields of a
chunked body are read and dropped, never shown to the app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httptools
from httptools.parser.errors import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
)

__all__ = ["SIMPLE_HEAD", "HTTPError", "Limits", "Request", "RequestParser", "simple_request"]


@dataclass(frozen=True)
class Limits:
    """How much of a request head (and body) the server takes before refusing it.

    ``request_line``: bytes of method, target and version (414 above it);
    ``header_count``: header fields (400 above it); ``header_field``: bytes of
    one field, name and value (431; None: only the block limit applies);
    ``header_block``: bytes of all names and values (431); ``max_body_size``:
    bytes of body (413; None: no limit, the app bounds ``wsgi.input``).
    """

    request_line: int = 8190
    header_count: int = 100
    header_field: int | None = None
    header_block: int = 64 * 1024
    max_body_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("request_line", "header_count", "header_field", "header_block",
                     "max_body_size"):
            value = getattr(self, name)
            if value is None and name in ("header_field", "max_body_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Limits.{name} must be an int (bytes or a count)"
                                f"{' or None' if name in ('header_field', 'max_body_size') else ''}"
                                f", got {type(value).__name__}")
            if value < (0 if name == "max_body_size" else 1):
                raise ValueError(f"Limits.{name} must be positive, got {value}")


class HTTPError(Exception):
    """A request refused by the server: ``status`` is what the client gets; always closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _BodyOverLimit(Exception):
    """Raised in on_body to stop llhttp once a chunked body passed max_body_size."""


class Request:
    """One parsed request head, and the body bytes llhttp has handed over so far.

    ``body`` holds chunks not yet read by the app (a list: an empty deque
    costs ~700 bytes, kept by every idle keep-alive connection when it was
    one); ``complete`` is True once
    the whole message (body included) was parsed; ``exceeded`` once a
    chunked body passed ``max_body_size`` (the excess is never kept);
    ``error`` when the body stopped being parseable (bad chunks, the limit);
    ``upgrade``: an HTTP/1.1 upgrade request (``Upgrade`` and ``Connection:
    upgrade``, no body), whose connection the app may take over.
    """

    __slots__ = (
        "method", "target", "version", "headers", "keep_alive", "content_length", "chunked",
        "expect_continue", "upgrade", "head_done", "complete", "body", "received", "exceeded",
        "host_count", "header_bytes", "error",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade = False
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []
        self.received = 0
        self.exceeded = False
        self.host_count = 0
        self.header_bytes = 0
        #: Why the rest of the body cannot be parsed (set with a refusal mid-body).
        self.error: HTTPError | None = None


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_UPGRADE = b"upgrade"
_TE = b"transfer-encoding"
_CL = b"content-length"
_HOST = b"host"
_EXPECT = b"expect"
_OWS = b" \t"
_SPECIAL = frozenset((_TE, _CL, _HOST, _EXPECT, _UPGRADE))


#: The head of a plain bodiless request, matched whole by the connection's fast
#: path before llhttp: a method of ``_METHODS``, an origin-form target of RFC
#: 3986 path and query characters (no fragment), ``HTTP/1.1`` or ``HTTP/1.0``,
#: single spaces, header fields of a token, ``:`` and visible ASCII, SP or HTAB
#: only, CRLF line ends. Every head it matches is one llhttp's strict mode
#: accepts with the same method, target, version and fields; anything else
#: (and any field that frames a body or changes the connection:
#: ``Content-Length``, ``Transfer-Encoding``, ``Upgrade``, ``Expect``,
#: ``Proxy-Connection``, a ``Connection`` other than one ``close`` or
#: ``keep-alive``, a missing or second ``Host``) goes through llhttp and this
#: module's checks. Linear: no part can match where another does.
#: Its groups: the request line, the header fields (each with its CRLF).
SIMPLE_HEAD = re.compile(
    rb"((?:GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) /[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*"
    rb" HTTP/1\.[01])\r\n((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)

#: A valid ``Host`` field value (RFC 9112 3.2: ``uri-host [":" port]``, RFC 3986's
#: IP-literal or reg-name; empty is allowed): anything else is a 400. Routing and
#: caches key on it, so a value a proxy would read differently is refused.
HOST_VALUE = re.compile(
    rb"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?"
)

_SIMPLE_REQUESTS: dict[tuple[bytes, bool, bool], Request] = {}


def simple_request(method: bytes, http11: bool, keep_alive: bool) -> Request:
    """The complete, bodiless :class:`Request` the fast path serves a simple head as.

    One shared object per (method, version, keep-alive): nothing mutates a
    complete request with an empty body (its target and headers are not
    kept: the fast path builds the environ from the head itself).
    """
    key = (method, http11, keep_alive)
    req = _SIMPLE_REQUESTS.get(key)
    if req is None:
        req = Request()
        req.method = _METHODS[method]
        req.version = "1.1" if http11 else "1.0"
        req.keep_alive = keep_alive
        req.head_done = req.complete = True
        _SIMPLE_REQUESTS[key] = req
    return req


class RequestParser:
    """Feed bytes with :meth:`feed`; complete heads queue up in :attr:`ready`.

    ``ready`` is a list, taken in order and cleared by the consumer (an empty
    deque would cost ~700 bytes per idle connection). ``current`` is the
    request being parsed, None between requests (so that an idle connection
    does not keep its last request alive). After a refusal, :attr:`error`
    holds the :class:`HTTPError` for the request that caused it (requests
    queued before it are sound) and :meth:`feed` refuses more data.
    """

    __slots__ = ("_parser", "_limits", "ready", "current", "error", "_pending", "upgraded",
                 "rest", "_max_count", "_max_field", "_max_block")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        # on_header's limits, as one comparison each (a field's limit counts ": ")
        self._max_count = limits.header_count
        self._max_field = limits.header_field - 1 if limits.header_field else 2**63
        self._max_block = limits.header_block
        self._parser = httptools.HttpRequestParser(self)
        self.ready: list[Request] = []
        # None between requests (typed as Request: every callback runs inside one)
        self.current: Request = None  # type: ignore[assignment]
        self.error: HTTPError | None = None
        self._pending = 0  # bytes of the request head received so far
        #: True once llhttp stopped after an upgrade request; ``rest``: the
        #: bytes fed after that request's head, which are not HTTP.
        self.upgraded = False
        self.rest = b""

    @property
    def in_head(self) -> bool:
        """True while part of a request head has arrived but not all of it."""
        cur = self.current
        return cur is not None and not cur.head_done

    def feed(self, data: bytes) -> None:
        """Parse ``data``; refusals are recorded in :attr:`error`, never raised."""
        if self.error is not None or self.upgraded:
            return
        cur = self.current
        was_in_head = cur is not None and not cur.head_done
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as exc:
            # llhttp stops after an upgrade request (Upgrade + Connection:
            # upgrade); what follows its head belongs to the other protocol
            # (the offset is where it starts in ``data``): kept for whoever
            # takes the connection, never parsed as HTTP.
            self.upgraded = True
            self.rest = data[exc.args[0]:] if exc.args else b""
            return
        except HttpParserError as exc:
            self._failed(exc)
            return
        cur = self.current
        if cur is not None and not cur.head_done:
            # A head that trickles in without completing a field (a value that
            # never ends) is bounded here; counted from the first feed that
            # starts inside it, so body bytes before it are not counted.
            if was_in_head:
                self._pending += len(data)
            limits = self._limits
            if self._pending > limits.header_block + limits.request_line + 4096:
                self.error = HTTPError(431, "request head too large")

    def _failed(self, exc: Exception) -> None:
        """Turn llhttp's error (or a callback's refusal) into :attr:`error`."""
        if isinstance(exc, HttpParserCallbackError):
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                error = cause
            elif isinstance(cause, _BodyOverLimit):
                error = HTTPError(413, f"request body over {self._limits.max_body_size} bytes")
            else:  # a bug in a callback: refuse rather than guess the framing
                error = HTTPError(400, f"invalid request ({cause!r})")
        elif isinstance(exc, HttpParserInvalidMethodError):
            error = HTTPError(400, "invalid request method")
        else:
            reason = str(exc)
            if "overflow" in reason and "Content-Length" in reason:
                error = HTTPError(413, "Content-Length too large")
            else:
                error = HTTPError(400, reason or "malformed request")
        self.error = error
        cur = self.current
        if cur is not None and cur.head_done and not cur.complete:
            cur.error = error

    # -- llhttp callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()
        self._pending = 0

    def on_url(self, url: bytes) -> None:
        req = self.current
        req.target += url
        if len(req.target) + 16 > self._limits.request_line:
            raise HTTPError(414, f"request line over {self._limits.request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        if req.head_done:
            return  # a trailer field of a chunked body: not passed to the app
        value = value.rstrip(_OWS)
        headers = req.headers
        size = len(name) + len(value)
        total = req.header_bytes = req.header_bytes + size
        if len(headers) >= self._max_count or size >= self._max_field or total > self._max_block:
            self._too_many_or_large(req, size)
        lname = name.lower()
        if lname in _SPECIAL:
            if lname == _TE:
                if value.lower() != b"chunked" or req.chunked:  # a second one: chunked, chunked
                    raise HTTPError(501, "transfer coding other than one final 'chunked'")
                req.chunked = True
            elif lname == _CL:
                req.content_length = int(value)  # digits only: llhttp checked them
            elif lname == _HOST:
                req.host_count += 1
                if HOST_VALUE.fullmatch(value) is None:
                    raise HTTPError(400, "invalid Host header: not uri-host [':' port]")
            elif lname == _EXPECT:
                req.expect_continue = value.lower() == b"100-continue"
            else:  # Upgrade: whether llhttp stops after this request is asked at its end
                req.upgrade = True
        headers.append((name, value))

    def _too_many_or_large(self, req: Request, size: int) -> None:
        limits = self._limits
        if len(req.headers) >= limits.header_count:
            raise HTTPError(400, f"more than {limits.header_count} header fields")
        if limits.header_field is not None and size + 2 > limits.header_field:
            raise HTTPError(431, f"a header field over {limits.header_field} bytes")
        if req.header_bytes > limits.header_block:
            raise HTTPError(431, f"header fields over {limits.header_block} bytes")

    def on_headers_complete(self) -> None:
        req = self.current
        parser = self._parser
        req.head_done = True
        version = req.version = parser.get_http_version()
        raw_method = parser.get_method()
        req.method = method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        req.keep_alive = parser.should_keep_alive()
        if version != "1.1":
            if version != "1.0":
                raise HTTPError(505, f"HTTP/{version} is not supported")
            if req.chunked:
                raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
            req.expect_continue = False  # never a 100 to an HTTP/1.0 client (RFC 9110 10.1.1)
        elif req.host_count != 1:
            raise HTTPError(400, "an HTTP/1.1 request needs one Host header")
        if req.host_count > 1:
            raise HTTPError(400, "more than one Host header")
        if method == "CONNECT":
            raise HTTPError(501, "CONNECT is not supported")
        if req.upgrade:
            if parser.should_upgrade():
                if req.chunked or req.content_length:
                    raise HTTPError(400, "an Upgrade request with a body")
                # llhttp parses nothing after it: the connection is the new
                # protocol's (101) or closes; never another HTTP request.
                req.keep_alive = False
                # RFC 9110 7.8: an Upgrade in an HTTP/1.0 request is ignored.
                req.upgrade = version == "1.1"
            else:  # Upgrade without "Connection: upgrade": an ordinary request
                req.upgrade = False
        limit = self._limits.max_body_size
        if limit is not None and req.content_length is not None and req.content_length > limit:
            raise HTTPError(413, f"Content-Length {req.content_length} over max_body_size {limit}")
        self.ready.append(req)

    def on_body(self, data: bytes) -> None:
        req = self.current
        limit = self._limits.max_body_size
        received = req.received + len(data)
        if limit is not None and received > limit:
            room = limit - req.received
            if room > 0:
                req.body.append(data[:room])
                req.received = limit
            req.exceeded = True
            raise _BodyOverLimit
        req.received = received
        req.body.append(data)

    def on_message_complete(self) -> None:
        self.current.complete = True
        self.current = None  # type: ignore[assignment]  # the request is the consumer's now
