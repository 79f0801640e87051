"""Day partitions of the append-only tables that grow with traffic, and their retention.

`flow_decisions` (the bid loop's audit trail: about 860 million rows a day at 1,000 campaigns)
is partitioned by UTC day on `decided_at` (migration 0018); `billing_events`,
`engage_messages` and `billing_webhook_deliveries` by the day they were written (0021). A
retention run creates the partitions of the next days ahead of time, then exports every day
older than the table's retention (`POLICIES`: one setting each, 0 = keep forever) to Parquet
in the artifact store (`retention/<table>/day=YYYY-MM-DD/<partition>.parquet`, file:// or S3)
and drops it: a whole-table DROP, where a DELETE of that many rows would bloat the table and
the WAL. A day whose rows are still needed (usage not invoiced yet, a webhook still pending)
is kept and reported as held. The audit writer creates a missing day's partition itself
before it copies (`ensure_days`); the tables of 0021 have a DEFAULT partition instead, whose
rows a run moves into their day's partition.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from kiki.artifacts import ArtifactStore
from kiki.config import Settings

AHEAD_DAYS = 2  # partitions made ahead of today: a missed run or two never stalls a writer
EXPORT_BATCH_ROWS = 50_000  # rows per fetch and per Parquet row group: bounded memory
_LOCK_ID = 0x4B494B4952455445  # one retention run at a time across the cluster ("KIKIRETE")

# PostgreSQL column types as Arrow types; text stands in for what Arrow has no exact twin of.
_ARROW: dict[str, pa.DataType] = {
    "int8": pa.int64(),
    "int4": pa.int32(),
    "int2": pa.int16(),
    "float8": pa.float64(),
    "float4": pa.float32(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
}
_AS_TEXT = {"text", "varchar", "uuid", "json", "jsonb", "numeric"}


class Policy(BaseModel):
    """How one day-partitioned table is kept."""

    model_config = ConfigDict(frozen=True)

    table: str
    column: str  # the partition key (a timestamptz)
    setting: str  # the Settings field giving the days kept (KIKI_<SETTING>); 0 = forever
    keys: str | None = None  # the idempotency-key table whose rows of a dropped day go with it
    held: str | None = None  # SQL over the day's rows `e`: any match keeps the whole day
    why_held: str = ""


# An event is invoice-relevant while its customer's live subscription has not billed it: no
# close since it arrived, or its time falls in the open period (billed at that period's end).
_UNBILLED = """EXISTS (SELECT FROM billing_subscriptions s
    WHERE s.tenant_id = e.tenant_id AND s.customer_id = e.customer_id AND s.status = 'active'
      AND (s.last_closed_at IS NULL OR s.last_closed_at < e.received_at
           OR e.occurred_at >= s.period_start))"""

POLICIES = (
    Policy(table="flow_decisions", column="decided_at", setting="decisions_retention_days"),
    Policy(
        table="billing_events", column="received_at", setting="billing_events_retention_days",
        keys="billing_event_keys", held=_UNBILLED, why_held="usage not invoiced yet",
    ),
    Policy(
        table="engage_messages", column="created_at", setting="engage_messages_retention_days",
        keys="engage_message_keys",
    ),
    Policy(
        table="billing_webhook_deliveries", column="created_at",
        setting="webhook_deliveries_retention_days", held="e.status = 'pending'",
        why_held="deliveries still pending",
    ),
)  # fmt: skip


def keep_days(settings: Settings) -> dict[str, int]:
    """Each partitioned table's days kept, from the settings (0 = forever)."""
    return {p.table: getattr(settings, p.setting) for p in POLICIES}


class Partition(BaseModel):
    table: str
    name: str
    day: date
    bytes: int  # pg_total_relation_size: heap, indexes and TOAST
    rows: int  # the planner's estimate (reltuples); exports count exactly


class Exported(BaseModel):
    table: str
    day: date
    rows: int
    bytes: int
    url: str
    dropped: bool  # False when rows arrived after the export: it is exported again next run


class Held(BaseModel):
    partition: str
    reason: str


class RetentionReport(BaseModel):
    dry_run: bool
    keep_days: dict[str, int]  # by table; 0 = kept forever
    created: list[str]  # partitions made ahead of time (or that a dry run would make)
    expired: list[Partition]  # the days past retention (exported and dropped unless dry run)
    exported: list[Exported]
    held: list[Held] = []  # days past retention kept because rows in them are still needed
    busy: bool = False  # another run held the lock: nothing was done


def _day_of(name: str) -> date:
    return datetime.strptime(name.rsplit("_", 1)[1], "%Y%m%d").date()


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


async def ensure_days(conn: asyncpg.Connection, table: str, days: Iterable[date]) -> None:
    """Create the partitions of `days` that are missing (each in its own short transaction,
    so a writer never holds the parent's lock while it copies)."""
    for day in sorted(set(days)):
        await conn.execute("SELECT kiki_day_partition($1, $2)", table, day)


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    rows = await conn.fetch(
        """SELECT c.relname, pg_total_relation_size(c.oid) AS bytes,
                  greatest(c.reltuples, 0)::bigint AS rows
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = $1::regclass
             AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
           ORDER BY c.relname""",
        table,
    )
    return [
        Partition(table=table, name=r["relname"], day=_day_of(r["relname"]), bytes=r["bytes"],
                  rows=r["rows"])
        for r in rows
    ]  # fmt: skip


def expired(parts: Sequence[Partition], today: date, keep_days: int) -> list[Partition]:
    """The partitions wholly older than the last `keep_days` days (today included)."""
    first_kept = today - timedelta(days=keep_days - 1)
    return [p for p in parts if p.day < first_kept]


def _schema(attributes: Sequence[Any]) -> pa.Schema:
    fields = []
    for attribute in attributes:
        kind = attribute.type.name
        if kind not in _ARROW and kind not in _AS_TEXT:
            raise TypeError(f"column {attribute.name} of type {kind} has no Parquet mapping")
        fields.append(pa.field(attribute.name, _ARROW.get(kind, pa.string())))
    return pa.schema(fields)


def _batch(records: list[asyncpg.Record], schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for i, field in enumerate(schema):
        values = [r[i] for r in records]
        if field.type == pa.string():
            values = [None if v is None else str(v) for v in values]
        columns.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


async def export(
    conn: asyncpg.Connection, store: ArtifactStore, part: Partition, batch_rows: int
) -> tuple[str, int]:
    """Write the partition to Parquet in the store, a row group per batch (memory stays one
    batch, whatever the day's size); its URL and the rows written."""
    # The name comes from the catalogue (pg_inherits), never from input.
    statement = await conn.prepare(f'SELECT * FROM "{part.name}"')  # nosec B608
    schema = _schema(statement.get_attributes())
    rows = 0
    with tempfile.TemporaryDirectory(prefix="kiki-retention-") as folder:
        local = Path(folder) / f"{part.name}.parquet"
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            async with conn.transaction():  # a cursor lives in a transaction
                cursor = await statement.cursor()
                while records := await cursor.fetch(batch_rows):
                    writer.write_batch(_batch(records, schema))
                    rows += len(records)
        key = f"retention/{part.table}/day={part.day.isoformat()}/{part.name}.parquet"
        url = store.put_file(local, key)
    return url, rows


async def waiting_days(conn: asyncpg.Connection, policy: Policy) -> list[date]:
    """The days of the rows in the table's DEFAULT partition (written for a day that had no
    partition yet): each gets its partition, which takes its rows over."""
    fallback = f"{policy.table}_default"
    if await conn.fetchval("SELECT to_regclass($1)", fallback) is None:
        return []
    # Names from POLICIES, never from input.
    rows = await conn.fetch(
        f'SELECT DISTINCT ("{policy.column}" AT TIME ZONE \'UTC\')::date FROM "{fallback}"'  # nosec B608
    )
    return sorted(r[0] for r in rows)


async def _held(conn: asyncpg.Connection, policy: Policy, part: Partition) -> bool:
    if policy.held is None:
        return False
    return await conn.fetchval(
        f'SELECT EXISTS (SELECT FROM "{part.name}" AS e WHERE {policy.held})'  # nosec B608
    )


async def _drop(
    conn: asyncpg.Connection, policy: Policy, part: Partition, exported_rows: int
) -> bool:
    """Drop the partition if it still holds exactly the rows exported, and the idempotency
    keys of its day with it (one transaction: a key never outlives its row or goes before)."""
    async with conn.transaction():
        await conn.execute(f'LOCK TABLE "{part.name}" IN ACCESS EXCLUSIVE MODE')
        now = await conn.fetchval(f'SELECT count(*) FROM "{part.name}"')  # nosec B608
        if now != exported_rows:
            return False
        await conn.execute(f'DROP TABLE "{part.name}"')
        if policy.keys is not None:
            start = datetime.combine(part.day, time(), UTC)
            await conn.execute(
                f'DELETE FROM "{policy.keys}" WHERE "{policy.column}" >= $1 '  # nosec B608
                f'AND "{policy.column}" < $2',
                start, start + timedelta(days=1),
            )  # fmt: skip
    return True


async def run(
    conn: asyncpg.Connection,
    store: ArtifactStore,
    today: date,
    keep_days: Mapping[str, int],
    dry_run: bool = False,
    ahead_days: int = AHEAD_DAYS,
    batch_rows: int = EXPORT_BATCH_ROWS,
) -> RetentionReport:
    """One retention pass over every partitioned table: partitions ahead (and for the rows
    waiting in a DEFAULT partition), then export and drop what is past the table's days kept
    (`keep_days`, by table; 0 or absent = forever). A dry run changes nothing and says what
    it would do."""
    keep = {p.table: keep_days.get(p.table, 0) for p in POLICIES}
    if any(days < 0 for days in keep.values()):
        raise ValueError("days kept must be at least 1 (0 = forever)")
    report = RetentionReport(dry_run=dry_run, keep_days=keep, created=[], expired=[], exported=[])
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
        return report.model_copy(update={"busy": True})
    try:
        for policy in POLICIES:
            table = policy.table
            parts = await partitions(conn, table)
            have = {p.day for p in parts}
            ahead = [today + timedelta(days=n) for n in range(ahead_days + 1)]
            waiting = await waiting_days(conn, policy)
            missing = sorted({d for d in [*ahead, *waiting] if d not in have})
            report.created += [partition_name(table, d) for d in missing]
            if not dry_run:
                await ensure_days(conn, table, missing)
                parts = await partitions(conn, table)
            if keep[table] == 0:
                continue
            for part in expired(parts, today, keep[table]):
                if await _held(conn, policy, part):
                    report.held.append(Held(partition=part.name, reason=policy.why_held))
                    continue
                report.expired.append(part)
                if dry_run:
                    continue
                url, rows = await export(conn, store, part, batch_rows)
                dropped = await _drop(conn, policy, part, rows)
                report.exported.append(
                    Exported(table=table, day=part.day, rows=rows, bytes=part.bytes, url=url,
                             dropped=dropped)
                )  # fmt: skip
        return report
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
