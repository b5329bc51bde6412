"""Response heads: checking what the app gives ``start_response``, the ``Date`` header, files.

Whatever reaches the client is what the app sent, framed by the server: a
status or header with CR, LF or NUL in it, or outside latin-1, is refused
(the app gets ``ValueError``, the client a 500) instead of being written.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

__all__ = ["HEADS", "FileWrapper", "check_headers", "check_status", "date_header", "head_entry",
           "header_entry", "status_entry"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"[1-9][0-9][0-9] [^\x00-\x08\x0a-\x1f\x7f]*\Z")

_date_cache: list = [0, b""]


def date_header() -> bytes:
    """``Date: ...\\r\\n`` for now, formatted once per second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[1] = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        _date_cache[0] = now
    return _date_cache[1]


def check_status(status) -> int:
    """The status code of a PEP 3333 status string such as ``"200 OK"``; ValueError if bad."""
    if type(status) is not str:
        raise TypeError(f"WSGI status must be a str, got {type(status).__name__}")
    if not _STATUS.match(status):
        raise ValueError(f"invalid WSGI status {status!r}: expected '200 OK' (3 digits, a "
                         "space, a reason without control characters)")
    try:
        status.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"WSGI status {status!r} is not latin-1") from None
    return int(status[:3])


def check_headers(headers) -> None:
    """Refuse response headers that are not (str, str) tuples of a token and a clean value."""
    if type(headers) is not list:
        raise TypeError(f"WSGI response headers must be a list, got {type(headers).__name__}")
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"WSGI response header {item!r} must be a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"WSGI response header {item!r}: name and value must be str")
        if not _TOKEN.match(name):
            raise ValueError(f"invalid response header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"response header {name!r} has a control character (CR, LF, NUL...)"
                             " in its value")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"response header {name!r} value {value!r} is not latin-1") from None


#: What :func:`header_entry` says a header is: framing the server owns or a plain one.
PLAIN, CONTENT_LENGTH, CONNECTION, HOP_BY_HOP, DATE = range(5)
_KINDS = {"content-length": CONTENT_LENGTH, "connection": CONNECTION,
          "transfer-encoding": HOP_BY_HOP, "keep-alive": HOP_BY_HOP, "date": DATE}
_CACHE_SIZE = 1024
_status_cache: dict = {}
#: (name, value) -> header_entry(): the checked, encoded header lines, bounded.
HEADER_LINES: dict = {}
#: (status, tuple(headers)) -> head_entry(): whole checked heads, bounded.
HEADS: dict = {}


def status_entry(status) -> tuple[bytes, int]:
    """``(b"HTTP/1.1 <status>\\r\\n", code)`` for a checked status; cached per string."""
    try:
        entry = _status_cache.get(status)
    except TypeError:  # unhashable: not a str
        entry = None
    if entry is None:
        code = check_status(status)
        entry = (b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n", code)
        if len(_status_cache) >= _CACHE_SIZE:
            _status_cache.clear()
        _status_cache[status] = entry
    return entry


def header_entry(item) -> tuple[bytes, int, object]:
    """``(line, kind, value)`` for a checked ``(name, value)`` header; cached per pair.

    ``line`` is the encoded ``Name: value\\r\\n``; ``kind`` one of PLAIN,
    CONTENT_LENGTH (``value`` is the int), CONNECTION (``value``: whether it
    says close), HOP_BY_HOP (dropped: the server frames), DATE.
    """
    try:
        entry = HEADER_LINES.get(item)
    except TypeError:  # unhashable: not a tuple of str
        entry = None
    if entry is not None:
        return entry
    check_headers([item])
    name, value = item
    kind = _KINDS.get(name.lower(), PLAIN)
    parsed: object = None
    if kind == CONTENT_LENGTH:
        if not value.isdigit() or not value.isascii():
            raise ValueError(f"invalid Content-Length {value!r} from the WSGI app")
        parsed = int(value)
    elif kind == CONNECTION:
        parsed = "close" in value.lower()
    entry = (f"{name}: {value}\r\n".encode("latin-1"), kind, parsed)
    if len(HEADER_LINES) >= _CACHE_SIZE:
        HEADER_LINES.clear()
    HEADER_LINES[item] = entry
    return entry


def head_entry(status, headers) -> tuple[bytes, int, int | None, bool, bool]:
    """``(lines, code, content_length, close, has_date)`` for what the app gave start_response.

    ``lines`` is the status line and the app's headers, encoded, without the
    hop-by-hop ones the server owns (``Connection``, ``Transfer-Encoding``,
    ``Keep-Alive``); ``close`` says whether the app asked for
    ``Connection: close``. Cached per (status, headers): most apps answer
    with a handful of distinct heads.
    """
    key: tuple | None
    try:
        key = (status, tuple(headers))
        entry = HEADS.get(key)
    except TypeError:  # unhashable parts: checked below, not cached
        key = entry = None
    if entry is not None:
        return entry
    if type(headers) is not list:
        raise TypeError(f"WSGI response headers must be a list, got {type(headers).__name__}")
    line, code = status_entry(status)
    parts = [line]
    length: int | None = None
    close = False
    has_date = False
    for item in headers:
        header, kind, value = header_entry(item)
        if kind == CONTENT_LENGTH:
            length = value  # type: ignore[assignment]  # header_entry gives the int
        elif kind == CONNECTION:
            close = close or bool(value)
            continue
        elif kind == HOP_BY_HOP:
            continue  # the server frames the response
        elif kind == DATE:
            has_date = True
        parts.append(header)
    entry = (b"".join(parts), code, length, close, has_date)
    if key is not None:
        if len(HEADS) >= _CACHE_SIZE:
            HEADS.clear()
        HEADS[key] = entry
    return entry


class FileWrapper:
    """``wsgi.file_wrapper``: an iterable over a file; the server may send it with ``sendfile``.

    Iterating reads ``blksize`` bytes at a time (what a TLS connection, or
    any socket where ``os.sendfile`` does not apply, gets). ``close()``
    closes the file, as PEP 3333 asks.
    """

    __slots__ = ("filelike", "blksize")

    def __init__(self, filelike, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        read = self.filelike.read
        size = self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
