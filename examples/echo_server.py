"""The seed's echo server (tokio-io-pool's README example) on greenpool.

An accept loop spawns one task per connection. Run by ``greenpool.run``, the
accept loop is the top-level greenlet, so its ``greenpool.spawn`` calls go
round-robin over the hubs and every hub serves connections; each connection's
socket is rebound to the hub that handles it.

    python examples/echo_server.py                 # serve on 127.0.0.1:12345
    python examples/echo_server.py --demo          # serve + a short bounded load, then exit
"""

from __future__ import annotations

import argparse
import collections
import socket as stdlib_socket
import threading
import time

from gevent import socket

import greenpool


def handle(conn, addr, per_hub=None):
    """Echo until the peer closes; count the connection against its hub."""
    if per_hub is not None:
        per_hub[greenpool.current_hub().index] += 1
    copied = 0
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            copied += len(data)
    return copied


def server(listener, max_connections=None, per_hub=None):
    """The accept loop: one task per connection (spread over hubs by greenpool.run)."""
    accepted = 0
    while max_connections is None or accepted < max_connections:
        conn, addr = listener.accept()
        greenpool.spawn(handle, conn, addr, per_hub)
        accepted += 1
    listener.close()
    return accepted


def bind(host="127.0.0.1", port=12345):
    """A listening socket made outside the pool; the accept loop rebinds it."""
    return stdlib_socket.create_server((host, port), backlog=1024)


def _client(address, messages, payload, latencies):
    with stdlib_socket.create_connection(address) as sock:
        for _ in range(messages):
            t0 = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(65536))
            latencies.append(time.perf_counter() - t0)


def _serve_listener(raw, max_connections, per_hub):
    listener = socket.socket(fileno=raw.detach())
    return server(listener, max_connections, per_hub)


def demo(hubs=None, connections=64, messages=200, payload_size=64):
    """Serve on an ephemeral port and drive it with a bounded load; print what happened."""
    raw = bind(port=0)
    address = raw.getsockname()
    per_hub = collections.Counter()
    result = {}

    def run_server():
        result["accepted"] = greenpool.run(
            _serve_listener, raw, connections, per_hub, size=hubs
        )

    server_thread = threading.Thread(target=run_server, name="echo-server")
    server_thread.start()
    latencies: list[float] = []
    payload = b"x" * payload_size
    t0 = time.perf_counter()
    clients = [
        threading.Thread(target=_client, args=(address, messages, payload, latencies))
        for _ in range(connections)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    elapsed = time.perf_counter() - t0
    server_thread.join(timeout=30)
    latencies.sort()
    total = len(latencies)
    print(f"echo server on {address[0]}:{address[1]} with {hubs or 'cpu-count'} hubs")
    print(f"  connections accepted: {result.get('accepted')}")
    spread = ", ".join(f"hub {i}: {n}" for i, n in sorted(per_hub.items()))
    print(f"  connections per hub : {spread}")
    print(f"  round trips         : {total} in {elapsed:.2f}s = {total / elapsed:,.0f}/s")
    print(f"  latency p50 / p99   : {latencies[total // 2] * 1e3:.2f} ms / "
          f"{latencies[int(total * 0.99)] * 1e3:.2f} ms")
    ok = result.get("accepted") == connections and total == connections * messages
    print("  result              : " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="greenpool echo server (the seed's example)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--hubs", type=int, default=None, help="hub threads (default: CPU count)")
    parser.add_argument("--demo", action="store_true", help="serve a short bounded load and exit")
    opts = parser.parse_args(argv)
    if opts.demo:
        return demo(hubs=opts.hubs or 4)
    raw = bind(opts.host, opts.port)
    print(f"echo server on {opts.host}:{opts.port}; Ctrl-C stops it")
    greenpool.run(_serve_listener, raw, None, None, size=opts.hubs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
