"""Load: tiny tasks spawned from several plain threads onto every hub; nothing lost, no leak.

Each spawning thread owns a disjoint range of integers, spawns an identity
task for each (holding at most ``BATCH`` futures at a time) and checks the
count and the sum of the results it got back. RSS is read after a warm-up
that reaches the steady state (full batches on every thread) and again at
the end; the growth bound is set from measurements, with margin: on 2 shared
cores 1,000,000 tasks grew RSS by 0.2-1.7 MiB (median 0.4), 20,000 by 0.1-0.3 MiB.
"""

from __future__ import annotations

import gc
import threading
import time

import greenpool
from tests.reliability._support import mib, rss_bytes, sized

HUBS = 4
THREADS = 4
#: Futures one spawning thread holds at a time (bounds the working set).
BATCH = 1000
#: Warm-up tasks: four full batches per thread, so pools and free lists are warm.
WARMUP = THREADS * BATCH * 4
#: RSS growth allowed after warm-up; a leak of 8 bytes a task fails the full run.
RSS_BOUND = 8 * 2**20


def identity(x: int) -> int:
    return x


def spawn_range(pool: greenpool.Pool, start: int, stop: int, out: dict, key: int) -> None:
    """Spawn identity(i) for i in [start, stop) in batches; store (count, sum) of results."""
    count = total = 0
    try:
        for low in range(start, stop, BATCH):
            futures = [pool.spawn(identity, i) for i in range(low, min(stop, low + BATCH))]
            for future in futures:
                total += future.result(60)
                count += 1
    except BaseException as exc:  # noqa: BLE001 - reported by the test, not the thread
        out[key] = (count, total, repr(exc))
        return
    out[key] = (count, total)


def run_threads(pool: greenpool.Pool, n: int) -> tuple[dict, dict, float]:
    """``n`` tasks from THREADS threads; returns results, expected (count, sum), seconds."""
    per = n // THREADS
    out: dict = {}
    expected = {}
    threads = []
    for t in range(THREADS):
        start, stop = t * per, (t + 1) * per
        expected[t] = (per, (start + stop - 1) * per // 2)
        threads.append(threading.Thread(target=spawn_range, args=(pool, start, stop, out, t)))
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    return out, expected, time.perf_counter() - began


@sized(20_000, 1_000_000, fast_timeout=30, full_timeout=240)
def test_tiny_tasks_from_many_threads_all_arrive_and_rss_stays_flat(record, size):
    pool = greenpool.Pool(HUBS, name="load")
    try:
        run_threads(pool, WARMUP)
        gc.collect()
        rss_before = rss_bytes()
        done_before = [hub.tasks_done for hub in pool.hubs]
        out, expected, seconds = run_threads(pool, size)
        assert pool.join(30)
        gc.collect()
        growth = rss_bytes() - rss_before
        per_hub = [h.tasks_done - n for h, n in zip(pool.hubs, done_before, strict=True)]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    received = sum(result[0] for result in out.values())
    lost = size - received + sum(out.get(t) != expected[t] for t in expected)
    record(
        "tiny tasks, 4 threads -> 4 hubs",
        f"{size:,} tasks",
        lost,
        f"{seconds:.1f} s ({size / seconds:,.0f}/s); RSS +{mib(growth)} (bound {mib(RSS_BOUND)})",
    )
    assert out == expected, "a spawning thread got a wrong count or sum"
    assert per_hub == [size // HUBS] * HUBS, "round robin should give every hub the same share"
    assert growth < RSS_BOUND
