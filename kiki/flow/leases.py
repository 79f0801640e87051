"""Budget leases: each pool (campaign x platform) holds one SyncShield reservation at a time,
sized for `window` ticks, and spends from it tick by tick.

Reserving and committing every pool every tick would cost two ledger writes per pool per
tick (10,000 for 1,000 campaigns on 5 platforms, every 2 s). A lease covers several ticks and
is renewed (commit what was used, reserve the next window) when its window ends, when it
runs short of the next tick's need, or when the campaign stops bidding. Windows are staggered
by pool, so renewals spread evenly over ticks. The guarantee is unchanged: a pool never spends
more in a tick than what is left of a reservation SyncShield granted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Renewals:
    """Leases to close (pool, reservation id, micros used) and to open (pool, micros)."""

    commits: list[tuple[int, str, int]]
    reserves: list[tuple[int, int]]


class LeaseBook:
    def __init__(self, pools: int, window: int = 5) -> None:
        if window < 1:
            raise ValueError("a lease window is at least one tick")
        self.window = window
        self.reservation: list[str | None] = [None] * pools
        self.amount = np.zeros(pools, dtype=np.int64)
        self.used = np.zeros(pools, dtype=np.int64)
        self.due = np.zeros(pools, dtype=np.int64)

    def remaining(self) -> np.ndarray:
        return self.amount - self.used

    def spend(self, pool_spend: np.ndarray) -> None:
        """Record what each pool spent in the last tick."""
        self.used += pool_spend

    def renewals(self, tick: int, need: np.ndarray, live: np.ndarray) -> Renewals:
        """Which leases to close and open before `tick`, given each pool's need for the tick
        and whether its campaign is bidding. Closed leases are forgotten at once."""
        held = np.array([r is not None for r in self.reservation], dtype=bool)
        close = held & ((tick >= self.due) | (self.remaining() < need) | ~live)
        commits = []
        for p in np.flatnonzero(close).tolist():
            commits.append((p, self.reservation[p], int(self.used[p])))
            self.reservation[p] = None
            self.amount[p] = self.used[p] = 0
        open_ = (~held | close) & live & (need > 0)
        reserves = [(p, int(need[p]) * self.window) for p in np.flatnonzero(open_).tolist()]
        return Renewals(commits, reserves)

    def opened(self, pool: int, reservation_id: str, micros: int, tick: int) -> None:
        """A reservation was granted. A pool's first window is shortened by pool % window so
        that renewals spread over ticks."""
        first = self.due[pool] == 0
        self.reservation[pool] = reservation_id
        self.amount[pool], self.used[pool] = micros, 0
        self.due[pool] = tick + (1 + pool % self.window if first else self.window)

    def caps(self, need: np.ndarray) -> np.ndarray:
        """What each pool may spend in the next tick: its need, within its lease."""
        held = np.array([r is not None for r in self.reservation], dtype=bool)
        return np.where(held, np.minimum(need, self.remaining()), 0)

    def close_all(self) -> list[tuple[int, str, int]]:
        """Every open lease, to commit (shutdown, or before the pools are renumbered)."""
        out = [
            (p, rid, int(self.used[p])) for p, rid in enumerate(self.reservation) if rid is not None
        ]
        pools = len(self.reservation)
        self.reservation = [None] * pools
        self.amount[:] = self.used[:] = 0
        return out
