"""``wsgi.input``: the request body, read from the connection only as the app asks for it.

The body is never read ahead of the app (a slow upload holds one socket, not
memory), and never past ``max_body_size``: llhttp is stopped at the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from greenpool.http.parser import Request

__all__ = ["BodyTooLarge", "IncompleteBody", "Input", "InvalidBody"]


class BodyTooLarge(Exception):
    """A chunked request body passed the server's ``max_body_size``.

    Raised by ``wsgi.input`` reads; left to propagate, it becomes a ``413``.
    The rest of the body is not read, so the connection is closed after it.
    """


class InvalidBody(ValueError):
    """The request body is not valid chunked encoding (left to propagate: a 400)."""


class IncompleteBody(ConnectionError):
    """The client closed the connection before sending the whole body."""


class Input:
    """A file-like, read-only request body (PEP 3333 ``wsgi.input``).

    ``pull()`` reads once from the connection and feeds the parser (which
    appends to ``request.body``), raising :class:`IncompleteBody` when the
    client is gone. A body the parser refused raises :class:`BodyTooLarge`
    (over ``max_body_size``) or :class:`InvalidBody` once what came before
    the refusal has been read.
    """

    __slots__ = ("_req", "_pull", "_first", "_pos")

    def __init__(self, request: Request, pull: Callable[[], None]) -> None:
        self._req = request
        self._pull = pull
        # request.body is a list read from the front: chunks before _first are
        # read (dropped when all are), _pos bytes of request.body[_first] too.
        self._first = 0
        self._pos = 0

    def _more(self) -> bool:
        """Wait until the parser adds a chunk to ``request.body``; False at the body's end."""
        req = self._req
        chunks = req.body
        count = len(chunks)
        while len(chunks) == count:
            if req.complete:
                return False
            error = req.error
            if error is not None:
                if req.exceeded:
                    raise BodyTooLarge(error.reason)
                raise InvalidBody(error.reason)
            self._pull()
        return True

    def _take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the first unread chunk (which must exist)."""
        chunks = self._req.body
        first = self._first
        chunk = chunks[first]
        pos = self._pos
        end = pos + limit
        if end >= len(chunk):
            first += 1
            if first == len(chunks):
                chunks.clear()
                first = 0
            self._first = first
            self._pos = 0
            return chunk[pos:] if pos else chunk
        self._pos = end
        return chunk[pos:end]

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when ``size`` is None or negative)."""
        chunks = self._req.body
        if size is None or size < 0:
            while self._more():
                pass
            if self._first or self._pos:
                rest = chunks[self._first:]
                if rest:
                    rest[0] = rest[0][self._pos:]
                data = b"".join(rest)
            else:
                data = b"".join(chunks)
            chunks.clear()
            self._first = self._pos = 0
            return data
        parts = []
        need = size
        while need > 0 and (chunks or self._more()):
            part = self._take(need)
            parts.append(part)
            need -= len(part)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """One line, with its ``\\n``, or at most ``size`` bytes of it."""
        chunks = self._req.body
        need = None if size is None or size < 0 else size
        parts = []
        while need is None or need > 0:
            if not chunks and not self._more():
                break
            chunk = chunks[self._first]
            end = chunk.find(b"\n", self._pos)
            limit = len(chunk) - self._pos if need is None else need
            if 0 <= end < self._pos + limit:
                parts.append(self._take(end + 1 - self._pos))
                break
            part = self._take(limit)
            parts.append(part)
            if need is not None:
                need -= len(part)
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """All lines (stopping once ``hint`` bytes were read, when given)."""
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body, at most ``limit`` bytes; True if it all came."""
        req = self._req
        self._first = self._pos = 0
        while True:
            req.body.clear()
            if req.complete:
                return True
            if req.received > limit or req.error is not None:
                return False
            try:
                self._pull()
            except IncompleteBody:
                return False
