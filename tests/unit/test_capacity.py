"""The node projection of `kiki bench flow` (benchmarks/capacity.py): the arithmetic the
README's "How many nodes" paragraph shows."""

from __future__ import annotations

import pytest

from benchmarks.capacity import ShardCosts, explain, project

# A run of 1,000 campaigns x 20 ad groups for 90 ticks in 30 s on 2 + 2 shards: 1.8 M
# decisions; 36 s of bid-loop CPU (20 us a decision), 18 s of budget CPU (200 us a
# campaign-tick) and 4.5 s in the guard (50 us a campaign-tick).
COSTS = ShardCosts(
    campaigns=1000,
    ticks=90,
    wall_s=30.0,
    decisions=1_800_000,
    bidloop_shards=2,
    budget_shards=2,
    bidloop_cpu_s=36.0,
    budget_cpu_s=18.0,
    guard_cpu_s=4.5,
    budget_ms_per_tick=12.0,
)


def test_per_shard_figures() -> None:
    assert COSTS.decisions_per_s_per_shard == pytest.approx(30_000)
    assert COSTS.bidloop_cpu_us_per_decision == pytest.approx(20.0)
    assert COSTS.budget_cpu_us_per_campaign_tick == pytest.approx(200.0)
    assert COSTS.guard_cpu_us_per_campaign_tick == pytest.approx(50.0)


def test_ten_thousand_campaigns() -> None:
    p = project(COSTS, 10_000, tick_s=2.0, vcpus=8, usable=0.75)
    # 5,000 campaign-ticks/s; 100,000 decisions/s x 20 us = 2 cores; 5,000 x 200 us = 1 core;
    # 5,000 x 50 us = 0.25 core: 3.25 cores over 6 usable vCPUs a node.
    assert p.decisions_per_s == pytest.approx(100_000)
    assert (p.bidloop_cores, p.budget_cores, p.guard_cores) == pytest.approx((2.0, 1.0, 0.25))
    # CPU asks for 3 bid-loop shards; the wall clock (30,000 decisions/s a shard, each tick
    # within 75 % of the interval) for 100,000 / 22,500 -> 5.
    assert (p.bidloop_shards, p.budget_shards) == (5, 2)
    assert (p.nodes, p.nodes_with_spare) == (1, 2)


def test_hundred_thousand_campaigns_scale_linearly() -> None:
    p = project(COSTS, 100_000, tick_s=2.0, vcpus=8, usable=0.75)
    # 32.5 cores / 6 = 5.4 -> 6 nodes, 7 with a spare; 1,000,000 / 22,500 -> 45 bid-loop
    # shards (their 20 cores alone would take 27).
    assert p.bidloop_cores + p.budget_cores + p.guard_cores == pytest.approx(32.5)
    assert (p.bidloop_shards, p.budget_shards) == (45, 14)
    assert (p.nodes, p.nodes_with_spare) == (6, 7)
    # The guard is one process: at 2.5 cores the explanation says it must be sharded.
    assert "shard it" in explain(COSTS, p)


def test_slower_ticks_and_bigger_nodes_need_fewer_nodes() -> None:
    slow = project(COSTS, 100_000, tick_s=4.0, vcpus=8)
    big = project(COSTS, 100_000, tick_s=2.0, vcpus=16)
    assert slow.nodes == 3  # 16.25 cores / 6
    assert big.nodes == 3  # 32.5 cores / 12
    assert "shard it" not in explain(COSTS, project(COSTS, 10_000))
