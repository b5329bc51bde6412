"""Dispatch overhead: greenpool vs the peers a user would pick instead.

Prints medians of several alternating runs, in one process:

* cross-thread ``pool.spawn`` + ``result()`` of tiny tasks vs
  ``ThreadPoolExecutor`` with the same worker count, batched (submit N, then
  collect) and one at a time (round trip latency);
* in-hub ``greenpool.spawn`` + ``result()`` vs ``gevent.spawn`` + ``join()``.

Usage: python benchmarks/dispatch.py [--workers N] [--tasks N] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import gevent

import greenpool


def tiny(x):
    return x


def batch(submit, n):
    t0 = time.perf_counter()
    futures = [submit(tiny, i) for i in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t0)


def one_at_a_time(submit, n):
    n = max(n // 10, 100)
    t0 = time.perf_counter()
    for i in range(n):
        submit(tiny, i).result()
    return n / (time.perf_counter() - t0)


def in_hub_greenpool(n):
    t0 = time.perf_counter()
    futures = [greenpool.spawn(tiny, i) for i in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t0)


def in_hub_gevent(n):
    t0 = time.perf_counter()
    greenlets = [gevent.spawn(tiny, i) for i in range(n)]
    for g in greenlets:
        g.join()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args(argv)
    rows = []
    with ThreadPoolExecutor(opts.workers) as tpe, greenpool.Pool(opts.workers) as pool:
        for name, bench in (("batch", batch), ("one at a time", one_at_a_time)):
            ours, theirs = [], []
            bench(pool.spawn, opts.tasks // 10)  # warm-up
            bench(tpe.submit, opts.tasks // 10)
            for _ in range(opts.runs):
                theirs.append(bench(tpe.submit, opts.tasks))
                ours.append(bench(pool.spawn, opts.tasks))
            rows.append((f"cross-thread spawn+result, {name}", "ThreadPoolExecutor", ours, theirs))
        ours, theirs = [], []
        with greenpool.Pool(1) as one:
            for _ in range(opts.runs):
                theirs.append(one.spawn(in_hub_gevent, opts.tasks).result())
                ours.append(one.spawn(in_hub_greenpool, opts.tasks).result())
        rows.append(("in-hub spawn+result", "gevent.spawn+join", ours, theirs))
    print(f"workers={opts.workers} tasks={opts.tasks} runs={opts.runs} (medians)")
    print(f"{'benchmark':44} {'greenpool/s':>12} {'peer/s':>12} {'ratio':>6}  peer")
    for name, peer, ours, theirs in rows:
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{name:44} {a:12,.0f} {b:12,.0f} {a / b:6.2f}  {peer}")


if __name__ == "__main__":
    main()
