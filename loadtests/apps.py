"""WSGI apps the harness serves: fast requests, a blocking route, per-hub counts.

``app`` answers ``GET /`` with a short body. ``GET /block?ms=N`` makes an
unpatched, GIL-releasing blocking call (the original ``time.sleep``) that
stalls the hub serving it, to show that the *other* hubs keep serving: the
per-hub isolation the ``mixed`` profile measures. ``GET /_stats`` returns how
many requests each hub served, as JSON.
"""

from __future__ import annotations

import collections
import json
from urllib.parse import parse_qs

from gevent import monkey

import greenpool

_blocking_sleep = monkey.get_original("time", "sleep")

# One key per hub, only ever written by that hub's thread: no cross-thread race.
served_per_hub: collections.Counter[int] = collections.Counter()

HELLO = b"Hello from greenpool\n"
MAX_BLOCK_MS = 1000


def _count() -> None:
    hub = greenpool.current_hub()
    served_per_hub[-1 if hub is None else hub.index] += 1


def _respond(start_response, status: str, body: bytes, content_type: str = "text/plain"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    """The harness's WSGI app (see the module docstring for its routes)."""
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        _count()
        return _respond(start_response, "200 OK", HELLO)
    if path == "/block":
        _count()
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            ms = min(int(query.get("ms", ["5"])[0]), MAX_BLOCK_MS)
        except ValueError:
            return _respond(start_response, "400 Bad Request", b"ms must be an integer\n")
        _blocking_sleep(ms / 1000)
        return _respond(start_response, "200 OK", HELLO)
    if path == "/_stats":
        body = json.dumps({str(k): v for k, v in sorted(served_per_hub.items())}).encode()
        return _respond(start_response, "200 OK", body, "application/json")
    return _respond(start_response, "404 Not Found", b"not found\n")
