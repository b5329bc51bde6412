"""Shared fixtures: pools that are always shut down, within a bound."""

from __future__ import annotations

import pytest

import greenpool
from tests.helpers import shut_down


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
