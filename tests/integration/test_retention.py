"""The audit trail partitioned by day: the migration converts a filled table in place, a
writer never fails for want of a partition, retention exports old days to Parquet in the
artifact store and drops them (the CLI too), and the decision log rotates."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from actors.flow.audit import AuditWriter, DecisionLog
from actors.resilience import Supervisor
from kiki.artifacts import ArtifactStore
from kiki.db import migrate, retention
from kiki.db.pool import connect, create_pool
from kiki.flow.audit import COLUMNS, Decisions
from launcher.cli import main
from tests.conftest import S3Server

TENANT = uuid.uuid4()
DAYS = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
TODAY = date(2026, 1, 4)
TRAIL = "flow_decisions"


def decisions(at: datetime, n: int, tick: int = 1) -> Decisions:
    values = {
        "tick_id": tick, "decided_at": at, "tenant_id": TENANT, "campaign_id": "camp_1",
        "platform": "meta", "value_micros": 5_000_000, "cvr": 0.02, "pacing_multiplier": 1.0,
        "target_micros": 10, "spent_micros": 5, "budget_left_micros": 5, "reserved_micros": 1,
        "bid_micros": 100_000, "reason": "reserved", "connector_result": "ok", "shard": 0,
        "platform_spent_micros": 5,
    }  # fmt: skip
    columns = tuple(
        [f"ag_{i}" for i in range(n)] if c == "ad_group_id" else [values[c]] * n for c in COLUMNS
    )
    return Decisions(columns)


async def per_partition(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT tableoid::regclass::text AS p, count(*) FROM flow_decisions GROUP BY 1"
    )
    return {r["p"]: r["count"] for r in rows}


async def migrated_with_rows(url: str) -> asyncpg.Connection:
    """The schema before 0018 with 30 decisions on each of DAYS (12:00 .. 12:29 UTC), then
    0018 on top."""
    conn = await connect(url)
    every = migrate.discover()
    await migrate.migrate(conn, [m for m in every if m.version < 18])
    then = COLUMNS[: COLUMNS.index("platform_spent_micros")]  # the columns before 0022
    for day in DAYS:
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        batch = [
            row[: len(then)]
            for i in range(30)
            for row in decisions(at + timedelta(minutes=i), 1).rows()
        ]
        await conn.copy_records_to_table("flow_decisions", columns=then, records=batch)
    await migrate.migrate(conn, every)
    return conn


def test_the_migration_partitions_the_filled_trail_in_place_and_retention_exports_old_days(
    fresh_db: str, tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket()
    store = ArtifactStore(
        url=f"s3://{bucket}/kiki", cache_dir=tmp_path / "cache",
        endpoint_url=s3_server.endpoint_url,
    )  # fmt: skip

    async def scenario() -> None:
        conn = await migrated_with_rows(fresh_db)
        try:
            assert await per_partition(conn) == {f"flow_decisions_{d:%Y%m%d}": 30 for d in DAYS}
            kind = await conn.fetchval(
                "SELECT relkind::text FROM pg_class WHERE relname = 'flow_decisions'"
            )
            assert kind == "p"  # the table itself is now partitioned

            # Keep 2 days (the 3rd and today): the 1st and 2nd are past retention.
            dry = await retention.run(conn, store, TODAY, {TRAIL: 2}, dry_run=True)
            assert [p.day for p in dry.expired] == DAYS[:2] and dry.exported == []
            assert "flow_decisions_20260106" in dry.created
            assert await conn.fetchval("SELECT count(*) FROM flow_decisions") == 90

            done = await retention.run(conn, store, TODAY, {TRAIL: 2}, batch_rows=7)
            assert [(e.day, e.rows, e.dropped) for e in done.exported] == [
                (DAYS[0], 30, True), (DAYS[1], 30, True),
            ]  # fmt: skip
            assert await per_partition(conn) == {"flow_decisions_20260103": 30}
            names = {p.name for p in await retention.partitions(conn, "flow_decisions")}
            january = {n for n in names if n.startswith("flow_decisions_202601")}
            assert january == {f"flow_decisions_202601{d:02d}" for d in (3, 4, 5, 6)}

            first = done.exported[0]
            key = "kiki/retention/flow_decisions/day=2026-01-01/flow_decisions_20260101.parquet"
            assert first.url == f"s3://{bucket}/{key}"
            assert sorted(s3_server.keys(bucket)) == [
                key, key.replace("01-01/flow_decisions_20260101", "01-02/flow_decisions_20260102"),
            ]  # fmt: skip
            parquet = pq.ParquetFile(io.BytesIO(store.get_bytes(first.url)))
            assert parquet.metadata.num_row_groups == 5  # batches of 7: memory bounded by one
            table = parquet.read()
            assert table.num_rows == 30 and table.column_names == list(COLUMNS)
            row = table.slice(0, 1).to_pylist()[0]
            assert row["decided_at"] == datetime(2026, 1, 1, 12, tzinfo=UTC)
            assert row["tenant_id"] == str(TENANT) and row["bid_micros"] == 100_000

            again = await retention.run(conn, store, TODAY, {TRAIL: 2})
            assert again.expired == [] and again.created == []
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_the_audit_writer_makes_a_missing_days_partition_even_after_retention_dropped_it(
    fresh_db: str, tmp_path: Path
) -> None:
    later = datetime(2030, 5, 17, 23, 59, 59, tzinfo=UTC)

    async def scenario() -> None:
        conn = await connect(fresh_db)
        await migrate.migrate(conn, migrate.discover())
        pool = await create_pool(fresh_db, min_size=1, max_size=2)
        supervisor = Supervisor("test-audit")
        log = DecisionLog(tmp_path / "logs" / "decisions-0-of-1.log", 0, 1)
        writer = AuditWriter(pool, log, supervisor, bill=False)
        try:
            # Two days no partition was made for (the migration made today's and the next).
            await writer.add(decisions(later, 40))
            await writer.add(decisions(later + timedelta(seconds=1), 10, tick=2))
            await writer.flush()
            assert await per_partition(conn) == {
                "flow_decisions_20300517": 40, "flow_decisions_20300518": 10,
            }  # fmt: skip
            # The day is dropped behind the writer's back; its next rows still land.
            await conn.execute("DROP TABLE flow_decisions_20300517")
            await writer.add(decisions(later, 5, tick=3))
            await writer.flush()
            assert (await per_partition(conn))["flow_decisions_20300517"] == 5
            lines = (tmp_path / "logs" / "decisions-0-of-1.log").read_text().splitlines()
            assert len(lines) == 55 and all(ln.startswith("decision: {") for ln in lines)
        finally:
            await supervisor.stop()
            await pool.close()
            await conn.close()

    asyncio.run(scenario())


def test_the_decision_log_rotates_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "decisions-0-of-2.log"
    log = DecisionLog(path, max_bytes=1000, backups=2)
    tick = "decision: {}\n" * 30  # 390 bytes a tick
    for _ in range(10):
        log.write(tick)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["decisions-0-of-2.log", "decisions-0-of-2.log.1", "decisions-0-of-2.log.2"]
    assert all(0 < (tmp_path / f).stat().st_size <= 1000 for f in files)


def test_kiki_db_retention(fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def filled() -> None:
        await (await migrated_with_rows(fresh_db)).close()

    asyncio.run(filled())
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    monkeypatch.setenv("KIKI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KIKI_ARTIFACTS_URL", f"file://{tmp_path}/store")
    monkeypatch.setenv("KIKI_DECISIONS_RETENTION_DAYS", "3650")
    runner = CliRunner()
    dry = runner.invoke(main, ["db", "retention", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "flow_decisions: keeping 3650 days; 0 older partitions" in dry.output
    assert "billing_events: keeping all days" in dry.output  # the default: 0 = forever
    assert "engage_messages: keeping 90 days; 0 older partitions" in dry.output
    monkeypatch.setenv("KIKI_DECISIONS_RETENTION_DAYS", "1")
    dry = runner.invoke(main, ["db", "retention", "--dry-run"])
    assert dry.exit_code == 0 and "would export and drop flow_decisions_20260101" in dry.output
    done = runner.invoke(main, ["db", "retention"])
    assert done.exit_code == 0, done.output
    assert "flow_decisions 2026-01-03: 30 rows" in done.output and "dropped" in done.output
    assert len(list((tmp_path / "store" / "retention" / "flow_decisions").iterdir())) == 3
    monkeypatch.setenv("KIKI_DECISIONS_RETENTION_DAYS", "0")
    refused = runner.invoke(main, ["db", "retention"])
    assert refused.exit_code != 0 and "DECISIONS_RETENTION_DAYS" in refused.output
