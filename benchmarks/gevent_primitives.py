"""gevent's own queues, events and locks: what making them cross-hub costs on one hub.

``greenpool.monkey.patch_all()`` replaces ``gevent.queue``, ``gevent.event``,
``gevent.lock`` and ``gevent.Greenlet`` with cross-hub subclasses
(:mod:`greenpool.monkey.gevent_primitives`). Libraries with a gevent driver
(python-engineio) use those classes on their hot paths, so the same-hub cost
is what matters. Each variant runs in its own child process (patching cannot
be undone), rounds alternate between them, medians are printed:

* **gevent**: ``gevent.monkey.patch_all()``, gevent's compiled classes;
* **greenpool**: ``greenpool.monkey.patch_all()``, the cross-hub classes.

Measured in a greenlet on one pool hub, in ns per operation:

1. **Uncontended**: ``JoinableQueue``/``SimpleQueue``/``LifoQueue``/
   ``PriorityQueue``/bounded ``Queue(100)`` put+get, ``Event`` set+wait,
   ``AsyncResult`` set+get, ``Semaphore`` acquire+release and ``with``,
   ``BoundedSemaphore``/``RLock`` ``with``.
2. **Same-hub wake-ups**: two greenlets on one hub ping-ponging an item
   through two ``JoinableQueue``s (every get parks, every put wakes), and
   ``gevent.spawn`` + ``join``.
3. **Cross-hub** (greenpool only: under gevent's classes the getter is never
   woken): the same ping-pong between greenlets on hubs 0 and 1, and an
   ``Event`` set on hub 1 waking a waiter on hub 0, in microseconds per round
   trip.

Usage: python benchmarks/gevent_primitives.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, json
variant = sys.argv[1]
if variant == "gevent":
    from gevent import monkey; monkey.patch_all()
else:
    import greenpool.monkey; greenpool.monkey.patch_all()
import gevent, gevent.queue, gevent.event, gevent.lock
import greenpool
N = 200_000

def per_op(fn, *args, n=N):
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter(); fn(*args); best = min(best, time.perf_counter() - t0)
    return best / n * 1e9

def put_get(q):
    p, g = q.put, q.get
    for _ in range(N):
        p(1); g()

def event_set_wait(e):
    s, w, c = e.set, e.wait, e.clear
    for _ in range(N):
        s(); w(); c()

def async_result(_):
    AR = gevent.event.AsyncResult
    for _ in range(N // 10):
        r = AR(); r.set(1); r.get()

def sem_calls(s):
    a, r = s.acquire, s.release
    for _ in range(N):
        a(); r()

def sem_with(s):
    for _ in range(N):
        with s:
            pass

PINGS = 20_000

def ping_pong(spawn_other):
    a, b = gevent.queue.JoinableQueue(), gevent.queue.JoinableQueue()
    def echo():
        for _ in range(PINGS):
            b.put(a.get())
    other = spawn_other(echo)
    t0 = time.perf_counter()
    for i in range(PINGS):
        a.put(i); b.get()
    elapsed = time.perf_counter() - t0
    other()
    return elapsed / PINGS * 1e9

def same_hub_ping_pong():
    def spawn_other(fn):
        g = gevent.spawn(fn)
        return g.join
    return min(ping_pong(spawn_other) for _ in range(3))

SPAWNS = 20_000

def spawn_join(_):
    spawn = gevent.spawn
    for _ in range(SPAWNS):
        spawn(int).join()

def measure():
    return {
        "JoinableQueue put+get": per_op(put_get, gevent.queue.JoinableQueue()),
        "SimpleQueue put+get": per_op(put_get, gevent.queue.SimpleQueue()),
        "LifoQueue put+get": per_op(put_get, gevent.queue.LifoQueue()),
        "PriorityQueue put+get": per_op(put_get, gevent.queue.PriorityQueue()),
        "Queue(100) put+get (bounded)": per_op(put_get, gevent.queue.Queue(100)),
        "Event set+wait+clear": per_op(event_set_wait, gevent.event.Event()),
        "AsyncResult new+set+get": per_op(async_result, None, n=N // 10),
        "Semaphore acquire+release": per_op(sem_calls, gevent.lock.Semaphore()),
        "Semaphore with": per_op(sem_with, gevent.lock.Semaphore()),
        "BoundedSemaphore with": per_op(sem_with, gevent.lock.BoundedSemaphore()),
        "RLock with": per_op(sem_with, gevent.lock.RLock()),
        "same-hub queue ping-pong (round trip)": same_hub_ping_pong(),
        "spawn+join": per_op(spawn_join, None, n=SPAWNS),
    }

def cross_hub(pool):
    def spawn_other(fn):
        return pool.spawn_on(1, fn).result
    def ping():
        return min(ping_pong(spawn_other) for _ in range(3))
    def event_wake():
        rounds, best = 2000, float("inf")
        for _ in range(3):
            go = [gevent.event.Event() for _ in range(rounds)]
            back = [gevent.event.Event() for _ in range(rounds)]
            def echo():
                for g, b in zip(go, back):
                    g.wait(); b.set()
            other = pool.spawn_on(1, echo)
            t0 = time.perf_counter()
            for g, b in zip(go, back):
                g.set(); b.wait()
            best = min(best, time.perf_counter() - t0)
            other.result()
        return best / rounds * 1e9
    return {
        "cross-hub queue ping-pong (round trip)": pool.spawn_on(0, ping).result(),
        "cross-hub Event ping-pong (round trip)": pool.spawn_on(0, event_wake).result(),
    }

with greenpool.Pool(2 if variant == "greenpool" else 1) as pool:
    out = pool.spawn_on(0, measure).result()
    if variant == "greenpool":
        out.update(cross_hub(pool))
print(json.dumps(out))
"""


def child(variant: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, variant], capture_output=True, text=True, timeout=300,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    runs: dict[str, list[dict]] = {"gevent": [], "greenpool": []}
    for _ in range(args.rounds):
        for variant in runs:
            runs[variant].append(child(variant))
    print(f"gevent's primitives on one hub, ns per operation (median of {args.rounds} rounds;"
          " raw in brackets)")
    print(f"{'operation':42} {'gevent':>8} {'greenpool':>10} {'ratio':>6}")
    for name in runs["greenpool"][0]:
        ours = [r[name] for r in runs["greenpool"]]
        ours_m = statistics.median(ours)
        if name in runs["gevent"][0]:
            theirs = [r[name] for r in runs["gevent"]]
            theirs_m = statistics.median(theirs)
            raw = f"[{' '.join(f'{x:.0f}' for x in theirs)}] [{' '.join(f'{x:.0f}' for x in ours)}]"
            print(f"{name:42} {theirs_m:8.0f} {ours_m:10.0f} {ours_m / theirs_m:6.2f}   {raw}")
        else:
            raw = " ".join(f"{x:.0f}" for x in ours)
            print(f"{name:42} {'(lost)':>8} {ours_m:10.0f} {'':6}   [{raw}]")


if __name__ == "__main__":
    main()
