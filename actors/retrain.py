"""The retraining actor: one named, detached actor that every `retrain_check_s` runs a round
of training.rounds (retrain what is due, register challengers, promote the ones that beat
their champion), every `drift_check_s` refreshes the drift gauges and stale flag of every
production LTV model, every `retention_check_s` runs the audit trail's retention
(kiki.db.retention: partitions ahead, old days to Parquet and dropped), and runs a tenant's
first-run demo when `kiki up` asks
(training/first_run.py). Its Ray Tune trials go wherever the cluster has room; the actor itself
only waits for them and fits the winner.

The drift and retention schedules live here, not in the apps' replicas: N replicas would run
them N times, and this actor is the cluster's one (named, detached, restarted on another node when
its node goes: the value app's /health calls `ready`, which starts the schedules again in the
new process)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import ray

from actors.drift import publish
from actors.resilience import Supervisor, command
from actors.telemetry import counter
from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.db import retention
from kiki.db.pool import LazyPool
from kiki.gdpr import Suppressions
from training.families import FAMILIES
from training.first_run import DemoOptions, run_demo
from training.rounds import Outcome, Retrainer

RETRAINER_NAME = "kiki-retrainer"


class RetrainerShell:
    def __init__(self, database_url: str, settings: dict[str, Any]) -> None:
        import torch

        # The final fit runs here, beside the replicas: one thread, as the trials use.
        torch.set_num_threads(1)
        self.database_url = database_url
        self.settings = Settings(**settings)
        self._pool = LazyPool(database_url)
        self.store = ArtifactStore.from_settings(self.settings)
        self._lock = asyncio.Lock()
        self._supervisor = Supervisor("retrainer")
        self.rounds = 0
        # "round" counts the rounds that failed as a whole (the database, the registry).
        families = [{"family": f} for f in (*FAMILIES, "round")]
        self._failures = counter(
            "kiki_retrain_failures", "retrainings that failed, by model family", ("family",),
            families,
        )  # fmt: skip
        self._drift = counter(
            "kiki_retrain_drift", "retrainings started because drift marks the model stale",
            ("family",), families[:-1],
        )  # fmt: skip

    @command("retrainer")
    async def ready(self) -> bool:
        """Starts the schedule (once) and says it runs."""
        await self._retrainer()
        interval = self.settings.retrain_check_s
        self._supervisor.start_every("schedule", interval, self.run_once)
        self._supervisor.start_every("drift", self.settings.drift_check_s, self.check_drift)
        every = self.settings.retention_check_s
        self._supervisor.start_every("retention", every, self.retention)
        return all(self._supervisor.running(n) for n in ("schedule", "drift", "retention"))

    async def _retrainer(self) -> Retrainer:
        return Retrainer(await self._pool(), self.store, self.settings)

    @command("retrainer")
    async def run_once(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """One round now (rounds never overlap): every due model, or with `tenant_id` that
        tenant's models whether due or not. The outcomes as JSON."""
        try:
            retrainer = await self._retrainer()
            async with self._lock:
                only = UUID(tenant_id) if tenant_id else None
                outcomes = await retrainer.round(only_tenant=only)
        except Exception:
            self._failures.inc(1, tags={"family": "round"})
            raise
        self.rounds += 1
        self._count(outcomes)
        return [o.model_dump(mode="json") for o in outcomes]

    def _count(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.failed:
                self._failures.inc(1, tags={"family": o.family})
            elif o.reason == "drift":
                self._drift.inc(1, tags={"family": o.family})

    @command("retrainer")
    async def check_drift(self) -> dict[str, bool]:
        """Every production LTV model's drift now, published as gauges; tenant -> stale.
        Not under the round's lock: a round may train for minutes."""
        reports = await (await self._retrainer()).drift_reports()
        for tenant_id, report in reports.items():
            publish(str(tenant_id), report)
        return {str(t): r.stale for t, r in reports.items()}

    @command("retrainer")
    async def retention(self, dry_run: bool = False) -> dict[str, Any]:
        """One retention pass now (`kiki db retention` runs the same); its report as JSON."""
        pool = await self._pool()
        async with pool.acquire() as conn:
            report = await retention.run(
                conn, self.store, datetime.now(UTC).date(),
                retention.keep_days(self.settings), dry_run=dry_run,
            )  # fmt: skip
        return report.model_dump(mode="json")

    @command("retrainer")
    async def first_run(self, tenant_id: str, options: dict[str, Any]) -> None:
        """A tenant's first-run demo (training/first_run.py): its data and first models,
        never at the same time as a round."""
        async with self._lock:
            await run_demo(
                await self._pool(), self.store, UUID(tenant_id), DemoOptions(**options),
                Suppressions.from_settings(self.settings),
            )  # fmt: skip

    @command("retrainer")
    async def stop(self) -> int:
        """Ends the schedule; returns the rounds run."""
        await self._supervisor.stop()
        await self._pool.close()
        return self.rounds


RetrainerActor = ray.remote(max_restarts=-1, max_task_retries=0)(RetrainerShell)


def retrainer(
    database_url: str,
    settings: Settings,
    namespace: str = "kiki",
    num_cpus: float = 0.05,
    name: str = RETRAINER_NAME,
    detached: bool = True,
) -> Any:
    """The cluster's one retraining actor, created on first use (`name` and `detached=False`
    are for tests that want their own)."""
    return RetrainerActor.options(
        name=name,
        namespace=namespace,
        lifetime="detached" if detached else None,
        get_if_exists=True,
        num_cpus=num_cpus,
    ).remote(database_url, settings.model_dump(exclude_defaults=True))
