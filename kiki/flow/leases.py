"""Budget leases: each pool (campaign x platform) holds one SyncShield reservation at a time,
sized for `window` ticks, and spends from it tick by tick.

Reserving and committing every pool every tick would cost two ledger writes per pool per
tick (10,000 for 1,000 campaigns on 5 platforms, every 2 s). A lease covers several ticks and
is renewed (commit what was used, reserve the next window) when its window ends, when it
runs short of the next tick's need, or when the campaign stops bidding. Windows are staggered
by pool, so renewals spread evenly over ticks. The guarantee is unchanged: a pool never spends
more in a tick than what is left of a reservation SyncShield granted.

A new lease never takes more than its pool's part of the campaign's budget that is neither
spent nor held by another lease (parts in proportion to this tick's needs). SyncShield grants
first come, first served: without this, near the end of a budget the leases of pools that
could not spend held the last of it while a pool with demand was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kiki.money import sum_micros_by
from kiki.shield import BudgetOp, OpResult

# Error codes of a budget command that SyncShield never answered (shard restarting, deadline
# missed): retried next tick, never read as a refusal.
UNANSWERED = frozenset({"unavailable", "deadline_exceeded"})


@dataclass(frozen=True, slots=True)
class Renewals:
    """Leases to close (pool, reservation id, micros used) and to open (pool, micros)."""

    commits: list[tuple[int, str, int]]
    reserves: list[tuple[int, int]]


class LeaseBook:
    def __init__(
        self, pool_campaign: np.ndarray, window: int = 5, keep_exposure: bool = False
    ) -> None:
        """`pool_campaign`: the campaign (index) of each pool. `keep_exposure` (the live
        market): a renewed lease never holds less than the closed one had left, since the
        platform's daily budget in force let it spend that, reported or not."""
        if window < 1:
            raise ValueError("a lease window is at least one tick")
        self.window = window
        self.keep_exposure = keep_exposure
        self.pool_campaign = pool_campaign
        pools = len(pool_campaign)
        self.reservation: list[str | None] = [None] * pools
        self.amount = np.zeros(pools, dtype=np.int64)
        self.used = np.zeros(pools, dtype=np.int64)
        self.due = np.zeros(pools, dtype=np.int64)

    def remaining(self) -> np.ndarray:
        return self.amount - self.used

    def spend(self, pool_spend: np.ndarray) -> None:
        """Record what each pool spent in the last tick."""
        self.used += pool_spend

    def renewals(
        self, tick: int, need: np.ndarray, live: np.ndarray, budget_left: np.ndarray
    ) -> Renewals:
        """Which leases to close and open before `tick`, given each pool's need for the tick,
        whether its campaign is bidding and each campaign's budget not yet spent. Closed leases
        are forgotten at once."""
        held = np.array([r is not None for r in self.reservation], dtype=bool)
        close = held & ((tick >= self.due) | (self.remaining() < need) | ~live)
        left = np.where(close & self.keep_exposure, np.maximum(self.remaining(), 0), 0)
        commits = []
        for p in np.flatnonzero(close).tolist():
            commits.append((p, self.reservation[p], int(self.used[p])))
            self.reservation[p] = None
            self.amount[p] = self.used[p] = 0
        # A pool without a lease may carry spend reported meanwhile (see `opened`): a live
        # platform reports, late, spend its last lease allowed. The new lease covers it on
        # top of the pool's need (SyncShield grants what the budget holds; the rest is
        # committed as over-delivery), even when the pool needs nothing more.
        carried = np.where(held & ~close, 0, self.used)
        amount = np.minimum(need * self.window, self._room(need, budget_left)) + carried
        amount = np.maximum(amount, left)
        open_ = (~held | close) & (live | (carried > 0) | (left > 0)) & (amount > 0)
        reserves = [(p, int(amount[p])) for p in np.flatnonzero(open_).tolist()]
        return Renewals(commits, reserves)

    def ops(
        self,
        renewals: Renewals,
        keys: Sequence[tuple[str, str]],
        platforms: Sequence[str],
        tag: str,
    ) -> tuple[list[BudgetOp], list[BudgetOp]]:
        """SyncShield's commands for `renewals`: (commits, reserves). `keys` per campaign,
        `platforms` per pool; `tag` names the lease holder and tick, which with the pool is each
        reservation's idempotency key."""
        at = self.pool_campaign
        commits = [commit_op(keys[at[p]], rid, used) for p, rid, used in renewals.commits]
        reserves = [
            BudgetOp("reserve", *keys[at[p]], f"{tag}:{p}", micros, platforms[p])
            for p, micros in renewals.reserves
        ]
        return commits, reserves

    def settle(self, renewals: Renewals, results: Sequence[OpResult], tick: int) -> dict[int, str]:
        """Open the leases SyncShield granted (`results` of the reserves, in order). Returns the
        pools left without one, with the decision log's reason: `denied:<rule>` when SyncShield
        refused, `lease_skipped:<error>` when it could not answer (the pool waits a tick)."""
        denied: dict[int, str] = {}
        for (p, _), result in zip(renewals.reserves, results, strict=True):
            if result.outcome in ("granted", "partial"):
                self.opened(p, result.reservation_id or "", result.amount_micros, tick)
            elif result.outcome == "error" and result.error_code in UNANSWERED:
                denied[p] = f"lease_skipped:{result.error_code}"
            else:
                denied[p] = f"denied:{result.rule or result.error_code or result.outcome}"
        return denied

    def _room(self, need: np.ndarray, budget_left: np.ndarray) -> np.ndarray:
        """Each pool's part of its campaign's budget neither spent nor held by a lease."""
        campaigns = len(budget_left)
        held = sum_micros_by(self.pool_campaign, np.maximum(self.remaining(), 0), campaigns)
        free = np.maximum(budget_left - held, 0)[self.pool_campaign]
        total = sum_micros_by(self.pool_campaign, need, campaigns)[self.pool_campaign]
        share = np.divide(need, total, out=np.zeros(len(need)), where=total > 0)
        return np.floor(free * share).astype(np.int64)

    def opened(self, pool: int, reservation_id: str, micros: int, tick: int) -> None:
        """A reservation was granted. A pool's first window is shortened by pool % window so
        that renewals spread over ticks."""
        first = self.due[pool] == 0
        # Spend reported while the pool held no lease (a live platform delivering past one)
        # is carried into the new lease, so it is committed, as over-delivery if beyond it.
        carried = 0 if self.reservation[pool] is not None else int(self.used[pool])
        self.reservation[pool] = reservation_id
        self.amount[pool], self.used[pool] = micros, carried
        self.due[pool] = tick + (1 + pool % self.window if first else self.window)

    def caps(self, need: np.ndarray) -> np.ndarray:
        """What each pool may spend in the next tick: its need, within its lease."""
        held = np.array([r is not None for r in self.reservation], dtype=bool)
        return np.where(held, np.clip(self.remaining(), 0, need), 0)

    def close_all(self) -> list[tuple[int, str, int]]:
        """Every open lease, to commit (shutdown, or before the pools are renumbered)."""
        out = [
            (p, rid, int(self.used[p])) for p, rid in enumerate(self.reservation) if rid is not None
        ]
        pools = len(self.reservation)
        self.reservation = [None] * pools
        self.amount[:] = self.used[:] = 0
        return out


def commit_op(
    key: tuple[str, str], reservation_id: str, used: int, reports: tuple[tuple, ...] = ()
) -> BudgetOp:
    """Close a lease: a reservation is committed once, so its id is the idempotency key.
    `reports`: the platform report totals whose spend it charges (the live market)."""
    return BudgetOp("commit", *key, f"commit:{reservation_id}", used,
                    reservation_id=reservation_id, reports=reports)  # fmt: skip
