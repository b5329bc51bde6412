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

    __slots__ = ("_req", "_pull", "_buf")

    def __init__(self, request: Request, pull: Callable[[], None]) -> None:
        self._req = request
        self._pull = pull
        self._buf = b""

    def _fill(self) -> bool:
        """Move the parsed body into the buffer, reading once if there is none; False at its end."""
        req = self._req
        if not req.body:
            if req.complete:
                return False
            error = req.error
            if error is not None:
                if req.exceeded:
                    raise BodyTooLarge(error.reason)
                raise InvalidBody(error.reason)
            self._pull()
            if not req.body:
                return not req.complete
        chunks = req.body
        if self._buf:
            chunks.appendleft(self._buf)
        self._buf = b"".join(chunks)
        chunks.clear()
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when ``size`` is None or negative)."""
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._fill():
            pass
        buf = self._buf
        data, self._buf = buf[:size], buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """One line, with its ``\\n``, or at most ``size`` bytes of it."""
        if size is not None and size < 0:
            size = None
        start = 0
        while True:
            buf = self._buf
            end = buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if size is not None and len(buf) >= size:
                end = size
                break
            start = len(buf)
            if not self._fill():
                end = len(self._buf)
                break
        if size is not None and end > size:
            end = size
        buf = self._buf
        line, self._buf = buf[:end], buf[end:]
        return line

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
        self._buf = b""
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
