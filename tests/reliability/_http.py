"""The WSGI app and the raw-socket HTTP client the hostile-input tests share.

Used by ``test_hostile_http.py`` and by the atheris fuzzing script it runs in a
subprocess, so it imports nothing from pytest or hypothesis.
"""

from __future__ import annotations

import re
import socket

MAX_BODY = 2**20
#: Statuses a hostile request may get: the app's answer, or a refusal. 100 is interim;
#: 501 is an unknown transfer coding or CONNECT, 505 an HTTP version other than 1.0/1.1.
ACCEPTED = {100, 200, 400, 408, 413, 414, 431, 501, 505}
#: Seconds a client waits for the server before calling it a hang.
CLIENT_TIMEOUT = 10.0
IDLE_TIMEOUT = 1.0


def app(environ, start_response):
    """Answer ``ok <body length>``, 400 if the body is cut short.

    Bodies over MAX_BODY are the server's to refuse (``max_body_size``, 413):
    the app reads ``wsgi.input`` whole, trusting that limit.
    """
    try:
        body = environ["wsgi.input"].read()
    except (OSError, ValueError):  # the client ended the body early, or sent a bad chunk
        start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"bad body\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok %d\n" % len(body)]


STATUS = re.compile(rb"(?:^|\r\n\r\n)HTTP/1\.[01] (\d{3}) ")


def exchange(address, raw: bytes) -> tuple[list[int], str]:
    """Send ``raw``, half-close, read to the end: (statuses seen, how it ended)."""
    sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
    try:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the server answered and closed first
            pass
        chunks = []
        ending = "closed"
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except ConnectionResetError:
            ending = "reset"
        except TimeoutError:
            ending = "hang"
    finally:
        sock.close()
    response = b"".join(chunks)
    return [int(m.group(1)) for m in STATUS.finditer(response)], ending


def acceptable(statuses: list[int], ending: str) -> bool:
    """True when the server refused, answered or closed: no hang, no 5xx."""
    return ending != "hang" and all(s in ACCEPTED for s in statuses)
