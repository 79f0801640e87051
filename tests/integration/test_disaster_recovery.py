"""Disaster recovery: budgets and billing run on a server of this test's own, `kiki db backup`,
the data folder is destroyed, `kiki db restore` brings it back on a fresh server. The ledger,
invoices, registry and consents come back row for row, invoice numbers stay gapless, the
budget actors rebuilt from the restored ledger agree with a replay, and reservations made
after the backup are wholly absent."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
import ray
from click.testing import CliRunner

from actors.budget import BudgetClient
from kiki.artifacts import ArtifactStore
from kiki.auth import Tenant, ensure_tenant
from kiki.billing import metering, repository, subscriptions
from kiki.billing.closing import close_period
from kiki.config import Settings
from kiki.db import backup, migrate, wal
from kiki.db.embedded import EmbeddedPostgres, free_port
from kiki.errors import FailedPrecondition
from kiki.shield import store
from kiki.shield.book import BudgetBook, BudgetOp
from kiki.shield.consent import ConsentRecord, record_consent
from kiki.value.registry import LTV_MODELS
from launcher.cli import main
from tests.conftest import SUPPRESSIONS, S3Server
from tests.integration.test_billing_close import FEB1, JAN1, MAR1, calls, catalog, customer

CAP = 100_000_000
CAMPAIGNS = [f"camp_{i}" for i in range(6)]
SHARDS = 2
# Compared row for row: the money and the promises.
TABLES = {
    "budget_ledger": "seq",
    "billing_invoices": "id",
    "billing_invoice_counters": "tenant_id",
    "ltv_models": "tenant_id, version",
    "consent_events": "id",
}


async def rows(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        return {
            table: [r[0] for r in await conn.fetch(f"SELECT t::text FROM {table} t ORDER BY {pk}")]
            for table, pk in TABLES.items()
        }
    finally:
        await conn.close()


async def seed(url: str) -> Tenant:
    """A month of billing closed into invoices, a registered model and consents."""
    conn = await asyncpg.connect(url)
    try:
        tenant = await ensure_tenant(conn, "acme")
        await catalog(conn, tenant)
        for cid, plan in (("alice", "starter"), ("bob", "pro")):
            await customer(conn, tenant, cid)
            await subscriptions.create(conn, tenant.id, cid, plan, None, JAN1)
        await metering.ingest(conn, tenant.id, calls("alice", 1200, JAN1))
        assert (await close_period(conn, tenant, FEB1)).invoices == 2
        await LTV_MODELS.register(
            conn, tenant.id, metrics={"mae": 1.5}, feature_schema=["recency"], config={},
            calibration_end=date(2026, 1, 1), horizon_days=90, data_window={},
            artifact_url="file:///models/ltv/0",
        )  # fmt: skip
        consents = [
            ConsentRecord(customer_id=f"c{i}", purpose="email", granted=i % 3 != 0, source="web")
            for i in range(20)
        ]
        await record_consent(conn, tenant.id, consents, SUPPRESSIONS)
        return tenant
    finally:
        await conn.close()


def reserve(tenant: str, tag: str, amount: int) -> list[BudgetOp]:
    return [
        BudgetOp("reserve", tenant, c, f"{tag}-{c}", amount_micros=amount, platform="meta")
        for c in CAMPAIGNS
    ]


async def run_budgets(budgets: BudgetClient, tenant: str) -> list[str]:
    """Allocate, reserve and commit some spend; returns the reservations still open."""
    allocate = [
        BudgetOp("allocate", tenant, c, f"alloc-{c}", currency="USD", caps_patch={"total": CAP})
        for c in CAMPAIGNS
    ]
    assert {r.outcome for r in await budgets.execute(allocate)} == {"set"}
    spent = await budgets.execute(reserve(tenant, "r1", 7_000_000))
    commits = [
        BudgetOp("commit", tenant, r.campaign_id, f"c-{r.reservation_id}",
                 amount_micros=5_000_000, reservation_id=r.reservation_id)
        for r in spent
    ]  # fmt: skip
    assert {r.outcome for r in await budgets.execute(commits)} == {"committed"}
    held = await budgets.execute(reserve(tenant, "r2", 3_000_000))
    assert {r.outcome for r in held} == {"granted"}
    return [r.reservation_id for r in held]


async def statuses(budgets: BudgetClient, tenant: str) -> dict[str, dict]:
    answers = await budgets.execute([BudgetOp("status", tenant, c) for c in CAMPAIGNS])
    return {r.campaign_id: r.snapshot for r in answers}


async def replayed(url: str, tenant: str) -> dict[str, dict]:
    """The same answers from a book replayed here, straight from the ledger (no actor)."""
    conn = await asyncpg.connect(url)
    try:
        book = BudgetBook()
        for shard in range(SHARDS):
            await store.rebuild(conn, book, shard, SHARDS)
    finally:
        await conn.close()
    now = datetime.now(UTC)
    return {c: book.campaigns[(tenant, c)].snapshot(now) for c in CAMPAIGNS}


@pytest.fixture
def ray_here() -> Iterator[None]:
    """The session's Ray when the platform already runs (the whole suite); else a small local
    one for this test alone, shut down after it so the platform can start its own."""
    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def kiki(args: list[str], settings: Settings, extra: dict[str, str] | None = None) -> str:
    env = {"KIKI_HOME": str(settings.home), "KIKI_PG_PORT": str(settings.pg_port),
           "KIKI_DATABASE_URL": "", "KIKI_ARTIFACTS_URL": "", **(extra or {})}  # fmt: skip
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("ray_here")
def test_restore_after_losing_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", pg_port=free_port())
    server = EmbeddedPostgres(settings.pgdata, settings.pg_port)
    url = server.start()
    namespace = f"dr-{uuid.uuid4().hex[:8]}"

    def budgets() -> BudgetClient:
        return BudgetClient(url, shards=SHARDS, namespace=namespace, detached=False)

    try:
        asyncio.run(migrate.migrate_url(url))
        tenant = asyncio.run(seed(url))
        tid = str(tenant.id)
        client = budgets()
        open_before = asyncio.run(run_budgets(client, tid))
        before = asyncio.run(statuses(client, tid))
        expected = asyncio.run(rows(url))

        out = kiki(["db", "backup"], settings)
        backup_url = out.strip().splitlines()[-1]
        assert backup_url.startswith((tmp_path / "home" / "artifacts" / "backups").as_uri())

        # After the backup point: one more reservation per campaign (one transaction per
        # shard), acknowledged, so it is in the ledger of the server about to be lost.
        late = asyncio.run(client.execute(reserve(tid, "late", 4_000_000)))
        assert {r.outcome for r in late} == {"granted"}
        late_ids = {r.reservation_id for r in late}

        # The disaster: the actors and the server go, and with them the data folder.
        client.kill()
        server.stop()
        shutil.rmtree(settings.pgdata)

        started = time.monotonic()
        out = kiki(["db", "restore", backup_url], settings)
        assert "every checksum matches" in out, out
        print(f"restore (CLI, fresh server included): {time.monotonic() - started:.1f} s")
        server.start()

        assert asyncio.run(rows(url)) == expected  # row for row
        ledger = asyncio.run(rows(url))["budget_ledger"]
        assert not [row for row in ledger if any(r in row for r in late_ids)]

        client = budgets()  # new actors: they rebuild from the restored ledger
        after = asyncio.run(statuses(client, tid))
        assert after == before == asyncio.run(replayed(url, tid))
        assert {s["open_reservations"] for s in after.values()} == {1}
        # The late reservations are unknown to the restored actors too: never half there.
        commits = [
            BudgetOp("commit", tid, r.campaign_id, f"c-{r.reservation_id}",
                     amount_micros=1, reservation_id=r.reservation_id)
            for r in late
        ]  # fmt: skip
        assert {r.outcome for r in asyncio.run(client.execute(commits))} == {"error"}
        assert len(open_before) == len(CAMPAIGNS)

        # Billing goes on where it stopped: the next invoices continue the numbering.
        async def next_month() -> list[str]:
            conn = await asyncpg.connect(url)
            try:
                await close_period(conn, tenant, MAR1)
                return sorted(i.number for i in await repository.list_invoices(conn, tenant.id))
            finally:
                await conn.close()

        assert asyncio.run(next_month()) == [f"ACME-2026-{n:06d}" for n in range(1, 5)]
        client.kill()
    finally:
        server.stop()


def test_restore_refuses_a_database_with_tables_and_a_damaged_backup(
    fresh_db: str, tmp_path: Path
) -> None:
    asyncio.run(migrate.migrate_url(fresh_db))
    folder = tmp_path / "b"
    folder.mkdir()
    asyncio.run(backup.dump(fresh_db, folder))
    with pytest.raises(FailedPrecondition, match=r"holds \d+ tables: .* pass --replace"):
        asyncio.run(backup.restore_folder(folder, fresh_db, replace=False))
    # A checksum that no longer matches what the dump holds: the restore says which table.
    info = backup.BackupInfo.model_validate_json((folder / backup.INFO).read_text())
    info.tables["public.tenants"] = backup.TableSum(rows=1, digest="0")
    (folder / backup.INFO).write_text(info.model_dump_json())
    with pytest.raises(FailedPrecondition, match=r"differ from the backup's checksums in "
                       r"public\.tenants:"):  # fmt: skip
        asyncio.run(backup.restore_folder(folder, fresh_db, replace=True))


async def ledger_apply(url: str, book: BudgetBook, ops: list[BudgetOp]) -> datetime:
    """The commands through the book and into the ledger in one transaction, as a budget
    shard's group commit writes them; the server's time just after the commit."""
    events: list = []
    created: list = []
    results = [book.execute(op, datetime.now(UTC), events, created) for op in ops]
    assert {r.outcome for r in results} <= {"set", "granted"}, results
    conn = await asyncpg.connect(url)
    try:
        await store.append(conn, created, events)
        return await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()


async def last_segment(url: str) -> str:
    """The WAL segment holding everything committed so far (the byte before the write
    position: a position at a segment's start belongs to the segment before)."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn() - 1)")
    finally:
        await conn.close()


def test_point_in_time_recovery_from_wal_shipped_to_s3_while_writing(
    tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket()
    settings = Settings(home=tmp_path / "home", pg_port=free_port(), wal_archive=True)
    # A segment is archived within 1 s of a write (KIKI_WAL_ARCHIVE_TIMEOUT_S=1).
    server = EmbeddedPostgres(settings.pgdata, settings.pg_port, settings.wal_spool, 1)
    url = server.start()
    env = {"KIKI_WAL_ARCHIVE": "1", "KIKI_ARTIFACTS_URL": f"s3://{bucket}/kiki",
           "KIKI_ARTIFACTS_ENDPOINT_URL": s3_server.endpoint_url}  # fmt: skip
    store = ArtifactStore(url=env["KIKI_ARTIFACTS_URL"], cache_dir=tmp_path / "cache",
                          endpoint_url=s3_server.endpoint_url)  # fmt: skip
    shipper = wal.WalShipper(settings.wal_spool, store)  # kiki up's, at its 5 s interval
    try:
        asyncio.run(migrate.migrate_url(url))
        tid = asyncio.run(seed_tenant(url))
        book = BudgetBook()
        allocate = [
            BudgetOp("allocate", tid, c, f"a-{c}", currency="USD", caps_patch={"total": CAP})
            for c in CAMPAIGNS
        ]
        asyncio.run(ledger_apply(url, book, allocate))
        base_url = kiki(["db", "backup", "--base"], settings, env).strip().splitlines()[-1]
        assert base_url.startswith(f"s3://{bucket}/kiki/backups/") and "-base/" in base_url

        # Shipping runs while the writes happen: batch A, the moment to recover to, batch B.
        shipper.start()
        asyncio.run(ledger_apply(url, book, reserve(tid, "A", 2_000_000)))
        moment = asyncio.run(ledger_apply(url, book, []))
        time.sleep(0.05)
        asyncio.run(ledger_apply(url, book, reserve(tid, "B", 3_000_000)))
        committed = time.monotonic()
        segment = asyncio.run(last_segment(url))
        # The recovery point: how long after B's commit its WAL is in the store, untouched
        # (no forced segment switch, no manual shipping).
        while segment not in store.names(wal.WAL):
            assert time.monotonic() - committed < 60, f"{segment} not in the store after 60 s"
            time.sleep(0.2)
        print(f"PITR RPO: batch B in the store {time.monotonic() - committed:.1f} s after commit")
        shipper.stop()
        # What the server archived since (it may switch segments while idle) goes too.
        shipped = kiki(["db", "archive-wal"], settings, env)
        assert re.search(rf"shipped \d+ WAL files to s3://{bucket}/kiki/wal", shipped), shipped

        server.stop()
        shutil.rmtree(settings.pgdata)
        out = kiki(["db", "restore", base_url, "--until", moment.isoformat()], settings, env)
        assert "recovered the server" in out, out
        server.start()

        keys = asyncio.run(idempotency_keys(url))
        assert {k for k in keys if k.startswith("A-")} == {f"A-{c}" for c in CAMPAIGNS}
        assert not [k for k in keys if k.startswith("B-")]  # batch B: wholly absent
        replay = asyncio.run(replayed(url, tid))
        assert {s["reserved"] for s in replay.values()} == {2_000_000}
    finally:
        shipper.stop()
        server.stop()


async def seed_tenant(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str((await ensure_tenant(conn, "acme")).id)
    finally:
        await conn.close()


async def idempotency_keys(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT idempotency_key FROM budget_ledger WHERE kind = 'reserved'")
        return [r[0] for r in rows]
    finally:
        await conn.close()
