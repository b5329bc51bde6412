"""Shared fixtures: pools that are always shut down."""

from __future__ import annotations

import pytest

import greenpool


@pytest.fixture
def pool():
    """A 4-hub pool, shut down (cancelling leftovers) after the test."""
    p = greenpool.Pool(4, name="test")
    try:
        yield p
    finally:
        p.shutdown(wait=True, cancel_futures=True)


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
        p.shutdown(wait=True, cancel_futures=True)
