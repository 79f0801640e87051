"""A budget shard never dies of one command (issue 16).

The shard's shell class runs in this process (no Ray: the same code Ray hosts) over a real
PostgreSQL ledger, so faults can be placed exactly: arbitrary commands, a command the
database refuses inside a group commit, a fault in the group commit itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.budget import BudgetShard
from kiki.db import migrate
from kiki.errors import Unavailable
from kiki.shield.book import BudgetOp, OpResult
from tests.unit.test_budget_book_fuzz import ops as arbitrary_ops

TENANT = str(uuid.uuid4())


class Harness:
    """One event loop, one shard (shard 0 of 1: it holds every campaign), one ledger."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.shard = BudgetShard(0, 1, url, reservation_ttl_s=900)
        self.run(self.shard.ready())

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def ledger(self) -> list[asyncpg.Record]:
        async def rows() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return await conn.fetch(
                    "SELECT campaign_id, kind, idempotency_key FROM budget_ledger ORDER BY seq"
                )
            finally:
                await conn.close()

        return self.run(rows())

    def execute(self, *ops: BudgetOp) -> list[OpResult]:
        return self.run(self.shard.execute(list(ops)))


@pytest.fixture(scope="module")
def harness(pg_url: str) -> Iterator[Harness]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"

    async def prepare() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        conn = await asyncpg.connect(url)
        await migrate.migrate(conn, migrate.discover())
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, 'shard-faults')", uuid.UUID(TENANT)
        )
        await conn.close()

    asyncio.run(prepare())
    h = Harness(url)
    h.execute(allocate("c1", "alloc-c1"), allocate("c-good", "alloc-c-good"))
    yield h
    h.loop.close()


def allocate(campaign: str, key: str, **policy: object) -> BudgetOp:
    return BudgetOp("allocate", TENANT, campaign, key, currency="USD",
                    caps_patch={"total": 10**9}, policy_patch=policy or None)  # fmt: skip


def reserve(key: str, campaign: str = "c1") -> BudgetOp:
    return BudgetOp("reserve", TENANT, campaign, key, amount_micros=1_000, platform="meta")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(arbitrary_ops, min_size=1, max_size=4))
def test_arbitrary_commands_are_each_answered_and_the_shard_goes_on(
    harness: Harness, batch: list[BudgetOp]
) -> None:
    good = reserve(f"good-{uuid.uuid4().hex}", "c-good")  # no arbitrary op can touch it
    before = {r["idempotency_key"] for r in harness.ledger()}
    results = harness.execute(*batch, good)
    assert len(results) == len(batch) + 1
    assert results[-1].outcome == "granted", results[-1]  # the good command is committed
    written = {r["idempotency_key"] for r in harness.ledger()} - before
    assert good.idempotency_key in written
    for op, result in zip(batch, results, strict=False):
        key = op.idempotency_key
        if result.outcome in ("error", "denied") and isinstance(key, str) and key not in before:
            assert key not in written  # a refused command left no ledger row


def test_the_reported_command_is_refused_alone_and_every_campaign_still_answers(
    harness: Harness,
) -> None:
    harness.execute(allocate("c2", "alloc-c2"))
    bad = allocate("tz_null", "alloc-tz-null", timezone=None)
    answers = harness.execute(reserve("before-bad"), bad, reserve("after-bad", "c2"))
    assert [a.outcome for a in answers] == ["granted", "error", "granted"]
    assert answers[1].error_code == "invalid_input" and "time zone" in (answers[1].message or "")
    for campaign in ("c1", "c2"):
        (status,) = harness.execute(BudgetOp("status", TENANT, campaign))
        assert status.outcome == "status"
    (missing,) = harness.execute(BudgetOp("status", TENANT, "tz_null"))
    assert missing.error_code == "not_found"  # no half-made campaign


def test_a_command_the_database_refuses_fails_alone_in_its_group_commit(harness: Harness) -> None:
    """A tenant the database does not know passes the book but not the ledger's foreign key:
    the batch is committed command by command, and only that one is refused."""
    before = len(harness.ledger())
    refused = BudgetOp("allocate", str(uuid.uuid4()), "c9", "alloc-c9", currency="USD",
                       caps_patch={"total": 5})  # fmt: skip

    async def two_callers() -> tuple[list[OpResult], list[OpResult]]:
        return await asyncio.gather(
            harness.shard.execute([reserve("a-1"), refused, reserve("a-2")]),
            harness.shard.execute([reserve("b-1", "c2")]),
        )

    mixed, other = harness.run(two_callers())
    assert [r.outcome for r in mixed] == ["granted", "error", "granted"]
    assert mixed[1].error_code == "invalid_input" and "ledger refused" in (mixed[1].message or "")
    assert other[0].outcome == "granted"
    keys = [r["idempotency_key"] for r in harness.ledger()[before:]]
    assert sorted(keys) == ["a-1", "a-2", "b-1"]
    (replayed,) = harness.execute(reserve("a-1"))  # memory and ledger agree
    assert replayed.replayed


def test_a_fault_in_the_group_commit_answers_its_batch_and_the_shard_recovers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = harness.shard._run
    calls = {"n": 0}

    def fail_once(*args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            real_run(*args)  # memory changed, then the fault: nothing may be acknowledged
            raise RuntimeError("a bug outside any one command")
        return real_run(*args)

    monkeypatch.setattr(harness.shard, "_run", fail_once)
    with pytest.raises(Unavailable, match="retry it"):
        harness.execute(reserve("lost-1"))
    assert "lost-1" not in {r["idempotency_key"] for r in harness.ledger()}
    assert harness.execute(reserve("lost-1"))[0].outcome == "granted"  # the retry applies once
    assert harness.run(harness.shard.probe())["campaigns"] >= 2


def test_a_dead_group_commit_task_is_restarted_and_answers_what_it_held(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault that escapes the writer loop's own guard (here: while recovering from another)
    ends the task; the supervisor starts it again, and the batch it held is answered."""
    shard = harness.shard
    real_commit, real_recover = shard._commit_batch, shard._recover
    faults = {"commit": 1, "recover": 1}

    async def failing_commit(batch, expire):  # type: ignore[no-untyped-def]
        if batch and faults["commit"]:
            faults["commit"] -= 1
            raise RuntimeError("fault in the group commit")
        return await real_commit(batch, expire)

    async def failing_recover(batch, why):  # type: ignore[no-untyped-def]
        if faults["recover"]:
            faults["recover"] -= 1
            raise RuntimeError("fault while recovering")
        return await real_recover(batch, why)

    monkeypatch.setattr(shard, "_commit_batch", failing_commit)
    monkeypatch.setattr(shard, "_recover", failing_recover)
    restarts = shard._restarts()
    with pytest.raises(Unavailable, match="writer restarted"):
        harness.execute(reserve("crash-1"))
    assert shard._restarts() == restarts + 1
    assert harness.execute(reserve("crash-2"))[0].outcome == "granted"
