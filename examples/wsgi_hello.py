"""A WSGI "hello" application served on every hub by ``greenpool.wsgi``.

    python examples/wsgi_hello.py                          # 127.0.0.1:8000, CPU-count hubs
    python examples/wsgi_hello.py --bind 0.0.0.0:8080 --hubs 4 --access-log

``app`` is an ordinary WSGI callable, so any WSGI server can import it as
``examples.wsgi_hello:app``. Ctrl-C or SIGTERM stops the server gracefully:
it stops accepting, closes idle keep-alive connections and gives requests in
progress up to 10 seconds.
"""

from __future__ import annotations

import argparse
import signal
import sys

import greenpool
import greenpool.wsgi


def app(environ, start_response):
    """Say hello, and which hub (native thread) served the request."""
    hub = greenpool.current_hub()
    where = f" from hub {hub.index} of {hub.pool.size}" if hub is not None else ""
    body = f"Hello, world{where}!\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WSGI hello app on greenpool")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port (default %(default)s)")
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPU count)")
    parser.add_argument("--access-log", action="store_true", help="log each request to stderr")
    opts = parser.parse_args(argv)
    server = greenpool.wsgi.serve(
        app, opts.bind, hubs=opts.hubs, access_log=sys.stderr if opts.access_log else None
    )
    server.stop_timeout = 10.0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    host, port = server.address
    try:
        # Inside the try: a SIGTERM that comes as soon as the banner is out (a test, a
        # supervisor) may interrupt the print() itself.
        print(f"serving http://{host}:{port}/ on {server.pool.size} hubs; Ctrl-C stops",
              flush=True)
        server.serve_forever()  # on KeyboardInterrupt it stops gracefully, then re-raises
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
