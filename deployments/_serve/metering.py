"""Billable usage counted in a replica and reported to Billing in idempotent batches."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from kiki.billing import Usage, record_usages

if TYPE_CHECKING:
    from deployments._serve.runtime import ServiceRuntime

logger = logging.getLogger("kiki.serve")


class UsageMeter:
    """A replica's billable usage of one metric, per tenant, reported to Billing every
    `flush_s` in one idempotent write (kiki.billing.metering). A report that fails is retried
    with the same transaction ids, so it is counted once; counts not yet reported are lost
    if the replica dies, at most `flush_s` of them."""

    def __init__(self, runtime: ServiceRuntime, metric: str, flush_s: float = 5.0) -> None:
        self.runtime, self.metric, self.flush_s = runtime, metric, flush_s
        self.counts: Counter[UUID] = Counter()
        self._origin = uuid.uuid4().hex  # this replica's reports never collide with another's
        self._sequence = 0
        self._task: asyncio.Task | None = None

    def add(self, tenant_id: UUID, quantity: int) -> None:
        if quantity <= 0:
            return
        self.counts[tenant_id] += quantity
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._report_forever())

    async def _report_forever(self) -> None:
        pending: list[Usage] = []
        while True:
            await asyncio.sleep(self.flush_s)
            if not pending and self.counts:
                self._sequence += 1
                counts, self.counts = self.counts, Counter()
                at = datetime.now(UTC)
                pending = [
                    Usage(
                        tenant_id=tenant,
                        metric_code=self.metric,
                        quantity=n,
                        transaction_id=f"{self.metric}:{self._origin}:{self._sequence}:{tenant}",
                        at=at,
                    )
                    for tenant, n in counts.items()
                ]
            if not pending:
                continue
            try:
                pool = await self.runtime.pool()
                async with pool.acquire() as conn:
                    await record_usages(conn, pending)
                pending = []
            except Exception as exc:  # the next round retries the same report
                extra = {"metric": self.metric, "error": repr(exc)}
                logger.warning("usage report failed", extra=extra)
