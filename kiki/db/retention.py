"""Day partitions of the append-only tables that grow with traffic, and their retention.

`flow_decisions` (the bid loop's audit trail: about 860 million rows a day at 1,000 campaigns)
is partitioned by UTC day on `decided_at` (migration 0018). A retention run creates the
partitions of the next days ahead of time, then exports every day older than
KIKI_DECISIONS_RETENTION_DAYS to Parquet in the artifact store
(`retention/<table>/day=YYYY-MM-DD/<partition>.parquet`, file:// or S3) and drops it: a
whole-table DROP, where a DELETE of that many rows would bloat the table and the WAL. The
audit writer creates a missing day's partition itself before it copies (`ensure_days`), so
no insert waits for the schedule.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from kiki.artifacts import ArtifactStore

PARTITIONED = ("flow_decisions",)  # tables partitioned by UTC day (kiki_day_partition)
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


class RetentionReport(BaseModel):
    dry_run: bool
    keep_days: int
    created: list[str]  # partitions made ahead of time (or that a dry run would make)
    expired: list[Partition]  # the days past retention (exported and dropped unless dry run)
    exported: list[Exported]
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
           WHERE i.inhparent = $1::regclass ORDER BY c.relname""",
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


async def _drop(conn: asyncpg.Connection, part: Partition, exported_rows: int) -> bool:
    """Drop the partition if it still holds exactly the rows exported."""
    async with conn.transaction():
        await conn.execute(f'LOCK TABLE "{part.name}" IN ACCESS EXCLUSIVE MODE')
        now = await conn.fetchval(f'SELECT count(*) FROM "{part.name}"')  # nosec B608
        if now != exported_rows:
            return False
        await conn.execute(f'DROP TABLE "{part.name}"')
    return True


async def run(
    conn: asyncpg.Connection,
    store: ArtifactStore,
    today: date,
    keep_days: int,
    dry_run: bool = False,
    ahead_days: int = AHEAD_DAYS,
    batch_rows: int = EXPORT_BATCH_ROWS,
) -> RetentionReport:
    """One retention pass over every partitioned table: partitions ahead, then export and
    drop what is past `keep_days`. A dry run changes nothing and says what it would do."""
    if keep_days < 1:
        raise ValueError("keep_days must be at least 1: today's partition is being written")
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
        return RetentionReport(
            dry_run=dry_run, keep_days=keep_days, created=[], expired=[], exported=[], busy=True
        )
    try:
        report = RetentionReport(
            dry_run=dry_run, keep_days=keep_days, created=[], expired=[], exported=[]
        )
        for table in PARTITIONED:
            parts = await partitions(conn, table)
            have = {p.day for p in parts}
            ahead = [today + timedelta(days=n) for n in range(ahead_days + 1)]
            missing = [d for d in ahead if d not in have]
            report.created += [partition_name(table, d) for d in missing]
            if not dry_run:
                await ensure_days(conn, table, missing)
            old = expired(parts, today, keep_days)
            report.expired += old
            if dry_run:
                continue
            for part in old:
                url, rows = await export(conn, store, part, batch_rows)
                dropped = await _drop(conn, part, rows)
                report.exported.append(
                    Exported(table=table, day=part.day, rows=rows, bytes=part.bytes, url=url,
                             dropped=dropped)
                )  # fmt: skip
        return report
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
