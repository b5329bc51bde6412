"""Dispatch strategies: invariants checked with hypothesis on stub hubs and on a real pool."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import greenpool
from greenpool.dispatch import STRATEGIES, least_loaded, round_robin, two_choices


@dataclass
class StubHub:
    index: int
    live: int


loads = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=16)


@given(loads, st.integers(min_value=1, max_value=100))
def test_round_robin_cycles_through_every_hub_in_order(live, spawns):
    hubs = [StubHub(i, n) for i, n in enumerate(live)]
    choose = round_robin(hubs)
    assert [choose().index for _ in range(spawns)] == [i % len(hubs) for i in range(spawns)]


@given(loads)
def test_least_loaded_picks_a_hub_with_the_minimum_load(live):
    hubs = [StubHub(i, n) for i, n in enumerate(live)]
    chosen = least_loaded(hubs)()
    assert chosen.live == min(live)
    assert chosen.index == live.index(min(live))  # ties go to the lowest index


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=16, unique=True), st.integers(1, 50))
def test_two_choices_never_picks_the_unique_most_loaded_hub(live, rounds):
    hubs = [StubHub(i, n) for i, n in enumerate(live)]
    choose = two_choices(hubs)
    for _ in range(rounds):
        assert choose().live != max(live)


@given(st.sampled_from(sorted(STRATEGIES)), loads)
def test_every_strategy_returns_one_of_the_pools_hubs(name, live):
    hubs = [StubHub(i, n) for i, n in enumerate(live)]
    choose = STRATEGIES[name](hubs)
    assert all(choose() in hubs for _ in range(5))


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=20))
def test_round_robin_on_a_real_pool_matches_spawn_order(size, spawns):
    with greenpool.Pool(size) as p:
        got = [p.spawn(lambda: greenpool.current_hub().index).result(5) for _ in range(spawns)]
    assert got == [i % size for i in range(spawns)]


@pytest.mark.parametrize("dispatch", sorted(STRATEGIES))
def test_every_strategy_runs_every_task_exactly_once(make_pool, dispatch):
    p = make_pool(3, dispatch=dispatch)
    results = sorted(f.result(10) for f in [p.spawn(lambda i=i: i) for i in range(300)])
    assert results == list(range(300))
