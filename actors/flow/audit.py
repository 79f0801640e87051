"""The bid loop's audit trail: every decision to PostgreSQL (COPY, in the background) and to a
`decision: {json}` line, without holding up a tick."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from actors.resilience import Supervisor
from kiki.billing import record_usages
from kiki.flow import audit, store

logger = logging.getLogger("kiki.flow")
MAX_AUDIT_BACKLOG = 500_000  # rows; past this a tick waits for the writer


class AuditWriter:
    """Buffers ticks' decisions; a background task COPYs them and appends the log lines. With
    `bill`, the same transaction reports the decisions to Billing (`bid_decisions`), so
    usage matches the trail exactly."""

    def __init__(
        self, pool: asyncpg.Pool, log_path: Path | None, supervisor: Supervisor, bill: bool = True
    ) -> None:
        self.pool = pool
        self.log_path = log_path
        self.bill = bill
        self.batches: list[audit.Decisions] = []
        self.backlog = 0  # rows in self.batches
        self.written = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        supervisor.start("audit_writer", self._run)
        if log_path:
            log_path.parent.mkdir(parents=True, exist_ok=True)

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
                    async with self.pool.acquire() as conn, conn.transaction():
                        await store.copy_decisions(conn, _rows(batches))
                        if self.bill:
                            await record_usages(conn, audit.usage(_rows(batches)))
                except Exception as exc:
                    # Keep the rows: the next pass retries them first.
                    logger.warning("audit write failed; retrying", extra={"error": repr(exc)})
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
        if not self.log_path:
            return
        try:
            with self.log_path.open("a") as out:
                for batch in batches:
                    out.write(audit.log_lines(batch))
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


def _rows(batches: list[audit.Decisions]) -> Iterator[tuple]:
    return itertools.chain.from_iterable(b.rows() for b in batches)
