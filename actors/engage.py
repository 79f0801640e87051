"""The engage automation actor: one named, detached actor that every
`engage_automation_interval_s` runs a round of kiki.engage.schedule (CRM syncs, then
retention rules). A thin shell: the round itself is plain Python over PostgreSQL, and every
message carries a per-period idempotency key, so a restarted actor or an overlapping
`run_once` can never send a rule's message twice in a period.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import ray

from actors.resilience import Supervisor, command
from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.db.pool import LazyPool
from kiki.engage import messaging
from kiki.engage.channels import configured_channels
from kiki.engage.schedule import run_round
from kiki.vault import Vault

AUTOMATION_NAME = "kiki-engage-automation"
logger = logging.getLogger("kiki.engage")


class EngageAutomationShell:
    def __init__(self, database_url: str, settings: dict[str, Any]) -> None:
        self.database_url = database_url
        self.settings = Settings(**settings)
        self._pool = LazyPool(database_url)
        self._client = httpx.AsyncClient()
        self._lock = asyncio.Lock()
        self._supervisor = Supervisor("engage-automation")
        self.rounds = 0

    @command("engage-automation")
    async def ready(self) -> bool:
        """Starts the schedule (once) and says it runs."""
        await self._pool()
        interval = self.settings.engage_automation_interval_s
        self._supervisor.start_every("schedule", interval, self.run_once)
        return self._supervisor.running("schedule")

    @command("engage-automation")
    async def run_once(self) -> dict[str, Any]:
        """One round now (rounds never overlap); its report as JSON."""
        await self.ready()
        pool = await self._pool()
        async with self._lock:
            s = self.settings
            report = await run_round(
                pool,
                self._client,
                Vault.from_settings(s),
                configured_channels(s, self._client, pool),
                messaging.Caps(per_day=s.engage_cap_per_day, per_week=s.engage_cap_per_week),
                datetime.now(UTC).date(),
                ArtifactStore.from_settings(s),
            )
        self.rounds += 1
        summary = {
            "event": "engage_round",
            "syncs": len(report.syncs),
            "rules": len(report.runs),
            "sent": sum(t.outcome == "sent" for r in report.runs for t in r.targets),
            "errors": report.errors,
        }
        logger.info(json.dumps(summary))
        return report.model_dump(mode="json")

    @command("engage-automation")
    async def stop(self) -> int:
        """Ends the schedule; returns the rounds run."""
        await self._supervisor.stop()
        await self._pool.close()
        await self._client.aclose()
        return self.rounds


EngageAutomationActor = ray.remote(max_restarts=-1, max_task_retries=-1)(EngageAutomationShell)


def engage_automation(
    database_url: str, settings: Settings, namespace: str = "kiki", num_cpus: float = 0.05
) -> Any:
    """The cluster's one automation actor, created on first use."""
    return EngageAutomationActor.options(
        name=AUTOMATION_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=num_cpus,
    ).remote(database_url, settings.model_dump(exclude_defaults=True))
