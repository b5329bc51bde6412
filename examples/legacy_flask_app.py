"""A thread-style Flask app, written for threads, served unchanged on N greenpool hubs.

    python examples/legacy_upstream.py --port 8001 &          # the backend it calls
    LEGACY_UPSTREAM=http://127.0.0.1:8001/ \\
        gunicorn -k greenpool.gunicorn.Worker --threads 4 examples.legacy_flask_app:app
    LEGACY_UPSTREAM=http://127.0.0.1:8001/ \\
        python -m greenpool wsgi --patch examples.legacy_flask_app:app

Nothing here knows about gevent or greenpool: it is what a team runs today under
``gunicorn -k gthread``, with its defaults (no semaphore in front of the pool,
no bigger pool): greenpool's app threads keep it within what it was sized for.
Its threads share module-level clients made at import, the way such apps do:

* a default ``requests.Session`` to an upstream service (``LEGACY_UPSTREAM``);
* a psycopg2 ``ThreadedConnectionPool(1, 64)`` (``LEGACY_DSN``, at most
  ``LEGACY_DB_CONNECTIONS`` connections), which raises ``PoolError`` when all
  of them are out, as sized for a thread pool; each request makes one
  ``SELECT pg_sleep(LEGACY_QUERY_MS / 1000)`` query (5 ms), a blocking C call;
* a ``queue.Queue`` to a background writer thread started at import;
* a dict cache guarded by a ``threading.Lock``.

``GET /?item=N`` does all four. ``GET /stats`` reports the counters;
``GET /stats?drain=1`` first waits (``queue.join()``) until the writer has
consumed every queued item, so a load test can check none was lost.
"""

from __future__ import annotations

import collections
import hashlib
import os
import queue
import threading

import requests
from flask import Flask, jsonify, request
from psycopg2.pool import ThreadedConnectionPool

UPSTREAM = os.environ.get("LEGACY_UPSTREAM", "http://127.0.0.1:8001/")
DSN = os.environ.get("LEGACY_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
QUERY_SECONDS = float(os.environ.get("LEGACY_QUERY_MS", "5")) / 1000
DB_CONNECTIONS = int(os.environ.get("LEGACY_DB_CONNECTIONS", "64"))

app = Flask(__name__)

# -- shared clients, made once at import ---------------------------------------------------

session = requests.Session()
db = ThreadedConnectionPool(1, DB_CONNECTIONS, DSN)


def query(sql: str, params: tuple) -> tuple:
    """One row of ``sql`` on a pooled connection (autocommit: nothing left open)."""
    conn = db.getconn()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()
    finally:
        db.putconn(conn)


# -- a lock-guarded cache --------------------------------------------------------------------

_cache: dict[str, str] = {}
_cache_lock = threading.Lock()
_cache_hits = 0


def digest_of(item: str, body: bytes) -> str:
    """The item's digest, computed on its first request and cached."""
    global _cache_hits
    with _cache_lock:
        if item in _cache:
            _cache_hits += 1
            return _cache[item]
    value = hashlib.sha256(item.encode() + body).hexdigest()[:16]
    with _cache_lock:
        return _cache.setdefault(item, value)


# -- a queue to a background writer thread ---------------------------------------------------

events: queue.Queue = queue.Queue()
_counts_lock = threading.Lock()
_counts = {"queued": 0, "consumed": 0}
recent: collections.deque = collections.deque(maxlen=100)


def _writer() -> None:
    """Consume the request log forever (a stand-in for writing it somewhere slow)."""
    while True:
        item = events.get()
        try:
            recent.append(item)
            with _counts_lock:
                _counts["consumed"] += 1
        finally:
            events.task_done()


def record(item: str) -> None:
    with _counts_lock:
        _counts["queued"] += 1
    events.put(item)


threading.Thread(target=_writer, name="legacy-writer", daemon=True).start()


# -- routes ----------------------------------------------------------------------------------


@app.get("/")
def index():
    item = request.args.get("item", "0")
    upstream = session.get(UPSTREAM, params={"item": item}, timeout=10)
    upstream.raise_for_status()
    (ok,) = query("SELECT true FROM pg_sleep(%s)", (QUERY_SECONDS,))
    digest = digest_of(item, upstream.content)
    record(item)
    return jsonify(item=item, db=ok, upstream_bytes=len(upstream.content), digest=digest)


@app.get("/stats")
def stats():
    if request.args.get("drain"):
        events.join()
    with _counts_lock:
        counts = dict(_counts)
    with _cache_lock:
        cached, hits = len(_cache), _cache_hits
    return jsonify(**counts, pending=events.qsize(), cached=cached, cache_hits=hits)
