"""Hub health: Pool.stats() and the blocked-hub detector."""

from __future__ import annotations

import logging
import threading

import pytest

import greenpool


def test_stats_report_counters_and_loop_lag_for_every_hub(pool):
    for f in [pool.spawn(lambda: None) for _ in range(8)]:
        f.result(5)
    stats = pool.stats()
    assert [s.index for s in stats] == [0, 1, 2, 3]
    assert all(s.alive and s.live == 0 and s.queued == 0 for s in stats)
    assert sum(s.tasks_done for s in stats) == 8
    assert all(s.loop_lag is not None and 0 <= s.loop_lag < 1.0 for s in stats)


def test_stats_show_a_stuck_hub_as_busy_with_no_loop_lag_answer(make_pool):
    p = make_pool(2)
    release, started = threading.Event(), threading.Event()
    stuck = p.spawn_on(0, lambda: (started.set(), release.wait(10)))  # unpatched wait
    queued = p.spawn_on(0, lambda: "after")
    assert started.wait(5)
    stats = p.stats(timeout=1.0)  # hub 0 never answers; hub 1 gets a second even on a slow box
    assert stats[0].running == 1 and stats[0].queued == 1 and stats[0].loop_lag is None
    assert stats[1].loop_lag is not None
    release.set()
    assert stuck.result(5) == (None, True) and queued.result(5) == "after"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def about(self, hub) -> list[logging.LogRecord]:
        return [r for r in self.records if hub.name in r.getMessage()]

    def wait_about(self, hub, timeout: float) -> list[logging.LogRecord]:
        with self.changed:
            self.changed.wait_for(lambda: self.about(hub), timeout)
            return self.about(hub)


@pytest.fixture
def monitor_log():
    handler = _Capture()
    logger = logging.getLogger("greenpool.monitor")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_blocked_hub_detector_logs_one_warning_with_the_blocking_stack(make_pool, monitor_log):
    p = make_pool(2, blocked_hub_threshold=0.1)
    release = threading.Event()

    def hog_the_hub():
        release.wait(10)  # an unpatched blocking call: the hub cannot run its loop

    f = p.spawn_on(1, hog_the_hub)
    # Only records about hub 1 count: a whole-process stall (a long GC pass,
    # a descheduled VM) may rightly report the idle hub 0 as well.
    records = monitor_log.wait_about(p.hubs[1], 10)
    assert records, "no warning about the blocked hub"
    message = records[0].getMessage()
    assert "hog_the_hub" in message
    assert "greenpool.blocking" in message  # names the fix
    # still blocked for several more check intervals: no second warning
    assert not release.wait(0.3)
    release.set()
    f.result(5)
    assert len(monitor_log.about(p.hubs[1])) == 1


def test_blocked_hub_detector_is_off_by_default(make_pool, monitor_log):
    p = make_pool(1)
    assert p._monitor is None
    release = threading.Event()
    f = p.spawn(lambda: release.wait(0.3))
    f.result(5)
    assert monitor_log.records == []


def test_cooperative_hubs_do_not_trigger_the_detector(make_pool, monitor_log):
    import gevent

    # A threshold well above a stall of the whole test process (GC, a busy
    # VM), and busy hubs for more than twice as long as the threshold.
    p = make_pool(2, blocked_hub_threshold=0.5)

    def busy_but_cooperative():
        for _ in range(24):
            gevent.sleep(0.05)

    futures = [p.spawn(busy_but_cooperative) for _ in range(20)]
    for f in futures:
        f.result(10)
    assert monitor_log.records == []


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), ("1", TypeError)])
def test_bad_blocked_hub_threshold_raises(bad, error):
    with pytest.raises(error, match="blocked_hub_threshold"):
        greenpool.Pool(1, blocked_hub_threshold=bad)
