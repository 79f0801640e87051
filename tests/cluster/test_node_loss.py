"""Node loss (issue 18, point 5): the worker node that holds the budget shards, the bid-loop
shards and the guard is killed while the bid loop runs on the wall clock. Ray restarts them on
the surviving node, the budget shards rebuild from the ledger, and the loop resumes; no
campaign spends past its budget and no ledger row is lost.

The scenario (a 3-node `ray.cluster_utils.Cluster`, each node with its own KIKI_HOME) is
benchmarks/node_loss.py, which `kiki bench node-loss` times too.
"""

from __future__ import annotations

import asyncio

from benchmarks.node_loss import NodeLossOptions, run_node_loss
from kiki.db.migrate import migrate_url


def test_the_bid_loop_survives_losing_the_node_that_holds_its_shards(fresh_db: str) -> None:
    asyncio.run(migrate_url(fresh_db))
    options = NodeLossOptions(campaigns=4, tick_s=0.5, ticks_before=6, ticks_after=4)
    r = run_node_loss(fresh_db, options)

    # Every actor the loop needs was on the lost node, and came back once on the other one.
    assert set(r.placed.values()) == {r.lost_node}
    assert all(node and node != r.lost_node for node in r.moved.values()), r.moved
    assert set(r.restarts.values()) == {1}, r.restarts

    # The loop paused (Ray first has to notice the node is gone), then resumed: every
    # campaign decided again, tick after tick, on the restarted shards.
    assert 0 < r.dead_s <= r.alive_s < options.timeout_s
    assert r.dead_s < r.recovery_s < options.timeout_s
    assert all(lost > 0 for lost in r.ticks_lost.values()), r.ticks_lost
    assert all(ticks >= options.ticks_after for ticks in r.ticks_after.values())

    # 0 lost ledger rows, and the rebuilt books are the ledger's: the restarted shards
    # answer exactly what a replay of the rows alone gives.
    assert r.ledger_rows_before > 0 and r.ledger_rows_missing == 0
    assert r.books_differ == []
    assert r.shard_committed_micros == r.committed_micros

    # 0 overspend: committed spend, plus what the exchange delivered to the lost shard's
    # open leases and nobody committed, stays within every budget. The campaigns spend up
    # against their caps, so the caps are what held.
    assert set(r.overspend_micros.values()) == {0}, r.overspend_micros
    for campaign, budget in r.budget_micros.items():
        spent = r.committed_micros[campaign] + r.lost_in_flight_micros[campaign]
        assert 0 < spent <= budget
