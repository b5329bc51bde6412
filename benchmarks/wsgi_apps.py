"""The WSGI apps ``benchmarks/servers.py`` serves, the same module for every server.

``bare`` is the smallest complete WSGI app (a fixed body with its length), so
requests/s measures the server. ``flask`` is Flask's hello world, the
cheapest app a real project runs, so the server's share of the time is
smaller and the figure is what a user would see.
"""

from __future__ import annotations

BODY = b"Hello world\n"
_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def bare(environ, start_response):
    start_response("200 OK", list(_HEADERS))
    return [BODY]


def _make_flask():
    try:
        from flask import Flask
    except ImportError:  # the "flask" app is then missing; the benchmark skips it
        return None
    app = Flask("bench")

    @app.route("/")
    def hello():
        return BODY.decode(), 200, {"Content-Type": "text/plain"}

    return app


flask = _make_flask()
