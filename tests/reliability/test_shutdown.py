"""Shutdown under load: every accepted task finishes, or is cancelled, and none hangs.

``shutdown(wait=True)`` must run every task it accepted to the end, including
children that tasks spawn while the pool drains; ``cancel_futures=True`` must
leave every future done (and every killed task's ``finally`` run); SIGTERM
during :func:`greenpool.run` must end the process cleanly.
"""

from __future__ import annotations

import itertools
import signal
import sys
import textwrap
import threading
import time

import gevent
import gevent.event
import pytest

import greenpool
from tests.procs import ServerProcess
from tests.reliability._support import sized, wait_until

HUBS = 4
SPAWNERS = 2


class Spawners:
    """Plain threads that spawn ``make_task(i)`` until the pool refuses; keep the futures."""

    def __init__(self, pool: greenpool.Pool, fn, count: int = SPAWNERS) -> None:
        self.accepted: list = []
        self.refused = [False] * count
        self._numbers = itertools.count()
        self._threads = [
            threading.Thread(target=self._run, args=(pool, fn, k), daemon=True)
            for k in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, pool, fn, k) -> None:
        while True:
            i = next(self._numbers)
            try:
                future = pool.spawn(fn, i)
            except RuntimeError:
                self.refused[k] = True
                return
            self.accepted.append((i, future))
            if i % 1000 == 999:
                time.sleep(0)  # let the hubs and the main thread in

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
        assert all(self.refused), "a spawner was still spawning after shutdown"


@sized(10_000, 200_000, fast_timeout=30, full_timeout=180)
def test_shutdown_wait_finishes_every_accepted_task_and_its_children(record, size):
    pool = greenpool.Pool(HUBS, name="drain")
    gates = [f.result(5) for f in pool.broadcast(gevent.event.Event)]
    children_ran: list[int] = []
    gated_children: list = []

    def child(i: int) -> None:
        gevent.sleep(0)
        children_ran.append(i)

    def parent(i: int) -> int:
        gevent.sleep(0)
        greenpool.spawn(child, i)
        return i

    def gated_parent(i: int) -> int:
        hub = greenpool.current_hub()
        gates[hub.index].wait()
        # The gates open after shutdown() began: these are spawns while draining,
        # on the same hub and on the next one.
        gated_children.append(greenpool.spawn(lambda: i))
        gated_children.append(pool.spawn_on((hub.index + 1) % HUBS, lambda: i))
        return i

    gated_count = min(size // 10, 2000)
    gated = [pool.spawn(gated_parent, i) for i in range(gated_count)]
    spawners = Spawners(pool, parent)
    try:
        wait_until(lambda: len(spawners.accepted) >= size, 120, f"{size} accepted spawns")
        pool.shutdown(wait=False)
        for hub, gate in zip(pool.hubs, gates, strict=True):
            hub.call_soon_threadsafe(gate.set)
        began = time.perf_counter()
        pool.shutdown(wait=True)
        drain_seconds = time.perf_counter() - began
        spawners.join(30)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    accepted = spawners.accepted
    wrong = sum(not f.done() or f.cancelled() or f.result() != i for i, f in accepted)
    wrong += sum(not f.done() or f.cancelled() or f.result() != i for i, f in enumerate(gated))
    wrong += sum(not f.done() or f.cancelled() for f in gated_children)
    missing_children = len(accepted) - len(children_ran)
    missing_children += 2 * gated_count - len(gated_children)
    total = len(accepted) + gated_count
    record(
        "shutdown(wait=True) under load",
        f"{total:,} tasks + {len(children_ran) + len(gated_children):,} children "
        f"({len(gated_children):,} spawned while draining)",
        wrong + missing_children,
        f"drained in {drain_seconds:.2f} s",
    )
    assert wrong == 0
    assert missing_children == 0
    assert sorted(children_ran) == sorted(i for i, _ in accepted)
    assert all(not hub.is_alive() for hub in pool.hubs)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.spawn(child, 0)


@sized(10_000, 200_000, fast_timeout=30, full_timeout=180)
def test_shutdown_cancel_futures_leaves_no_future_pending(record, size):
    pool = greenpool.Pool(HUBS, name="cancel")
    never = [f.result(5) for f in pool.broadcast(gevent.event.Event)]
    started: list[int] = []
    cleaned: list[int] = []
    children: list = []

    def task(i: int) -> int:
        started.append(i)
        try:
            if i % 10 == 0:  # one in ten blocks until killed
                never[greenpool.current_hub().index].wait()
            gevent.sleep(0)
            if i % 3 == 0:
                children.append(greenpool.spawn(gevent.sleep, 0))
            return i
        finally:
            cleaned.append(i)

    spawners = Spawners(pool, task)
    try:
        wait_until(lambda: len(spawners.accepted) >= size, 120, f"{size} accepted spawns")
        began = time.perf_counter()
        pool.shutdown(wait=True, cancel_futures=True)
        seconds = time.perf_counter() - began
        spawners.join(30)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    futures = [f for _, f in spawners.accepted] + children
    pending = sum(not f.done() for f in futures)
    cancelled = sum(f.cancelled() for f in futures)
    wrong = sum(
        not f.cancelled() and f.done() and f.result() != i for i, f in spawners.accepted
    )
    unclean = len(started) - len(cleaned)
    record(
        "shutdown(cancel_futures=True) under load",
        f"{len(futures):,} futures ({cancelled:,} cancelled)",
        pending + wrong + unclean,
        f"stopped in {seconds:.2f} s",
    )
    assert pending == 0, "futures left pending after shutdown(cancel_futures=True)"
    assert wrong == 0
    assert sorted(started) == sorted(cleaned), "a killed task's finally did not run"
    assert all(not hub.is_alive() for hub in pool.hubs)


SIGTERM_SCRIPT = """
    import sys
    import gevent
    import greenpool

    LOAD = int(sys.argv[1])
    futures = []

    def work(i):
        gevent.sleep(0.001)
        greenpool.spawn(gevent.sleep, 0.001)
        return i

    def main():
        n = 0
        while True:
            for _ in range(200):
                futures.append(greenpool.spawn(work, n))
                n += 1
            if n == LOAD:
                print("loaded", flush=True)
            gevent.sleep(0)

    result = greenpool.run(main, size=4)
    pending = sum(not f.done() for f in futures)
    print(f"returned {result!r}; {len(futures)} spawned, {pending} pending", flush=True)
"""


@sized(1, 5, fast_timeout=30, full_timeout=120)
def test_sigterm_during_run_under_load_exits_cleanly(record, size):
    load = 20_000
    outcomes = []
    for _ in range(size):
        with ServerProcess(
            [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), str(load)]
        ) as proc:
            proc.wait_for("^loaded$", timeout=20)
            began = time.perf_counter()
            code = proc.stop(signal.SIGTERM, timeout=20)
            seconds = time.perf_counter() - began
            outcomes.append((code, proc.output, seconds))
    bad = [(code, out) for code, out, _ in outcomes
           if code != 0 or "Traceback" in out or ", 0 pending" not in out]
    record(
        "SIGTERM during greenpool.run under load",
        f"{size} process(es), >= {load:,} tasks each",
        len(bad),
        f"exit within {max(s for *_, s in outcomes):.2f} s",
    )
    assert not bad, bad[0][1]
    assert all("returned None" in out for _, out, _ in outcomes)
