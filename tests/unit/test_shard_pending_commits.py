"""A commit SyncShield did not answer is retried by the shard's next budget call, whichever
call that is: a tick's renewals, or the settling of a reload or a stop. A reload that settled
without it lost that spend from SyncShield's books while the engine held it (seen once in CI:
a campaign holding 5.15 USD more than was committed)."""

import asyncio

from actors.flow.shard import BidLoopShard
from kiki.flow.leases import commit_op
from kiki.shield.book import BudgetOp, OpResult


class FlakyBudgets:
    """SyncShield's client, leaving the first call's commits unanswered."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def with_keys(self, ops: list[BudgetOp]) -> list[BudgetOp]:
        return ops

    async def execute(self, ops: list[BudgetOp]) -> list[OpResult]:
        self.calls.append([op.reservation_id or "" for op in ops])
        if len(self.calls) == 1:
            return [OpResult("error", op.campaign_id, error_code="unavailable") for op in ops]
        return [OpResult("committed", op.campaign_id) for op in ops]


class NoMarks:
    def settled(self, marks: tuple, committed: bool) -> None:
        pass


class Shard:
    """What BidLoopShard._run_budget_ops reads of its actor."""

    def __init__(self) -> None:
        self.shard = 0
        self.budgets = FlakyBudgets()
        self.market = NoMarks()
        self.pending_commits: list[BudgetOp] = []


def test_an_unanswered_commit_is_retried_by_the_settling_of_a_reload() -> None:
    shard = Shard()
    run = BidLoopShard._run_budget_ops

    async def scenario() -> None:
        await run(shard, [commit_op(("t", "c"), "lease-1", 5_150_000)])  # type: ignore[arg-type]
        assert [op.reservation_id for op in shard.pending_commits] == ["lease-1"]
        # A reload settles its open leases: only those are passed, the pending one goes too.
        results = await run(shard, [commit_op(("t", "c"), "lease-2", 1_000)])  # type: ignore[arg-type]
        assert shard.budgets.calls[1] == ["lease-1", "lease-2"]
        assert len(results) == 2 and shard.pending_commits == []

    asyncio.run(scenario())
