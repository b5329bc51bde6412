"""Dispatch strategies: which hub gets the next task spawned through a pool.

Each strategy is a factory ``make(hubs) -> choose()``; ``choose()`` is called
on every dispatch from any thread, so it reads only what is safe to read
without a lock (deque lengths, counters owned by the hub thread). Exactness is
not needed: a stale load figure only makes one choice slightly worse.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence


def round_robin(hubs: Sequence) -> Callable:
    """Hubs 0, 1, ..., N-1, 0, 1, ... in spawn order (``itertools.count`` is atomic)."""
    counter = itertools.count()
    n = len(hubs)
    if n == 1:
        only = hubs[0]
        return lambda: only
    return lambda: hubs[next(counter) % n]


def least_loaded(hubs: Sequence) -> Callable:
    """The hub with the fewest live (queued + running) tasks; ties go to the lowest index."""

    def choose():
        return min(hubs, key=_live)

    return choose


def two_choices(hubs: Sequence) -> Callable:
    """The less loaded of two hubs picked at random ("power of two choices").

    Nearly as balanced as ``least_loaded`` at O(1) cost per dispatch, and it
    avoids the herding where every caller piles onto the same "least" hub.
    """
    n = len(hubs)
    if n == 1:
        only = hubs[0]
        return lambda: only
    rng = random.Random()

    def choose():
        a, b = rng.sample(hubs, 2)
        return a if a.live <= b.live else b

    return choose


def _live(hub) -> int:
    return hub.live


STRATEGIES: dict[str, Callable] = {
    "round_robin": round_robin,
    "least_loaded": least_loaded,
    "two_choices": two_choices,
}
