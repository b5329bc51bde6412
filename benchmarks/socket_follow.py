"""Same-hub cost of socket following: recv/send ping-pong on one hub, before and after.

Two greenlets on the main hub of a ``gevent.monkey.patch_all()``'d interpreter
bounce one byte over a loopback TCP connection; every recv has to wait, so
every round trip goes through the socket wait path twice. Batches alternate,
in the same process and on the same connection, between gevent's own wait,
recv and recv_into ("gevent"), what ``greenpool.monkey.sockets.install()``
puts in their place ("follow": with greenpool's C extension, the wait and a
recv/recv_into that do not raise EAGAIN before waiting) and what it puts
there without the extension ("follow-py": the pure-Python wait, gevent's
recv), so machine noise hits all alike. Prints every batch, the
medians and the ratio per process, and the wrapper's own cost per wait
(timed with gevent's wait replaced by a no-op: best of 7, so noise-free).

Then full duplex across hubs: one loopback TCP socket, a reader greenlet on
hub 0 and a writer greenlet on hub 1 (``greenpool.monkey.patch_all()``, 1 MiB
messages each way), against the same with two real threads and unpatched
stdlib sockets, and with both greenlets on one hub ("one-hub", for
reference). The other end is a separate plain process (a sink thread and a
source thread), the same for all; runs rotate between the modes, and the
ratio of the medians is printed (goal: >= 0.8).

Usage: python benchmarks/socket_follow.py [--rounds 2000] [--batches 15] [--runs 3]
       [--duplex-runs 7] [--duplex-mib 256]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
from gevent import monkey; monkey.patch_all()
from gevent import _socketcommon
from greenpool.monkey import sockets as _socket_follow
import gevent, socket

rounds, batches = int(sys.argv[1]), int(sys.argv[2])
NAMES = ("_wait", "recv", "recv_into")
Mixin = _socketcommon.SocketMixin
original = {name: Mixin.__dict__[name] for name in NAMES}
_socket_follow.install()
follow = {name: Mixin.__dict__[name] for name in NAMES}
follow_py = _socket_follow._wait
assert follow["_wait"] is not original["_wait"]
# What install() puts in place (with the C extension: the wait and recv/recv_into),
# and what it puts there without the extension (the Python wait, gevent's recv).
waits = {"gevent": original, "follow": follow,
         "follow-py": dict(original, _wait=follow_py)}
listener = socket.create_server(("127.0.0.1", 0))
a = socket.create_connection(listener.getsockname())
b, _ = listener.accept()
for s in (a, b):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

def echo():
    while True:
        data = b.recv(1)
        if not data:
            return
        b.sendall(data)

server = gevent.spawn(echo)
gevent.sleep(0)

def batch():
    t0 = time.perf_counter()
    for _ in range(rounds):
        a.sendall(b"x")
        a.recv(1)
    return (time.perf_counter() - t0) / rounds * 1e6

results = {mode: [] for mode in waits}
batch()  # warm-up
order = list(waits)
for i in range(batches):
    for mode in order[i % 3:] + order[:i % 3]:
        for name, method in waits[mode].items():
            setattr(Mixin, name, method)
        results[mode].append(batch())
a.close()
server.join()

# The wrapper alone: the waits with gevent's wait replaced by a no-op, so only
# what follow adds in front of it (get_hub(), an identity check; in Python also
# a frame) is timed.
import timeit
from greenpool._compiled import speedups
sock = socket.socket()
event = sock._read_event
noop = lambda self, watcher, timeout_exc=None: None
_socket_follow._gevent_wait = noop
wrapped = {"bare": noop, "wrapped-py": follow_py}
if speedups is not None:  # a second C method around the no-op (the last thing this does)
    wrapped["wrapped"] = speedups.make_follow_wait(
        _socketcommon.SocketMixin, _socket_follow.get_hub, noop, follow_py,
        _socket_follow._wait_failed)
for name, fn in wrapped.items():
    best = min(timeit.repeat(lambda: fn(sock, event), number=100000, repeat=7))
    results[name + "_ns"] = best / 100000 * 1e9
sock.close()
print(repr(results))
"""

MODES = ("gevent", "follow", "follow-py")

#: The far end of the duplex socket: a sink thread and a source thread, plain stdlib.
PEER = r"""
import socket, sys, threading
total = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
message = b"p" * (1 << 20)

def sink():
    buf = memoryview(bytearray(1 << 20))
    got = 0
    while got < total:
        n = conn.recv_into(buf)
        if not n:
            raise SystemExit("EOF")
        got += n

def source():
    for _ in range(total >> 20):
        conn.sendall(message)

threads = [threading.Thread(target=sink), threading.Thread(target=source)]
for t in threads:
    t.start()
for t in threads:
    t.join()
conn.close()
"""

#: This end: a reader and a writer on one socket, as greenlets on two hubs or as threads.
DUPLEX = r"""
import sys, time
mode, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode != "threads":
    import greenpool.monkey; greenpool.monkey.patch_all()
    import greenpool
import socket, threading

message = b"m" * (1 << 20)
sock = socket.create_connection(("127.0.0.1", port))

def read():
    buf = memoryview(bytearray(1 << 20))
    got = 0
    while got < total:
        n = sock.recv_into(buf)
        if not n:
            raise SystemExit("EOF")
        got += n

def write():
    for _ in range(total >> 20):
        sock.sendall(message)

if mode != "threads":  # "greenpool": two hubs; "one-hub": both greenlets on hub 0
    pool = greenpool.Pool(2)
    t0 = time.perf_counter()
    futures = [pool.spawn_on(0, read), pool.spawn_on(0 if mode == "one-hub" else 1, write)]
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - t0
    pool.shutdown()
else:
    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
sock.close()
print(repr(2 * total / elapsed / 1e6))
"""


def duplex_once(mode: str, total: int) -> float:
    """MB/s moved through one socket in both directions (reader and writer at once)."""
    peer = subprocess.Popen([sys.executable, "-c", PEER, str(total)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None
        port = peer.stdout.readline().strip()
        out = subprocess.run([sys.executable, "-c", DUPLEX, mode, port, str(total)],
                             capture_output=True, text=True, check=True, timeout=600)
        if peer.wait(60) != 0:
            raise RuntimeError(f"the peer failed with {peer.returncode}")
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
    return float(out.stdout.strip().splitlines()[-1])


def duplex(runs: int, mib: int) -> None:
    """Full-duplex throughput across two hubs vs two real threads: medians and their ratio."""
    results: dict[str, list[float]] = {"greenpool": [], "threads": [], "one-hub": []}
    for run in range(runs):
        order = list(results)[run % 3:] + list(results)[:run % 3]
        for mode in order:
            results[mode].append(duplex_once(mode, mib << 20))
    for mode, values in results.items():
        print(f"duplex {mode:9s} MB/s (both directions, {mib} MiB each way, 1 MiB messages): "
              f"median {statistics.median(values):.0f}  ("
              + " ".join(f"{v:.0f}" for v in values) + ")")
    ratio = statistics.median(results["greenpool"]) / statistics.median(results["threads"])
    print(f"duplex greenpool (reader on hub 0, writer on hub 1) / threads: {ratio:.2f}x "
          "(median of runs; goal >= 0.8)")
    one = statistics.median(results["one-hub"]) / statistics.median(results["threads"])
    print(f"duplex one-hub (reader and writer greenlets on hub 0) / threads: {one:.2f}x")


def one_process(rounds: int, batches: int) -> dict[str, list[float]]:
    """Microseconds per round trip, alternating batches of both modes in one interpreter."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(rounds), str(batches)],
                         capture_output=True, text=True, check=True, timeout=600)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="round trips per batch")
    parser.add_argument("--batches", type=int, default=15, help="batches per mode and process")
    parser.add_argument("--runs", type=int, default=3, help="processes")
    parser.add_argument("--duplex-runs", type=int, default=7,
                        help="full-duplex runs per mode (0: skip)")
    parser.add_argument("--duplex-mib", type=int, default=256,
                        help="MiB each way per full-duplex run")
    args = parser.parse_args()
    if min(args.rounds, args.batches, args.runs, args.duplex_mib) < 1 or args.duplex_runs < 0:
        parser.error("--rounds, --batches, --runs and --duplex-mib must be at least 1")
    ratios: dict[str, list[float]] = {"follow": [], "follow-py": []}
    for run in range(args.runs):
        results = one_process(args.rounds, args.batches)
        medians = {mode: statistics.median(results[mode]) for mode in MODES}
        for mode in ratios:
            ratios[mode].append(medians[mode] / medians["gevent"])
        for mode in MODES:
            raw = " ".join(f"{v:.1f}" for v in results[mode])
            print(f"run {run} {mode:9s} us/round trip: median {medians[mode]:.2f} "
                  f"min {min(results[mode]):.2f}  ({raw})")
        for name in ("wrapped", "wrapped-py"):
            if name + "_ns" in results:
                extra = results[name + "_ns"] - results["bare_ns"]
                print(f"run {run} {name}: the wait wrapper alone adds {extra:.0f} ns per wait "
                      f"({results[name + '_ns']:.0f} ns vs {results['bare_ns']:.0f} ns for a "
                      "bare call; best of 7)")
    for mode, values in ratios.items():
        print(f"{mode} / gevent, per run (median of batches): "
              + " ".join(f"{r:.3f}" for r in values) + f"; median {statistics.median(values):.3f}")
    if args.duplex_runs:
        duplex(args.duplex_runs, args.duplex_mib)


if __name__ == "__main__":
    main()
