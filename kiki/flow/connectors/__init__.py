"""Connectors to the ad platforms, one per platform behind `PlatformConnector`.

`build_connector` is the one place that maps a platform name to its client, so the bid loop
can hold connectors by name without importing each module.
"""

from __future__ import annotations

import httpx

from kiki.clock import Clock
from kiki.errors import ConfigError
from kiki.flow.connectors.amazon import AmazonAdsConnector, AmazonAdsSettings
from kiki.flow.connectors.base import PLATFORMS, PlatformConnector
from kiki.flow.connectors.google_ads import GoogleAdsConnector, GoogleAdsSettings
from kiki.flow.connectors.http import HttpConnector, PlatformSettings
from kiki.flow.connectors.linkedin import LinkedInConnector, LinkedInSettings
from kiki.flow.connectors.meta import MetaConnector, MetaSettings
from kiki.flow.connectors.tiktok import TikTokConnector, TikTokSettings

CONNECTORS: dict[str, type[HttpConnector]] = {
    connector.platform: connector
    for connector in (
        GoogleAdsConnector,
        MetaConnector,
        TikTokConnector,
        LinkedInConnector,
        AmazonAdsConnector,
    )
}


def build_connector(
    platform: str, client: httpx.AsyncClient, settings: PlatformSettings, clock: Clock | None = None
) -> PlatformConnector:
    """The connector for `platform`, speaking through `client` with `settings` (its own
    settings class, e.g. MetaSettings for "meta")."""
    connector = CONNECTORS.get(platform)
    if connector is None:
        raise ConfigError(f"unknown ad platform {platform!r}; known: {', '.join(PLATFORMS)}")
    return connector(client, settings, clock)


__all__ = [
    "CONNECTORS",
    "PLATFORMS",
    "AmazonAdsSettings",
    "GoogleAdsSettings",
    "LinkedInSettings",
    "MetaSettings",
    "PlatformConnector",
    "PlatformSettings",
    "TikTokSettings",
    "build_connector",
]
