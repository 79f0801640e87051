"""Finding the bid-loop shards and talking to them, with a deadline on every call a
deployment makes; and settling them when the platform stops."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import ray

from actors import shard_options
from actors.flow.config import BidLoopConfig
from actors.flow.reports import ShardStats, TickReport
from actors.flow.shard import BidLoopActor
from actors.resilience import within
from kiki.clock import Clock
from kiki.errors import KikiError
from kiki.shield import shard_of

ACTOR_PREFIX = "kiki-bidloop"


class BidLoopClient:
    """Creates (or finds) the bid-loop shards and routes campaign changes to them."""

    def __init__(
        self,
        database_url: str,
        config: BidLoopConfig,
        shards: int = 2,
        num_cpus: float = 0.2,
        clock: Clock | None = None,
        placement: Mapping[str, Any] | None = None,
    ) -> None:
        """`clock`: a simulation's virtual clock (every shard gets a copy it advances).
        `placement`: more Ray actor options, e.g. resources that pin the shards to a node (a
        `num_cpus` there wins)."""
        self.shards = shards
        self.config = config
        self.call_timeout_s = config.call_timeout_s
        self.actors = [
            BidLoopActor.options(
                **shard_options(
                    ACTOR_PREFIX,
                    i,
                    shards,
                    config.namespace,
                    config.detached,
                    max_concurrency=100,
                    **{"num_cpus": num_cpus, **(placement or {})},
                )
            ).remote(i, shards, database_url, config, clock)
            for i in range(shards)
        ]

    async def ready(self) -> int:
        return sum(await asyncio.gather(*(a.ready.remote() for a in self.actors)))

    async def reload(self, tenant_id: str, campaign_id: str) -> None:
        shard = shard_of(tenant_id, campaign_id, self.shards)
        await within(
            self.actors[shard].reload.remote(), self.call_timeout_s, f"bid-loop shard {shard}"
        )

    async def reload_all(self) -> int:
        """Every shard reloads its campaigns; returns how many they hold."""
        return sum(await asyncio.gather(*(a.reload.remote() for a in self.actors)))

    async def health(self, tick_s: float, grace_s: float, timeout_s: float) -> dict[str, str]:
        """Each shard's state: "ok" when it completed a tick in the last few intervals."""

        async def one(i: int) -> str:
            try:
                beat = await within(
                    self.actors[i].heartbeat.remote(), timeout_s, f"bid-loop shard {i}"
                )
            except KikiError as exc:
                return f"failed: {exc.message}"
            problem = beat.problem(tick_s, grace_s)
            return "ok" if problem is None else f"failed: {problem}"

        states = await asyncio.gather(*(one(i) for i in range(self.shards)))
        return {f"bidloop_shard_{i}": state for i, state in enumerate(states)}

    async def tick_all(self, now: datetime) -> list[TickReport]:
        return await asyncio.gather(*(a.tick.remote(now) for a in self.actors))

    async def stats(self) -> list[ShardStats]:
        return await asyncio.gather(
            *(
                within(a.stats.remote(), self.call_timeout_s, f"bid-loop shard {i}")
                for i, a in enumerate(self.actors)
            )
        )

    async def flush(self) -> int:
        """Wait until every shard's audit trail is written; returns the rows written."""
        return sum(await asyncio.gather(*(a.flush.remote() for a in self.actors)))

    async def stop(self) -> int:
        return sum(await asyncio.gather(*(a.stop.remote() for a in self.actors)))

    def kill(self) -> None:
        """End the shards (after `stop`): a simulation's actors must not keep holding CPUs."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def settle_bid_loops(shards: int, namespace: str = "kiki", timeout_s: float = 30.0) -> int:
    """On shutdown: stop every bid-loop shard that exists (no new ticks, open leases
    committed, the audit trail flushed), then end it so a shared cluster does not keep
    bidding. Returns the audit rows the shards had written."""
    found = []
    for i in range(shards):
        try:
            found.append(ray.get_actor(f"{ACTOR_PREFIX}-{i}-of-{shards}", namespace=namespace))
        except ValueError:  # never started
            continue
    if not found:
        return 0
    written = sum(ray.get([a.stop.remote() for a in found], timeout=timeout_s))
    for actor in found:
        ray.kill(actor, no_restart=True)
    return written
