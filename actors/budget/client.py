"""Routing budget commands to the shard that holds each campaign (a stable hash), one call
per shard per batch, each within a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import uuid4

import ray

from actors import shard_options
from actors.budget.shard import BudgetShardActor
from actors.resilience import within
from kiki.clock import Clock
from kiki.config import Settings
from kiki.errors import KikiError
from kiki.shield.book import (
    BudgetOp,
    OpResult,
    shard_of,
)

ACTOR_PREFIX = "kiki-budget"
READY_TIMEOUT_S = 120.0
# Commands that change state must carry a key, so Ray's retries cannot apply them twice.
_WRITES = {"allocate", "policy", "reserve", "commit", "release", "unblock"}


class BudgetClient:
    """Routes commands to the shard that holds each campaign; one call per shard per batch.
    Every call has a deadline: a shard that misses it (or is restarting) answers its own
    commands with `unavailable` errors, and the other shards' answers still count."""

    def __init__(
        self,
        database_url: str,
        shards: int = 2,
        namespace: str = "kiki",
        num_cpus: float = 0.1,
        reservation_ttl_s: float = 900.0,
        clock: Clock | None = None,
        detached: bool = True,
        call_timeout_s: float = 10.0,
        placement: Mapping[str, Any] | None = None,
    ) -> None:
        """`clock` and `detached=False` are for simulations: shards on a virtual clock that
        end with the driver that made them. `placement`: more Ray actor options, e.g. the
        resources that pin the shards to one node in a benchmark (a `num_cpus` there wins)."""
        self.shards = shards
        self.call_timeout_s = call_timeout_s
        self.actors = [
            BudgetShardActor.options(
                **shard_options(
                    ACTOR_PREFIX,
                    i,
                    shards,
                    namespace,
                    detached,
                    max_concurrency=1000,
                    **{"num_cpus": num_cpus, **(placement or {})},
                )
            ).remote(i, shards, database_url, reservation_ttl_s, clock)
            for i in range(shards)
        ]

    @classmethod
    def for_settings(cls, database_url: str, settings: Settings) -> BudgetClient:
        """The platform's budget shards, as every app that needs them finds them."""
        return cls(
            database_url,
            shards=settings.budget_shards,
            num_cpus=min(0.1, settings.replica_cpus),
            reservation_ttl_s=settings.reservation_ttl_s,
            call_timeout_s=settings.actor_call_timeout_s,
        )

    def with_keys(self, ops: Sequence[BudgetOp]) -> list[BudgetOp]:
        """Give every write without an idempotency key a fresh one, before the first send,
        so that Ray's retries of the same call carry the same key."""
        out = []
        for op in ops:
            if op.kind in _WRITES and not op.idempotency_key:
                op = replace(op, idempotency_key=f"auto:{uuid4()}")
            out.append(op)
        return out

    async def execute(self, ops: Sequence[BudgetOp]) -> list[OpResult]:
        ops = self.with_keys(ops)
        by_shard: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_shard.setdefault(shard_of(op.tenant_id, op.campaign_id, self.shards), []).append(i)
        shard_ids = list(by_shard)
        replies = await asyncio.gather(
            *(
                within(
                    self.actors[s].execute.remote([ops[i] for i in by_shard[s]]),
                    self.call_timeout_s,
                    f"budget shard {s}",
                )
                for s in shard_ids
            ),
            return_exceptions=True,
        )
        results: list[OpResult | None] = [None] * len(ops)
        for s, reply in zip(shard_ids, replies, strict=True):
            if isinstance(reply, BaseException):
                reply = [_failed(ops[i], reply) for i in by_shard[s]]
            for i, result in zip(by_shard[s], reply, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    async def ready(self) -> int:
        """Wait until every shard has rebuilt its book from the ledger (a cold start may
        replay many events: a longer deadline than a command's)."""
        return sum(
            await asyncio.gather(
                *(
                    within(a.ready.remote(), READY_TIMEOUT_S, f"budget shard {i}")
                    for i, a in enumerate(self.actors)
                )
            )
        )

    async def probe(self, timeout_s: float) -> dict[str, str]:
        """Each shard's health: "ok" when an empty batch went through its group commit."""

        async def one(i: int) -> str:
            try:
                await within(self.actors[i].probe.remote(), timeout_s, f"budget shard {i}")
            except Exception as exc:
                return f"failed: {getattr(exc, 'message', None) or repr(exc)}"
            return "ok"

        states = await asyncio.gather(*(one(i) for i in range(self.shards)))
        return {f"budget_shard_{i}": state for i, state in enumerate(states)}

    def kill(self) -> None:
        """End the shards: for a simulation's own budget actors, never the platform's."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    async def advance_clock(self, moment: datetime) -> None:
        await asyncio.gather(
            *(
                within(a.advance_clock.remote(moment), self.call_timeout_s, f"budget shard {i}")
                for i, a in enumerate(self.actors)
            )
        )


def _failed(op: BudgetOp, exc: BaseException) -> OpResult:
    """The answer to a command whose shard did not answer (or failed as a whole)."""
    if isinstance(exc, KikiError):
        code, message = exc.code, exc.message
    else:
        code, message = "unavailable", f"budget shard failed ({exc.__class__.__name__})"
    return OpResult("error", op.campaign_id, message=message, error_code=code)
