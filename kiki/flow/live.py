"""The live market: the real ad platforms instead of the sandbox exchange.

Credentials come from a JSON file (`KIKI_PLATFORM_CREDENTIALS`), one object per platform in
the shape of its connector's settings (`GoogleAdsSettings`, `MetaSettings`, ...), checked when
loaded so a typo stops the start-up with the platform and field named.

Spend cannot be capped per tick on a real platform: it is reported, with a lag, as each
ad group's running total for the day. `SpendDeltas` turns those totals into what was spent
since the last report, which the bid loop charges against the pool's budget lease; a report
beyond the lease is committed as over-delivery, which SyncShield records and blocks on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kiki.errors import ConfigError
from kiki.flow.connectors import CONNECTORS, PlatformSettings
from kiki.flow.connectors.base import SpendRow


def parse_credentials(raw: dict[str, Any]) -> dict[str, PlatformSettings]:
    """{platform: settings} validated by each platform's settings model."""
    out = {}
    for platform, values in raw.items():
        connector = CONNECTORS.get(platform)
        if connector is None:
            raise ConfigError(
                f"platform credentials name {platform!r}; use {', '.join(CONNECTORS)}"
            )
        try:
            out[platform] = connector.settings_type.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = f"platform credentials for {platform}: {where}: {first['msg']}"
            raise ConfigError(message) from None
    return out


def load_credentials(path: Path) -> dict[str, Any]:
    """The raw credentials file (validated by `parse_credentials`; raw so that it can be sent
    to the bid-loop actors as plain data)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"KIKI_PLATFORM_CREDENTIALS: {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"KIKI_PLATFORM_CREDENTIALS: {path} is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"KIKI_PLATFORM_CREDENTIALS: {path} must hold an object per platform")
    parse_credentials(raw)
    return raw


@dataclass(frozen=True, slots=True)
class Delivered:
    spend_micros: int = 0
    clicks: int = 0
    conversions: int = 0
    value_micros: int = 0


@dataclass
class SpendDeltas:
    """Running daily totals in, increments since the last report out (per ad group)."""

    seen: dict[tuple[str, date], Delivered] = field(default_factory=dict)

    def update(self, rows: list[SpendRow]) -> dict[str, Delivered]:
        out: dict[str, Delivered] = {}
        for row in rows:
            key = (row.ad_group_ref, row.day)
            before = self.seen.get(key, Delivered())
            now = Delivered(
                row.spend_micros, row.clicks, row.conversions, row.conversion_value_micros
            )
            self.seen[key] = now
            # Totals only grow; a platform that revises one down changes nothing here.
            step = Delivered(
                max(0, now.spend_micros - before.spend_micros),
                max(0, now.clicks - before.clicks),
                max(0, now.conversions - before.conversions),
                max(0, now.value_micros - before.value_micros),
            )
            total = out.get(row.ad_group_ref, Delivered())
            out[row.ad_group_ref] = Delivered(
                total.spend_micros + step.spend_micros,
                total.clicks + step.clicks,
                total.conversions + step.conversions,
                total.value_micros + step.value_micros,
            )
        return out
