"""What a SyncEngage replica works with: its use cases (kiki.engage.service), the vault of
the CRM credentials, and the automation actor."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import httpx
from fastapi import Depends

from actors.resilience import within
from deployments._serve import context_of
from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.db.pool import PoolSource
from kiki.engage import messaging
from kiki.engage.service import EngageService
from kiki.gdpr import Suppressions
from kiki.vault import Vault


@dataclass
class EngageContext:
    service: EngageService
    # The replica's settings with the app's args in place: the channels, the vault and the
    # automation actor are configured from them.
    settings: Settings
    automation: Any | None = None  # the actor's handle; None when hosted without Ray (tests)

    @classmethod
    def of(cls, pool: PoolSource, settings: Settings, client: httpx.AsyncClient) -> EngageContext:
        caps = messaging.Caps(
            per_day=settings.engage_cap_per_day, per_week=settings.engage_cap_per_week
        )
        store = ArtifactStore.from_settings(settings)
        suppressions = Suppressions.from_settings(settings)
        return cls(EngageService(pool, client, settings, caps, store, suppressions), settings)

    @cached_property
    def vault(self) -> Vault:
        """The CRM credentials' key, read on first use: a bad key fails the CRM calls with its
        reason, not the whole app."""
        return Vault.from_settings(self.settings)

    async def probe(self, timeout_s: float) -> dict[str, str]:
        """/health: the automation actor runs its schedule."""
        assert self.automation is not None
        running = await within(self.automation.ready.remote(), timeout_s, "the engage automation")
        return {"automation": "ok" if running else "failed: its schedule is not running"}


engage_context = context_of(EngageContext)
Context = Annotated[EngageContext, Depends(engage_context)]
