"""Hub health: per-hub statistics and a detector for hubs stuck outside their loop.

A gevent hub serves nothing while one greenlet runs without yielding (an
unpatched C call, a CPU-bound loop). gevent's own monitor thread watches one
hub by tracing every greenlet switch; greenpool avoids that per-switch cost.
Each monitored hub runs a cheap unref'd heartbeat timer in its loop, and one
native monitor thread per pool checks the heartbeats: a hub whose timer has
not fired for longer than the threshold has not returned to its loop, and the
frame its thread is executing (``sys._current_frames()``) is the stack of the
greenlet holding it. One warning is logged per stall.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from greenpool._native import allocate_lock, start_new_thread

if TYPE_CHECKING:
    from greenpool.hub import Hub

log = logging.getLogger("greenpool.monitor")


@dataclass(frozen=True)
class HubStats:
    """A snapshot of one hub, as returned by :meth:`greenpool.Pool.stats`.

    ``loop_lag`` is how long a callback posted to the hub waited before its
    loop ran it (seconds), or None if the hub did not answer within the
    timeout given to ``stats()`` (a stuck or stopped hub).
    """

    index: int
    name: str
    alive: bool
    live: int
    queued: int
    running: int
    tasks_done: int
    loop_lag: float | None


def measure(hubs: Sequence[Hub], timeout: float) -> list[HubStats]:
    """Probe every hub's loop at once and read its counters."""
    posted: dict[int, float] = {}
    answered: dict[int, float] = {}
    done = allocate_lock()
    done.acquire()
    remaining = [sum(1 for h in hubs if h.is_alive())]
    guard = allocate_lock()

    def answer(index: int) -> None:
        answered[index] = time.monotonic() - posted[index]
        with guard:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.release()

    for hub in hubs:
        if hub.is_alive():
            posted[hub.index] = time.monotonic()
            hub.call_soon_threadsafe(answer, hub.index)
    if remaining[0]:
        done.acquire(True, timeout)
    return [
        HubStats(
            index=hub.index,
            name=hub.name,
            alive=hub.is_alive(),
            live=hub.live,
            queued=hub.queued,
            running=hub.running,
            tasks_done=hub.tasks_done,
            loop_lag=answered.get(hub.index),
        )
        for hub in hubs
    ]


class BlockedHubMonitor:
    """Warns once when a hub stays out of its loop longer than ``threshold`` seconds."""

    def __init__(self, hubs: Sequence[Hub], threshold: float) -> None:
        self.hubs = hubs
        self.threshold = threshold
        self.interval = threshold / 4
        self._beats: dict[int, float] = {}
        self._timers: dict[int, object] = {}
        self._reported: set[int] = set()
        self._stop = allocate_lock()
        self._stop.acquire()

    def install(self, hub: Hub) -> None:
        """In ``hub``'s thread: start its heartbeat timer (unref'd: never keeps a loop alive)."""
        self._beats[hub.index] = time.monotonic()
        timer = hub.loop.timer(self.interval, self.interval, ref=False)
        timer.start(self._beat, hub.index)
        self._timers[hub.index] = timer

    def _beat(self, index: int) -> None:
        self._beats[index] = time.monotonic()

    def start(self) -> None:
        start_new_thread(self._watch, ())

    def stop(self) -> None:
        try:
            self._stop.release()
        except RuntimeError:
            pass

    def _watch(self) -> None:
        while not self._stop.acquire(True, self.interval):
            if not any(hub.is_alive() for hub in self.hubs):
                return  # the pool has stopped (shutdown without wait)
            now = time.monotonic()
            frames = None
            for hub in self.hubs:
                if not hub.is_alive():
                    continue
                stalled = now - self._beats.get(hub.index, now)
                if stalled <= self.threshold:
                    self._reported.discard(hub.index)
                    continue
                if hub.index in self._reported:
                    continue
                self._reported.add(hub.index)
                if frames is None:
                    frames = sys._current_frames()
                frame = frames.get(hub.thread_ident)  # type: ignore[arg-type]  # alive: set
                stack = "".join(traceback.format_stack(frame)) if frame else "(no frame)\n"
                log.warning(
                    "hub %s has not returned to its event loop for %.2fs (threshold %.2fs); "
                    "nothing else on it runs meanwhile. The greenlet holding it:\n%s"
                    "Fix: yield (gevent.sleep(0)), or move the call off the hub with "
                    "greenpool.blocking().",
                    hub.name, stalled, self.threshold, stack,
                )
