"""Ordinary blocking client libraries on every hub at once, over the patched socket module.

The test process (not patched) runs real loopback services in threads: an HTTP
server and an XML-RPC server whose handlers wait on a ``threading.Barrier``
until every expected call is in flight. A subprocess patches with
``gevent.monkey.patch_all()`` and makes those calls from tasks on all four hubs
of a pool with ``http.client``, ``urllib.request`` and ``xmlrpc.client``. The
barrier only opens if the calls really overlap, so a client that blocked its
hub (or serialized the hubs) fails the test instead of just being slow.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import pytest

from .helpers import run_python

HUBS = 4
PER_HUB = 6  # calls in flight per hub and per client kind
CALLS = HUBS * PER_HUB


class _QuietXMLRPCHandler(SimpleXMLRPCRequestHandler):
    def log_message(self, format, *args):
        pass


class _ThreadingXMLRPCServer(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs of a burst: 1-3 s retries


class _ThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _http_service(barrier: threading.Barrier) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                barrier.wait()
                status, body = 200, json.dumps({"path": self.path}).encode()
            except threading.BrokenBarrierError:
                status, body = 503, b"calls did not overlap"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    return _ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def _xmlrpc_service(barrier: threading.Barrier) -> SimpleXMLRPCServer:
    server = _ThreadingXMLRPCServer(
        ("127.0.0.1", 0), requestHandler=_QuietXMLRPCHandler, logRequests=False
    )

    def echo(value):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError("calls did not overlap")
        return value

    server.register_function(echo)
    return server


@pytest.fixture
def services():
    """(http_port, xmlrpc_port), each service needing CALLS overlapping calls per round."""
    servers = [
        _http_service(threading.Barrier(2 * CALLS, timeout=10)),  # http.client + urllib
        _xmlrpc_service(threading.Barrier(CALLS, timeout=10)),
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield tuple(s.server_address[1] for s in servers)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(10)


CHILD = """
from gevent import monkey
monkey.patch_all()

import collections, http.client, json, os, sys, time, urllib.request, xmlrpc.client
import greenpool

os.environ["no_proxy"] = "*"  # loopback only, whatever the environment says
HTTP_PORT, XMLRPC_PORT, HUBS, PER_HUB = (int(a) for a in sys.argv[1:5])


def with_http_client(n):
    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=20)
    try:
        conn.request("GET", f"/http.client/{n}")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())["path"]
    finally:
        conn.close()


def with_urllib(n):
    # "localhost": the name is resolved on this hub's own resolver threadpool
    with urllib.request.urlopen(f"http://localhost:{HTTP_PORT}/urllib/{n}", timeout=20) as resp:
        return resp.status, json.loads(resp.read())["path"]


def with_xmlrpc(n):
    with xmlrpc.client.ServerProxy(f"http://127.0.0.1:{XMLRPC_PORT}/") as proxy:
        return 200, proxy.echo(f"xmlrpc/{n}")


def call(client, n):
    return greenpool.current_hub().index, client(n)


t0 = time.monotonic()
with greenpool.Pool(HUBS) as pool:
    futures = [
        pool.spawn_on(hub, call, client, hub * PER_HUB + i)
        for client in (with_http_client, with_urllib, with_xmlrpc)
        for hub in range(HUBS)
        for i in range(PER_HUB)
    ]
    results = [f.result(30) for f in futures]
print(json.dumps({"results": results, "seconds": time.monotonic() - t0}))
"""


@pytest.mark.timeout(60)
def test_blocking_clients_on_every_hub_call_real_services_concurrently(services):
    http_port, xmlrpc_port = services
    proc = run_python(
        "import sys; sys.argv[1:] = %r\n" % [str(http_port), str(xmlrpc_port), str(HUBS),
                                             str(PER_HUB)] + CHILD,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert len(results) == 3 * CALLS
    per_hub = {hub: 0 for hub in range(HUBS)}
    answers = set()
    for hub, (status, answer) in results:
        assert status == 200, answer
        per_hub[hub] += 1
        answers.add(answer)
    assert per_hub == {hub: 3 * PER_HUB for hub in range(HUBS)}
    n = range(CALLS)
    assert answers == (
        {f"/http.client/{i}" for i in n} | {f"/urllib/{i}" for i in n} | {f"xmlrpc/{i}" for i in n}
    )
