"""`kiki up`'s first run: a development tenant without data gets the CDNOW demo and small LTV
and churn models, trained in the background by the retraining actor (training/first_run.py)
while the platform already serves; `kiki up --no-demo` skips it, and a tenant with data never
gets it.

The steps are recorded in `training_jobs` before the actor starts, so from the first answer
on every replica says "being trained, ready in about N s" instead of "train one"; a thread
here reads the same rows and says on the console what happened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from kiki import training_jobs
from kiki.auth import ensure_tenant
from kiki.config import Settings
from kiki.db.pool import connect
from kiki.value import transactions
from training.first_run import PURPOSE, DemoOptions

Echo = Callable[[str], None]
POLL_S = 2.0
FINISHED = "PredictLTV, churn-risk and cohorts answer with data"
HOW_TO_TRAIN = "train models with `kiki train ltv` and `kiki train churn`"


class FirstRun:
    """The demo of one tenant: `plan` decides and records it, `launch` starts the actor and
    the console's watcher, `stop` ends the watcher."""

    def __init__(
        self,
        database_url: str,
        settings: Settings,
        echo: Echo,
        tenant: str | None = None,
        options: DemoOptions | None = None,
    ) -> None:
        self.database_url = database_url
        self.settings = settings
        self.echo = echo
        self.tenant = tenant or settings.dev_tenant
        self.options = options or DemoOptions()
        self.tenant_id: UUID | None = None
        self.call: Any = None  # the actor call, kept while it runs
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    async def _plan(self) -> UUID | None:
        conn = await connect(self.database_url)
        try:
            owner = await ensure_tenant(conn, self.tenant)
            if await transactions.any_purchases(conn, owner.id):
                return None
            await training_jobs.plan(conn, owner.id, PURPOSE, self.options.steps())
            return owner.id
        finally:
            await conn.close()

    def plan(self) -> bool:
        """Record the demo's steps when the tenant has no purchases; False when it has."""
        self.tenant_id = asyncio.run(self._plan())
        if self.tenant_id is None:
            return False
        seconds = sum(s for _, s in self.options.steps())
        self.echo(
            f"==> first run: tenant {self.tenant} has no data: loading the CDNOW demo and "
            f"training small LTV and churn models in the background (about {seconds:.0f} s; "
            "`kiki up --no-demo` skips this)"
        )
        return True

    def launch(self) -> None:
        """Hand the demo to the cluster's retraining actor and watch its progress."""
        from actors.retrain import retrainer

        actor = retrainer(self.database_url, self.settings)
        self.call = actor.first_run.remote(str(self.tenant_id), self.options.model_dump())
        self._watcher = threading.Thread(
            target=lambda: asyncio.run(self._watch()), name="kiki-first-run", daemon=True
        )
        self._watcher.start()

    async def _watch(self) -> None:
        said: set[str] = set()
        conn = await connect(self.database_url)
        try:
            while True:
                await asyncio.sleep(POLL_S)
                if self._stop.is_set():
                    return
                jobs = await training_jobs.jobs(conn, self.tenant_id)
                for job in jobs:
                    if job.kind in said or job.status == "running":
                        continue
                    said.add(job.kind)
                    if job.status == "failed":
                        self.echo(f"    demo: failed ({job.detail}); {HOW_TO_TRAIN}")
                        return
                    took = (job.finished_at or job.seen_at) - job.started_at
                    self.echo(f"    demo: {job.detail} ({took.total_seconds():.0f} s)")
                if any(j.status == "running" and not j.live for j in jobs):
                    self.echo(
                        f"    demo: stopped before it was ready (no heartbeat for "
                        f"{training_jobs.STALE_S:g} s); {HOW_TO_TRAIN}"
                    )
                    return
                if all(j.status == "done" for j in jobs):
                    self.echo(f"    demo: ready: {FINISHED}")
                    return
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=POLL_S * 2)
