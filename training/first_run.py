"""The first run's demo: a tenant with no data gets the CDNOW purchase log and small LTV and
churn models, so the seed's calls (PredictLTV, churn-risk, cohorts) answer with data a few
minutes after the first `kiki up` instead of 409.

CDNOW's purchases (1997-01 .. 1998-06) are moved YEARS_LATER years on, so its first customers
are the cohort of January 2026 (the seed's `cohort_jan_2026`) and the log runs up to today;
purchases that would lie after today are left out. The models learn from purchases up to one
horizon before the last one, so their metrics come from days they never saw.

Each step is a row of `training_jobs` (kiki.training_jobs), planned by the launcher before this
runs and beaten alive while it runs: every replica answers "being trained, ready in about N s"
meanwhile. Threads: the fits run one after the other on one thread in the retraining actor
(torch set to one thread there; Ray gives its sub-CPU worker OMP_NUM_THREADS=1, which XGBoost
follows), so on a 2-core machine the other core keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg
import pandas as pd
from pydantic import BaseModel, Field

from kiki import training_jobs
from kiki.artifacts import ArtifactStore
from kiki.gdpr import Suppressions
from kiki.value import transactions
from kiki.value.cdnow import load_cdnow
from training.families import CHURN, LTV, Family, TrainOptions, register_trained

PURPOSE = "first-run demo"
YEARS_LATER = 29  # 1997-01 becomes 2026-01
ORDER_PREFIX = "demo-cdnow-"
CDNOW_CUSTOMERS = 23_570
# Seconds each step takes with a few hundred customers and with all of CDNOW, as measured on
# this busy 2-core machine (the LTV fit is about 36 s of CPU, the churn fit 5 s; `kiki up`
# took 1, 63 and 5 s). Only estimates: a step past its own pushes the later ones back.
SECONDS: dict[training_jobs.Kind, tuple[float, float]] = {
    "data": (2, 6),
    "ltv": (4, 60),
    "churn": (3, 20),
}


class DemoOptions(BaseModel):
    """How big the demo is: all of CDNOW by default, a few hundred customers in tests. The
    models are small: each family's default settings without a Tune search (the retraining
    actor's later rounds search)."""

    customers: int | None = Field(None, ge=50, description="the first N CDNOW customers")
    horizon_days: int = 90
    ltv_epochs: int = Field(20, ge=1)
    churn_rounds: int = Field(300, ge=1)

    def steps(self) -> list[training_jobs.Step]:
        """Each step's expected seconds, between SECONDS' two by the share of customers."""
        share = (self.customers or CDNOW_CUSTOMERS) / CDNOW_CUSTOMERS
        return [(kind, low + (high - low) * share) for kind, (low, high) in SECONDS.items()]

    def train_options(self, size: int) -> TrainOptions:
        return TrainOptions(self.horizon_days, trials=0, size=size)


def demo_purchases(today: date, customers: int | None = None) -> pd.DataFrame:
    """CDNOW moved YEARS_LATER years on, up to today; with `customers`, the first ones only."""
    frame = load_cdnow()
    if customers is not None:
        kept = sorted(frame["customer_id"].unique())[:customers]
        frame = frame[frame["customer_id"].isin(kept)]
    frame = frame.assign(ts=frame["ts"] + pd.DateOffset(years=YEARS_LATER))
    return frame[frame["ts"] < pd.Timestamp(today) + pd.Timedelta(days=1)]


async def _beat(pool: asyncpg.Pool, tenant_id: UUID, left: list[training_jobs.Step]) -> None:
    """Keep the jobs alive; `left` is the worker's steps still to finish, the first under way."""
    while True:
        await asyncio.sleep(training_jobs.HEARTBEAT_S)
        async with pool.acquire() as conn:
            await training_jobs.beat(conn, tenant_id, left)


async def _load(
    pool: asyncpg.Pool, tenant_id: UUID, options: DemoOptions, suppressions: Suppressions
) -> pd.DataFrame:
    """The demo's purchases into the tenant's, all at once (but for customers erased at
    their request); its purchase history back."""
    frame = demo_purchases(datetime.now(UTC).date(), options.customers)
    rows = await asyncio.to_thread(transactions.from_frame, frame, ORDER_PREFIX)
    async with pool.acquire() as conn, conn.transaction():
        await transactions.insert(conn, tenant_id, rows, suppressions)
        history = await transactions.history(conn, tenant_id, datetime.now(UTC))
        await training_jobs.finish(
            conn,
            tenant_id,
            "data",
            f"loaded {len(history):,} purchases of {history['customer_id'].nunique():,} "
            f"customers (CDNOW moved to {history['ts'].min():%Y-%m-%d} .. "
            f"{history['ts'].max():%Y-%m-%d})",
        )
    return history


async def _train(
    pool: asyncpg.Pool,
    store: ArtifactStore,
    tenant_id: UUID,
    family: Family,
    history: pd.DataFrame,
    options: TrainOptions,
) -> None:
    """One family trained on purchases up to one horizon before the last, registered and put
    in production."""
    cut = history["ts"].max().date() - timedelta(days=options.horizon_days)
    result = await asyncio.to_thread(family.train, history, cut, options, store)
    async with pool.acquire() as conn, conn.transaction():
        saved = await register_trained(conn, store, family, tenant_id, result, cut, options)
        await family.models.promote(conn, tenant_id, saved.version)
        said = f"{family.models.noun} version {saved.version} in production"
        await training_jobs.finish(conn, tenant_id, family.kind, said)


async def run_demo(
    pool: asyncpg.Pool,
    store: ArtifactStore,
    tenant_id: UUID,
    options: DemoOptions,
    suppressions: Suppressions,
) -> None:
    """Load the demo's purchases, then an LTV and a churn model, each step marked done in
    `training_jobs` as it ends (or every step left marked failed, with why)."""
    steps = options.steps()
    left = list(steps)
    beating = asyncio.create_task(_beat(pool, tenant_id, left))
    try:
        async with pool.acquire() as conn:
            await training_jobs.begin(conn, tenant_id, steps)
        history = await _load(pool, tenant_id, options, suppressions)
        sizes = {"ltv": options.ltv_epochs, "churn": options.churn_rounds}
        for i, family in enumerate((LTV, CHURN), start=1):
            left[:] = steps[i:]
            async with pool.acquire() as conn:
                await training_jobs.begin(conn, tenant_id, left)
            train = options.train_options(sizes[family.kind])
            await _train(pool, store, tenant_id, family, history, train)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            async with pool.acquire() as conn:
                await training_jobs.fail(conn, tenant_id, f"{exc.__class__.__name__}: {exc}")
        raise
    finally:
        beating.cancel()
