"""Dispatch strategies under an uneven load: a few long connections among many short ones.

A "long connection" holds its hub with repeated unpatched, GIL-releasing calls
(an unpatched driver, 10 ms by default) between short I/O waits; "short" tasks
do a little cooperative I/O (``gevent.sleep(0)``) and finish. Short tasks are
spawned at a steady pace from the main thread through ``pool.spawn``, so the
strategy decides where they land. Latency = spawn to completion. Prints
p50/p99 per strategy, medians of several runs.

Usage: python benchmarks/uneven.py [--hubs 4] [--long 2] [--short 3000] [--runs 5] [--hold-ms 10]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import gevent
from gevent.monkey import get_original

import greenpool

real_sleep = get_original("time", "sleep")


def long_connection(stop: threading.Event, hold: float) -> None:
    while not stop.is_set():
        real_sleep(hold)  # holds this hub; releases the GIL
        # then waits for its client's next message (an I/O wait, not sleep(0): a
        # greenlet spinning on sleep(0) keeps gevent in its callback phase for
        # up to 50 callbacks, starving the hub's I/O and its mailbox)
        gevent.sleep(0.0005)


def short_request() -> None:
    gevent.sleep(0)


def one_run(strategy: str, hubs: int, longs: int, shorts: int, hold: float) -> tuple[float, float]:
    stop = threading.Event()
    latencies: list[float] = []
    with greenpool.Pool(hubs, dispatch=strategy) as pool:
        holders = [pool.spawn(long_connection, stop, hold) for _ in range(longs)]
        futures = []
        for i in range(shorts):
            t0 = time.perf_counter()
            f = pool.spawn(short_request)
            f.add_done_callback(lambda _f, t0=t0: latencies.append(time.perf_counter() - t0))
            futures.append(f)
            if i % 50 == 49:
                time.sleep(0.001)  # a steady pace, not one burst
        for f in futures:
            f.result(30)
        stop.set()
        for h in holders:
            h.result(30)
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=4)
    parser.add_argument("--long", type=int, default=2, dest="longs")
    parser.add_argument("--short", type=int, default=3000, dest="shorts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hold-ms", type=float, default=10.0,
                        help="each blocking call of a long connection (default 10 ms)")
    opts = parser.parse_args(argv)
    strategies = ("round_robin", "least_loaded", "two_choices")
    results: dict[str, list[tuple[float, float]]] = {s: [] for s in strategies}
    for _ in range(opts.runs):
        for s in strategies:  # alternate, so machine noise hits all alike
            results[s].append(one_run(s, opts.hubs, opts.longs, opts.shorts, opts.hold_ms / 1e3))
    print(f"hubs={opts.hubs} long={opts.longs} (holding {opts.hold_ms:g} ms per call) "
          f"short={opts.shorts} runs={opts.runs} (medians)")
    print(f"{'strategy':14} {'p50 ms':>8} {'p99 ms':>8}")
    for s in strategies:
        p50 = statistics.median(r[0] for r in results[s]) * 1e3
        p99 = statistics.median(r[1] for r in results[s]) * 1e3
        print(f"{s:14} {p50:8.2f} {p99:8.2f}")


if __name__ == "__main__":
    main()
