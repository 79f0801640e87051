"""The bid loop's audit trail: every decision to PostgreSQL (COPY, in the background) and to a
`decision: {json}` line, without holding up a tick."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, date
from logging.handlers import RotatingFileHandler
from pathlib import Path

import asyncpg

from actors.resilience import Supervisor
from kiki.billing import record_usages
from kiki.db import retention
from kiki.flow import audit, store

logger = logging.getLogger("kiki.flow")
MAX_AUDIT_BACKLOG = 500_000  # rows; past this a tick waits for the writer


class DecisionLog(RotatingFileHandler):
    """A shard's `decision:` log file, rotated past `max_bytes` to `.1`, `.2`, ... (the
    oldest of `backups` deleted), so the lines never fill the disk. The standard library's
    rotation, fed one tick's lines at a time."""

    terminator = ""  # each tick's text already ends its lines

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def write(self, lines: str) -> None:
        self.emit(logging.makeLogRecord({"msg": lines}))

    def handleError(self, record: logging.LogRecord) -> None:
        raise


class AuditWriter:
    """Buffers ticks' decisions; a background task COPYs them and appends the log lines. With
    `bill`, the same transaction reports the decisions to Billing (`bid_decisions`), so
    usage matches the trail exactly."""

    def __init__(
        self, pool: asyncpg.Pool, log: DecisionLog | None, supervisor: Supervisor, bill: bool = True
    ) -> None:
        self.pool = pool
        self.log = log
        self.bill = bill
        self.batches: list[audit.Decisions] = []
        self._days: set[date] = set()  # days whose partition this writer has made sure of
        self.backlog = 0  # rows in self.batches
        self.written = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        supervisor.start("audit_writer", self._run)

    async def add(self, decisions: audit.Decisions) -> None:
        if self.backlog > MAX_AUDIT_BACKLOG:
            await self.flush()  # back-pressure: never let the trail fall far behind
        self.batches.append(decisions)
        self.backlog += len(decisions)
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.batches:
                batches, self.batches = self.batches, []
                rows = sum(len(b) for b in batches)
                try:
                    async with self.pool.acquire() as conn:
                        new_days = _days(batches) - self._days
                        await retention.ensure_days(conn, "flow_decisions", new_days)
                        self._days |= new_days
                        async with conn.transaction():
                            await store.copy_decisions(conn, _rows(batches))
                            if self.bill:
                                await record_usages(conn, audit.usage(_rows(batches)))
                except Exception as exc:
                    # Keep the rows: the next pass retries them first, making sure of every
                    # day's partition again (retention may have dropped an old one).
                    logger.warning("audit write failed; retrying", extra={"error": repr(exc)})
                    self._days.clear()
                    self.batches = batches + self.batches
                    await asyncio.sleep(0.5)
                    continue
                self.backlog -= rows
                self.written += rows
                await self._log(batches)
            self._idle.set()

    async def _log(self, batches: list[audit.Decisions]) -> None:
        """The `decision:` lines. The rows are already in PostgreSQL, so a failed file write
        (disk full, folder gone) is logged and skipped, never retried into duplicates."""
        if not self.log:
            return
        try:
            for batch in batches:
                self.log.write(audit.log_lines(batch))
                await asyncio.sleep(0)  # let a tick waiting on I/O go on
        except OSError as exc:
            logger.warning("decision log not written", extra={"error": repr(exc)})

    async def flush(self) -> None:
        """Wait until every row handed in so far is in PostgreSQL."""
        self._wake.set()
        while self.batches or not self._idle.is_set():
            await self._idle.wait()
            if self.batches:
                self._idle.clear()
                self._wake.set()


def _days(batches: list[audit.Decisions]) -> set[date]:
    """The UTC days the batches' decisions fall on (one tick's rows share one time)."""
    return {moment.astimezone(UTC).date() for b in batches for moment in set(b.columns[1])}


def _rows(batches: list[audit.Decisions]) -> Iterator[tuple]:
    return itertools.chain.from_iterable(b.rows() for b in batches)
