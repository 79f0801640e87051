"""What a SyncShield replica works with: the budget shards' client and the guard actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.budget import BudgetClient
from actors.guard import platform_guard
from actors.resilience import within
from kiki.config import Settings


@dataclass(frozen=True)
class ShieldContext:
    budgets: BudgetClient
    guard: Any  # the guard actor's handle
    call_timeout_s: float

    @classmethod
    def start(cls, database_url: str, settings: Settings) -> ShieldContext:
        """Find (or create) the platform's budget shards and guard."""
        s = settings
        guard = platform_guard(
            num_cpus=min(0.05, s.replica_cpus),
            rate={"rate_per_s": s.platform_rate_per_s, "burst": s.platform_burst},
        )
        budgets = BudgetClient.for_settings(database_url, s)
        return cls(budgets, guard, s.actor_call_timeout_s)

    async def call_guard(self, method: str, *args: Any) -> Any:
        """One call to the guard actor, within the platform's actor-call deadline."""
        call = getattr(self.guard, method).remote(*args)
        return await within(call, self.call_timeout_s, "the platform guard")

    async def probe(self, timeout_s: float) -> dict[str, str]:
        """/health: every budget shard's group commit, and the guard."""
        checks = await self.budgets.probe(timeout_s)
        try:
            await within(self.guard.status.remote(), timeout_s, "the platform guard")
            checks["guard"] = "ok"
        except Exception as exc:
            checks["guard"] = f"failed: {getattr(exc, 'message', None) or repr(exc)}"
        return checks
