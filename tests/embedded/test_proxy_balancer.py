"""The proxy's weighted selection, tested without sockets."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from rollouts.platform.embedded.balancer import (
    NO_REVISION,
    BackendHealth,
    RevisionPool,
    WeightedBalancer,
    table_backend_keys,
)
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable


def _pods(rev: str, n: int, base_port: int) -> tuple[Backend, ...]:
    return tuple(Backend(pod=f"{rev}-{i}", host="127.0.0.1", port=base_port + i) for i in range(n))


def _table(weight: int, canary: bool = True) -> RoutingTable:
    return RoutingTable(
        primary=RevisionBackends("stable1", _pods("stable1", 3, 20000)),
        canary=RevisionBackends("canary2", _pods("canary2", 2, 21000)) if canary else None,
        canary_weight=weight,
    )


@pytest.mark.parametrize(
    "weight",
    [5, 10, 25, 50, 0, 100],
    ids=["weight-5", "weight-10", "weight-25", "weight-50", "weight-0", "weight-100"],
)
def test_canary_share_is_exact_over_10000_requests(weight: int) -> None:
    balancer = WeightedBalancer(_table(weight))
    counts = Counter(balancer.pick().label for _ in range(10_000))
    share = 100.0 * counts["canary2"] / 10_000
    assert abs(share - weight) <= 1.5
    # the smooth scheme is in fact exact over every whole cycle of 100
    assert counts["canary2"] == weight * 100
    assert counts["stable1"] == (100 - weight) * 100


@pytest.mark.parametrize("weight", [5, 10, 25, 50], ids=["weight-5", "weight-10", "weight-25", "weight-50"])
def test_canary_picks_are_spread_not_bursty(weight: int) -> None:
    balancer = WeightedBalancer(_table(weight))
    picks = [balancer.pick().label == "canary2" for _ in range(1000)]
    # every window of 100 consecutive requests holds exactly `weight` canary requests
    for start in range(0, 900, 37):
        assert sum(picks[start : start + 100]) == weight
    # and no two canary picks are closer than the ideal spacing allows
    positions = [i for i, c in enumerate(picks) if c]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert min(gaps) >= 100 // weight - 1


def test_round_robin_within_a_revision() -> None:
    balancer = WeightedBalancer(_table(0))
    pool = balancer.pick()
    picked = [pool.pick() for _ in range(9)]
    assert [b.pod if b else None for b in picked] == [f"stable1-{i % 3}" for i in range(9)]


def test_failed_backends_are_skipped_while_another_is_left() -> None:
    pool = RevisionPool(RevisionBackends("r", _pods("r", 3, 22000)))
    health = BackendHealth(cooldown=5.0)
    health.mark_failed(pool.backends[1], now=100.0)
    picked = {b.pod for b in (pool.pick(health, 101.0) for _ in range(6)) if b}
    assert picked == {"r-0", "r-2"}
    # after the cool-down the pod is back
    picked = {b.pod for b in (pool.pick(health, 106.0) for _ in range(6)) if b}
    assert picked == {"r-0", "r-1", "r-2"}


def test_all_failed_still_tries_one_and_exclude_is_honoured() -> None:
    pool = RevisionPool(RevisionBackends("r", _pods("r", 2, 23000)))
    health = BackendHealth()
    for b in pool.backends:
        health.mark_failed(b, now=0.0)
    assert pool.pick(health, 0.5) is not None
    assert pool.pick(health, 0.5, exclude=set(pool.backends)) is None
    assert pool.pick(health, 0.5, exclude={pool.backends[0]}) == pool.backends[1]


def test_missing_sides() -> None:
    # no canary: everything to the primary, whatever the weight says
    balancer = WeightedBalancer(_table(30, canary=False))
    assert balancer.canary_weight == 0
    assert {balancer.pick().label for _ in range(50)} == {"stable1"}
    # no primary: its share falls on an empty "none" pool (the proxy answers 503)
    only_canary = WeightedBalancer(
        RoutingTable(primary=None, canary=RevisionBackends("c", _pods("c", 1, 24000)), canary_weight=20)
    )
    labels = Counter(only_canary.pick().label for _ in range(100))
    assert labels == {"c": 20, NO_REVISION: 80}
    empty = WeightedBalancer(RoutingTable())
    pool = empty.pick()
    assert pool.label == NO_REVISION and pool.pick() is None
    assert empty.pools() == ()


def test_weights_are_clamped() -> None:
    assert WeightedBalancer(_table(150)).canary_weight == 100
    assert WeightedBalancer(_table(-3)).canary_weight == 0


def test_rebuilt_balancer_continues_the_sequence() -> None:
    """A controller re-applying its table every few requests must not starve a 5 % canary."""
    table = _table(5)
    balancer = WeightedBalancer(table)
    canary = 0
    for _ in range(1000):
        for _ in range(3):
            canary += balancer.pick().label == "canary2"
        balancer = WeightedBalancer(table, previous=balancer)
    assert canary == 150  # exactly 5 % of 3000
    # round robin positions carry over too
    pool = balancer.primary
    first = pool.pick()
    rebuilt = WeightedBalancer(table, previous=balancer)
    assert rebuilt.primary.pick() != first


def test_table_backend_keys() -> None:
    keys = table_backend_keys(_table(10))
    assert ("127.0.0.1", 20000) in keys and ("127.0.0.1", 21001) in keys and len(keys) == 5
    assert table_backend_keys(RoutingTable()) == set()
