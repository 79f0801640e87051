"""What a SyncFlow replica works with: the budget shards (SyncShield's) and the bid-loop
shards this app creates."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from actors.budget import BudgetClient
from actors.flow import BidLoopClient
from kiki.flow.campaigns import Campaign, budget_op
from kiki.shield import BudgetOp

logger = logging.getLogger("kiki.flow")


@dataclass(frozen=True)
class FlowContext:
    budgets: BudgetClient
    loops: BidLoopClient
    tick_s: float  # the bid loop's: how often a live view has something new to show

    async def apply(self, campaign: Campaign, key: str | None = None) -> None:
        """Put the campaign's budget and policy into SyncShield, then have its bid-loop shard
        reload it. SyncShield first: the loop must never bid on a budget that is not there."""
        (result,) = await self.budgets.execute([budget_op(campaign, key)])
        result.raise_for_error()
        await self.loops.reload(campaign.tenant_id, campaign.campaign_id)

    async def measured(self, tenant_id: str) -> dict[str, tuple[int, int]]:
        """Per campaign of the tenant: (spend, conversion value) the bid loop has counted
        since its shard loaded it; empty when a shard does not answer (a list still shows)."""
        try:
            stats = await self.loops.stats()
        except Exception as exc:  # any failure: a missing figure, not a failed list
            logger.warning("bid-loop stats unavailable, campaign list without ROAS: %s", exc)
            return {}
        return {
            key[1]: (spent, value)
            for s in stats
            for key, spent, value in zip(s.keys, s.spent, s.value, strict=True)
            if key[0] == tenant_id
        }

    async def spent(self, campaign: Campaign) -> int | None:
        """Committed spend so far, from SyncShield's ledger (None when it cannot say)."""
        op = BudgetOp("status", campaign.tenant_id, campaign.campaign_id)
        (result,) = await self.budgets.execute([op])
        if result.outcome == "status" and result.snapshot:
            return result.snapshot["committed"]
        return None
