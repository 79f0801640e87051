"""Background work a tenant's models wait on (the first run's demo: its data loaded, then an
LTV and a churn model trained), kept in PostgreSQL (`training_jobs`) so that every replica on
every node tells a caller the same thing: "being trained, ready in about N s" (HTTP 409 with
Retry-After) instead of "train one".

The worker beats a heartbeat every HEARTBEAT_S; a job whose heartbeat is older than STALE_S
counts as stopped (its worker died with its node), so a lost worker never leaves callers
waiting for ever. Times are the database's clock, never a node's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from kiki.errors import FailedPrecondition

Kind = Literal["data", "ltv", "churn"]
Step = tuple[Kind, float]  # a job and the seconds it is expected to take
HEARTBEAT_S = 10.0
STALE_S = 60.0
OVERDUE_RETRY_S = 15  # past its estimate, a job is asked after again this often
WHAT = {
    "data": "the purchase data is being loaded",
    "ltv": "the LTV model is being trained",
    "churn": "the churn model is being trained",
}


class TrainingJob(BaseModel):
    tenant_id: UUID
    kind: Kind
    purpose: str
    status: Literal["running", "done", "failed"]
    started_at: datetime
    ready_by: datetime
    finished_at: datetime | None
    detail: str | None
    live: bool  # running, and its worker's heartbeat is fresh
    seen_at: datetime  # the database's clock when read

    def not_ready(self) -> FailedPrecondition:
        """The 409 of a call that waits on this running job: what it waits for and when to
        come back (Retry-After)."""
        left = (self.ready_by - self.seen_at).total_seconds()
        since = f"{WHAT[self.kind]} ({self.purpose}, since {self.started_at:%H:%M:%S} UTC)"
        if left > 0:
            wait = math.ceil(left)
            return FailedPrecondition(
                f"{since}: ready in about {wait} s (by {self.ready_by:%H:%M:%S} UTC); retry then",
                code="training_in_progress",
                retry_after_s=wait,
            )
        return FailedPrecondition(
            f"{since}: it is taking longer than the estimate ({self.ready_by:%H:%M:%S} UTC); "
            f"retry in {OVERDUE_RETRY_S} s",
            code="training_in_progress",
            retry_after_s=OVERDUE_RETRY_S,
        )


def no_model(job: TrainingJob | None, how_to_train: str) -> FailedPrecondition:
    """The 409 of a call that needs a model the tenant does not have: "being trained" while a
    job trains it, else how to train one (after what became of a job that did not finish)."""
    if job is not None and job.live:
        return job.not_ready()
    if job is not None and job.status == "failed":
        return FailedPrecondition(
            f"the {job.purpose} did not train it ({job.detail}); {how_to_train}"
        )
    if job is not None and job.status == "running":
        return FailedPrecondition(
            f"the {job.purpose} stopped before it was ready (its worker is gone); {how_to_train}"
        )
    return FailedPrecondition(how_to_train)


# `live` by the database's clock; STALE_S is a constant, not input.
_SELECT = f"""SELECT tenant_id, kind, purpose, status, started_at, ready_by, finished_at, detail,
    status = 'running' AND heartbeat_at > now() - interval '{STALE_S:g} seconds' AS live,
    now() AS seen_at FROM training_jobs WHERE tenant_id = $1"""  # nosec B608


async def latest(conn: asyncpg.Connection, tenant_id: UUID, kind: Kind) -> TrainingJob | None:
    row = await conn.fetchrow(f"{_SELECT} AND kind = $2", tenant_id, kind)
    return TrainingJob(**dict(row)) if row else None


async def jobs(conn: asyncpg.Connection, tenant_id: UUID) -> list[TrainingJob]:
    """The tenant's jobs, in the order they are expected to finish."""
    rows = await conn.fetch(f"{_SELECT} ORDER BY ready_by", tenant_id)
    return [TrainingJob(**dict(r)) for r in rows]


async def check_loaded(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    """For answers made from the data alone (cohorts): a 409 while the data is being loaded,
    not a partial or empty answer."""
    job = await latest(conn, tenant_id, "data")
    if job is not None and job.live:
        raise job.not_ready()


async def plan(
    conn: asyncpg.Connection, tenant_id: UUID, purpose: str, steps: Sequence[Step]
) -> None:
    """Record the steps as running, one after the other from now, before any worker starts:
    from this commit on, every replica answers "being trained"."""
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO training_jobs (tenant_id, kind, purpose, status, ready_by)
               VALUES ($1, $2, $3, 'running', now())
               ON CONFLICT (tenant_id, kind) DO UPDATE
               SET purpose = excluded.purpose, status = 'running', started_at = now(),
                   heartbeat_at = now(), finished_at = NULL, detail = NULL""",
            [(tenant_id, kind, purpose) for kind, _ in steps],
        )
        await _reestimate(conn, tenant_id, steps)


async def begin(conn: asyncpg.Connection, tenant_id: UUID, steps: Sequence[Step]) -> None:
    """The first step starts now; it and those after it are expected one after the other."""
    await conn.execute(
        """UPDATE training_jobs SET started_at = now(), heartbeat_at = now()
           WHERE tenant_id = $1 AND kind = $2""",
        tenant_id,
        steps[0][0],
    )
    await _reestimate(conn, tenant_id, steps)


async def _reestimate(conn: asyncpg.Connection, tenant_id: UUID, steps: Sequence[Step]) -> None:
    total = 0.0
    for kind, seconds in steps:
        total += seconds
        await conn.execute(
            """UPDATE training_jobs SET ready_by = now() + make_interval(secs => $3)
               WHERE tenant_id = $1 AND kind = $2 AND status = 'running'""",
            tenant_id,
            kind,
            total,
        )


async def beat(conn: asyncpg.Connection, tenant_id: UUID, steps: Sequence[Step]) -> None:
    """The worker is alive: its running jobs stay running. `steps` are those left, the first
    one under way; when it runs past its estimate, the steps after it move back with it."""
    async with conn.transaction():
        await conn.execute(
            """UPDATE training_jobs SET heartbeat_at = now()
               WHERE tenant_id = $1 AND status = 'running'""",
            tenant_id,
        )
        if steps:
            left = await conn.fetchval(
                """SELECT greatest(extract(epoch FROM ready_by - now()), 0)::float8
                   FROM training_jobs WHERE tenant_id = $1 AND kind = $2""",
                tenant_id,
                steps[0][0],
            )
            await _reestimate(conn, tenant_id, [(steps[0][0], left or 0.0), *steps[1:]])


async def finish(conn: asyncpg.Connection, tenant_id: UUID, kind: Kind, detail: str) -> None:
    await conn.execute(
        """UPDATE training_jobs SET status = 'done', finished_at = now(), detail = $3
           WHERE tenant_id = $1 AND kind = $2""",
        tenant_id,
        kind,
        detail,
    )


async def fail(conn: asyncpg.Connection, tenant_id: UUID, detail: str) -> None:
    """Every job of the tenant still running failed, for `detail`."""
    await conn.execute(
        """UPDATE training_jobs SET status = 'failed', finished_at = now(), detail = $2
           WHERE tenant_id = $1 AND status = 'running'""",
        tenant_id,
        detail,
    )
