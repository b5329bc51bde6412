"""Locks and queues after patching: uncontended cost, and a lock shared by hubs stuck in C calls.

Two measurements, each variant in its own child process (patching cannot be
undone), rounds alternating between variants; medians are printed:

1. **Uncontended**, in a greenlet on one pool hub: ``threading.Lock``
   acquire/release (method calls and ``with``), ``threading.RLock`` (``with``),
   ``queue.Queue`` and ``queue.SimpleQueue`` put+get, a zero-timeout
   ``select.poll`` (what urllib3 asks before reusing a connection), after
   ``gevent.monkey.patch_all()`` (gevent's Cython primitives) and after
   ``greenpool.monkey.patch_all()``. Also the stdlib's pure-Python
   ``queue.Queue`` and ``_PySimpleQueue`` unchanged on greenpool's lock (what
   "exact by construction" alone costs) and the API class ``greenpool.Queue``.
2. **Convoy**: 16 workers on 4 hubs share one lock the way a
   ``ThreadedConnectionPool`` is shared: take the lock, pop a connection,
   release, run a 2 ms query that holds the hub's thread (a native sleep: a C
   call that releases the GIL but not the hub), take the lock, roll the
   connection back (``--hold-us``, 200 us: a round trip that also holds the
   hub, as psycopg2's ``putconn`` does under its lock) and put it back.
   Queries/s relative to one connection per worker (no lock), and the worst
   wait for the lock, for greenpool's Lock (per-hub wake-ups, barging,
   starvation mode after 1 ms), a FIFO hand-off lock (``greenpool.Semaphore(1)``,
   the policy ``greenpool.Lock`` had before), gevent's patched lock, and a
   native lock. A variant whose waiter is never woken is reported as hung.

Usage: python benchmarks/sync.py [--rounds 5] [--seconds 2] [--hold-us 200]
       [--skip-convoy] [--skip-uncontended]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

UNCONTENDED_CHILD = r"""
import sys, time
variant = sys.argv[1]
if variant == "gevent":
    from gevent import monkey; monkey.patch_all()
else:  # "greenpool", or "greenpool-py" (GREENPOOL_PURE_PYTHON=1: no C extension)
    import greenpool.monkey; greenpool.monkey.patch_all()
import threading, queue, json
import greenpool
from gevent.monkey import get_original
N = 200_000

def per_op(fn, *args):
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter(); fn(*args); best = min(best, time.perf_counter() - t0)
    return best / N * 1e9

def lock_calls(lock):
    a, r = lock.acquire, lock.release
    for _ in range(N):
        a(); r()

def lock_with(lock):
    for _ in range(N):
        with lock:
            pass

def put_get(q):
    p, g = q.put, q.get
    for _ in range(N):
        p(1); g()

POLLS = 20_000

def poll_zero():
    # What urllib3 asks before reusing a pooled connection: a new poll object,
    # one socket, poll(0).
    import select, socket
    a, b = socket.socketpair()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(POLLS):
            p = select.poll(); p.register(a, select.POLLIN); p.poll(0)
        best = min(best, time.perf_counter() - t0)
    a.close(); b.close()
    return best / POLLS * 1e9

def measure():
    out = {
        "lock acquire+release": per_op(lock_calls, threading.Lock()),
        "lock with": per_op(lock_with, threading.Lock()),
        "rlock with": per_op(lock_with, threading.RLock()),
        "Queue put+get": per_op(put_get, queue.Queue()),
        "LifoQueue put+get": per_op(put_get, queue.LifoQueue()),
        "Queue(100) put+get (bounded)": per_op(put_get, queue.Queue(100)),
        "SimpleQueue put+get": per_op(put_get, queue.SimpleQueue()),
        "select.poll() + register + poll(0)": poll_zero(),
    }
    if variant.startswith("greenpool"):
        out["stdlib py Queue on greenpool Lock"] = per_op(put_get, get_original("queue", "Queue")())
        out["stdlib _PySimpleQueue on greenpool Lock"] = per_op(put_get, queue._PySimpleQueue())
        out["greenpool.Queue (API class)"] = per_op(put_get, greenpool.Queue())
    return out

with greenpool.Pool(1) as pool:
    print(json.dumps(pool.spawn(measure).result()))
"""

CONVOY_CHILD = r"""
import os, sys, time
kind, seconds, hold = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) / 1e6
if kind == "gevent":
    from gevent import monkey; monkey.patch_all()
import json, threading
import gevent
import greenpool
from gevent.monkey import get_original
native_sleep = get_original("time", "sleep")
WORKERS, HUBS, QUERY = 16, 4, 0.002

def make_lock():
    if kind == "greenpool":
        return greenpool.Lock()
    if kind == "fifo":
        return greenpool.Semaphore(1)
    if kind == "gevent":
        return threading.Lock()  # gevent's, patched
    if kind == "native":
        return get_original("_thread", "allocate_lock")()
    return None  # "own": one connection per worker, no lock

def rollback():
    # putconn() rolls back a connection left in a transaction, under the pool's
    # lock: a network round trip that holds this hub's thread (GIL released)
    native_sleep(hold)

def run():
    lock = make_lock()
    conns = list(range(WORKERS))
    stop = time.monotonic() + seconds
    worst = [0.0]
    done = [0]

    def take():
        t0 = time.perf_counter()
        lock.acquire()
        worst[0] = max(worst[0], time.perf_counter() - t0)

    def worker(i):
        while time.monotonic() < stop:
            if lock is None:
                conn = i
            else:
                take()
                conn = conns.pop()
                lock.release()
            native_sleep(QUERY)  # the query: holds this hub's thread, releases the GIL
            if lock is None:
                rollback()
            if lock is not None:
                take()
                rollback()
                conns.append(conn)
                lock.release()
            done[0] += 1
            gevent.sleep(0)  # the request's own I/O

    pool = greenpool.Pool(HUBS)
    t0 = time.monotonic()
    for f in [pool.spawn_on(i % HUBS, worker, i) for i in range(WORKERS)]:
        try:
            f.result(seconds + 20)
        except TimeoutError:  # a waiter never woken: the pool cannot be shut down either
            print(json.dumps({"qps": None, "worst_wait_ms": None, "hung": True}), flush=True)
            os._exit(0)
    elapsed = time.monotonic() - t0
    pool.shutdown()
    return {"qps": done[0] / elapsed, "worst_wait_ms": worst[0] * 1e3}

print(json.dumps(run()))
"""


def child(code: str, *args: str) -> dict:
    env = dict(os.environ)
    if args[0] == "greenpool-py":
        env["GREENPOOL_PURE_PYTHON"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
        env=env,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def uncontended(rounds: int) -> None:
    runs: dict[str, list[dict]] = {"gevent": [], "greenpool": [], "greenpool-py": []}
    for _ in range(rounds):
        for variant in runs:
            runs[variant].append(child(UNCONTENDED_CHILD, variant))
    print(f"Uncontended, one hub, ns per operation (median of {rounds} rounds; raw in brackets);")
    print("greenpool-py: GREENPOOL_PURE_PYTHON=1 (the queue's pure-Python core, no C extension)")
    head = ("operation", "gevent", "greenpool", "ratio", "gp-py", "ratio")
    print(f"{head[0]:42} {head[1]:>8} {head[2]:>10} {head[3]:>6} {head[4]:>7} {head[5]:>6}")
    for name in runs["greenpool"][0]:
        ours = [r[name] for r in runs["greenpool"]]
        py = [r[name] for r in runs["greenpool-py"]]
        theirs = [r[name] for r in runs["gevent"]] if name in runs["gevent"][0] else None
        ours_m, py_m = statistics.median(ours), statistics.median(py)
        if theirs:
            theirs_m = statistics.median(theirs)
            raw = f"[{' '.join(f'{x:.0f}' for x in theirs)}] [{' '.join(f'{x:.0f}' for x in ours)}]"
            print(f"{name:42} {theirs_m:8.0f} {ours_m:10.0f} {ours_m / theirs_m:6.2f}"
                  f" {py_m:7.0f} {py_m / theirs_m:6.2f}   {raw}")
        else:
            queue_m = statistics.median(r["Queue put+get"] for r in runs["gevent"])
            print(f"{name:42} {'':8} {ours_m:10.0f} {ours_m / queue_m:6.2f}"
                  f" {py_m:7.0f} {py_m / queue_m:6.2f}   (vs gevent's Queue)")


def convoy(rounds: int, seconds: float, hold_us: float) -> None:
    kinds = ["own", "greenpool", "fifo", "gevent", "native"]
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            runs[kind].append(child(CONVOY_CHILD, kind, str(seconds), str(hold_us)))
    own = statistics.median(r["qps"] for r in runs["own"])
    hung = {k: sum(1 for r in runs[k] if r.get("hung")) for k in kinds}
    print(f"\nConvoy: 16 workers on 4 hubs, 2 ms hub-holding queries, {hold_us:g} us "
          f"rollback under the lock, {seconds:g} s, median of {rounds} rounds")
    print(f"{'lock':10} {'queries/s':>10} {'vs own':>7} {'worst wait ms':>14}   raw queries/s")
    for kind in kinds:
        qps = [r["qps"] for r in runs[kind] if not r.get("hung")]
        note = f"   hung (a lost wake-up) in {hung[kind]} of {rounds} rounds" if hung[kind] else ""
        if not qps:
            print(f"{kind:10} {'-':>10} {'-':>7} {'-':>14}{note}")
            continue
        worst = max(r["worst_wait_ms"] for r in runs[kind] if not r.get("hung"))
        print(f"{kind:10} {statistics.median(qps):10.0f} {statistics.median(qps) / own:7.2f} "
              f"{worst:14.1f}   [{' '.join(f'{x:.0f}' for x in qps)}]{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--hold-us", type=float, default=200.0,
                        help="hub-holding round trip under the lock per put-back (a rollback)")
    parser.add_argument("--skip-convoy", action="store_true")
    parser.add_argument("--skip-uncontended", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    if not args.skip_uncontended:
        uncontended(args.rounds)
    if not args.skip_convoy:
        convoy(args.rounds, args.seconds, args.hold_us)


if __name__ == "__main__":
    main()
