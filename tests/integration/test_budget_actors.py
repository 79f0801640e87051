"""The promise: a campaign never spends past its budget, whatever fails.

Real budget actors (the ones the shield app uses) over the real PostgreSQL ledger.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid

import asyncpg
import pytest
import ray

from actors.budget import BudgetClient
from kiki.shield.book import BudgetOp, shard_of
from tests.integration.conftest import RunningPlatform

CAP = 50_000_000  # 50 USD per campaign, in micros


def client(platform: RunningPlatform) -> BudgetClient:
    # The same named actors the shield app talks to (get_if_exists).
    return BudgetClient(platform.database_url, shards=platform.settings.budget_shards)


async def allocate(budgets: BudgetClient, tenant: str, campaigns: list[str]) -> None:
    ops = [
        BudgetOp(
            "allocate",
            tenant,
            c,
            f"alloc-{c}",
            currency="USD",
            caps_patch={"total": CAP, "daily": CAP, "platforms": {"meta": CAP // 2}},
        )
        for c in campaigns
    ]
    for result in await budgets.execute(ops):
        assert result.outcome == "set", result


async def ledger_totals(url: str, tenant: str) -> dict[str, tuple[int, int]]:
    """(committed, still reserved) per campaign, from the ledger rows alone."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT campaign_id,
                 COALESCE(SUM(amount_micros) FILTER (WHERE kind = 'committed'), 0) AS committed,
                 COALESCE(SUM(amount_micros) FILTER (WHERE kind = 'reserved'
                   AND reservation_id NOT IN (SELECT reservation_id FROM budget_ledger c
                     WHERE c.kind IN ('committed', 'released', 'expired')
                       AND c.reservation_id IS NOT NULL)), 0) AS reserved
               FROM budget_ledger WHERE tenant_id = $1 GROUP BY campaign_id""",
            uuid.UUID(tenant),
        )
        return {r["campaign_id"]: (r["committed"], r["reserved"]) for r in rows}
    finally:
        await conn.close()


async def key_counts(url: str, tenant: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            """SELECT COUNT(*) FROM (SELECT idempotency_key FROM budget_ledger
               WHERE tenant_id = $1 AND idempotency_key IS NOT NULL
               GROUP BY campaign_id, idempotency_key HAVING COUNT(*) > 1) d""",
            uuid.UUID(tenant),
        )
    finally:
        await conn.close()


async def flood(
    budgets: BudgetClient, tenant: str, campaigns: list[str], workers: int, seconds: float
) -> dict[str, dict[str, int]]:
    """`workers` concurrent reservers for `seconds`; returns what was acknowledged:
    reservation id → granted micros, and commits per reservation."""
    granted: dict[str, int] = {}
    committed: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        rng = random.Random(w)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            campaign = rng.choice(campaigns)
            op = BudgetOp(
                "reserve",
                tenant,
                campaign,
                f"w{w}-{n}",
                amount_micros=rng.randint(10_000, 400_000),
                platform=rng.choice(["meta", "google_ads", "tiktok"]),
            )
            try:
                (result,) = await budgets.execute([op])
            except Exception:
                continue  # not acknowledged: the ledger may or may not hold it
            if result.outcome in ("granted", "partial"):
                granted[result.reservation_id] = result.amount_micros
                if rng.random() < 0.5:
                    spend = rng.randint(0, result.amount_micros)
                    settle = BudgetOp(
                        "commit",
                        tenant,
                        campaign,
                        f"w{w}-{n}-c",
                        reservation_id=result.reservation_id,
                        amount_micros=spend,
                    )
                    try:
                        (done,) = await budgets.execute([settle])
                    except Exception:
                        continue
                    if done.outcome == "committed":
                        committed[result.reservation_id] = done.amount_micros

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return {"granted": granted, "committed": committed}


async def state_of(budgets: BudgetClient, tenant: str, campaigns: list[str]) -> dict:
    results = await budgets.execute([BudgetOp("status", tenant, c) for c in campaigns])
    return {r.campaign_id: r.snapshot for r in results}


async def assert_ledger_matches_actors(
    budgets: BudgetClient, url: str, tenant: str, campaigns: list[str]
) -> dict:
    totals = await ledger_totals(url, tenant)
    states = await state_of(budgets, tenant, campaigns)
    for c in campaigns:
        committed, reserved = totals[c]
        assert (states[c]["committed"], states[c]["reserved"]) == (committed, reserved)
        assert committed + reserved <= CAP
        meta = states[c]["platforms"].get("meta", {"committed": 0, "reserved": 0})
        assert meta["committed"] + meta["reserved"] <= CAP // 2
    assert await key_counts(url, tenant) == 0
    return states


def test_200_concurrent_reservers_never_exceed_the_cap(platform: RunningPlatform) -> None:
    tenant = str(uuid.uuid4())
    campaigns = [f"camp_{i:03d}" for i in range(10)]
    url = platform.database_url

    async def scenario() -> None:
        budgets = client(platform)
        await allocate_for(url, tenant)
        await allocate(budgets, tenant, campaigns)
        acked = await flood(budgets, tenant, campaigns, workers=200, seconds=20)
        states = await assert_ledger_matches_actors(budgets, url, tenant, campaigns)
        # The flood asked for far more than the caps: every campaign is used up exactly.
        assert all(s["committed"] + s["reserved"] == CAP for s in states.values())
        assert sum(acked["granted"].values()) == sum(
            s["reserved"] + s["committed"] for s in states.values()
        ) + sum(acked["granted"][r] - acked["committed"][r] for r in acked["committed"])

    asyncio.run(scenario())


def test_sigkill_mid_flood_loses_nothing_acknowledged(platform: RunningPlatform) -> None:
    tenant = str(uuid.uuid4())
    campaigns = [f"kill_{i:03d}" for i in range(10)]
    url = platform.database_url

    async def scenario() -> None:
        budgets = client(platform)
        await allocate_for(url, tenant)
        await allocate(budgets, tenant, campaigns)
        victim = shard_of(tenant, campaigns[0], budgets.shards)
        pid = await budgets.actors[victim].pid.remote()

        async def killer() -> None:
            await asyncio.sleep(3)
            os.kill(pid, signal.SIGKILL)

        acked, _ = await asyncio.gather(
            flood(budgets, tenant, campaigns, workers=100, seconds=10), killer()
        )
        assert await budgets.actors[victim].pid.remote() != pid  # Ray restarted it
        await assert_ledger_matches_actors(budgets, url, tenant, campaigns)
        conn = await asyncpg.connect(url)
        try:
            in_ledger = {
                str(r["reservation_id"]): r["amount_micros"]
                for r in await conn.fetch(
                    "SELECT reservation_id, amount_micros FROM budget_ledger "
                    "WHERE tenant_id = $1 AND kind = 'reserved'",
                    uuid.UUID(tenant),
                )
            }
        finally:
            await conn.close()
        # Every acknowledged reservation is in the ledger, with the amount acknowledged.
        assert acked["granted"], "the flood reserved nothing"
        missing = {r: a for r, a in acked["granted"].items() if in_ledger.get(r) != a}
        assert missing == {}

    asyncio.run(scenario())


def test_a_retried_command_applies_once(platform: RunningPlatform) -> None:
    tenant = str(uuid.uuid4())

    async def scenario() -> None:
        budgets = client(platform)
        await allocate_for(platform.database_url, tenant)
        await allocate(budgets, tenant, ["retry"])
        op = BudgetOp(
            "reserve", tenant, "retry", "same-key", amount_micros=1_000_000, platform="meta"
        )
        first, second = await asyncio.gather(budgets.execute([op]), budgets.execute([op]))
        third = await budgets.execute([op])
        ids = {r[0].reservation_id for r in (first, second, third)}
        assert len(ids) == 1
        assert sum(r[0].replayed for r in (first, second, third)) == 2
        state = (await state_of(budgets, tenant, ["retry"]))["retry"]
        assert state["reserved"] == 1_000_000
        assert await key_counts(platform.database_url, tenant) == 0

    asyncio.run(scenario())


async def allocate_for(url: str, tenant: str) -> None:
    """Campaign rows reference a tenant: create it under its own id."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $2)", uuid.UUID(tenant), f"t-{tenant[:8]}"
        )
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _ray_up(platform: RunningPlatform) -> None:
    assert ray.is_initialized()
