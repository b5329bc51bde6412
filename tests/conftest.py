"""Shared fixtures: pools that are always shut down, within a bound."""

from __future__ import annotations

import pytest

import greenpool

#: How long a fixture waits for a pool's hubs to stop after its test. Bounded
#: because pytest-timeout stops timing a test once it has failed: an unbounded
#: shutdown(wait=True) in the teardown of a failed test could hang the run.
TEARDOWN_SECONDS = 30.0


def shut_down(p: greenpool.Pool) -> None:
    """Cancel what is left on ``p`` and wait (bounded) for its hubs to stop."""
    p.shutdown(wait=False, cancel_futures=True)
    stuck = [hub.name for hub in p.hubs if not hub.wait_stopped(TEARDOWN_SECONDS)]
    assert not stuck, f"hubs {stuck} still running {TEARDOWN_SECONDS:g}s after the test"


@pytest.fixture
def pool():
    """A 4-hub pool, shut down (cancelling leftovers) after the test."""
    p = greenpool.Pool(4, name="test")
    try:
        yield p
    finally:
        shut_down(p)


@pytest.fixture
def make_pool():
    """Factory for pools with custom options; all shut down after the test."""
    pools = []

    def make(*args, **kwargs):
        p = greenpool.Pool(*args, **kwargs)
        pools.append(p)
        return p

    yield make
    for p in pools:
        shut_down(p)
