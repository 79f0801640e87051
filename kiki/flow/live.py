"""The live market: the real ad platforms instead of the sandbox exchange.

Credentials come from a JSON file (`KIKI_PLATFORM_CREDENTIALS`), one object per platform in
the shape of its connector's settings (`GoogleAdsSettings`, `MetaSettings`, ...), checked when
loaded so a typo stops the start-up with the platform and field named.

Spend cannot be capped per tick on a real platform: it is reported, with a lag, as each
ad group's running total for the day. `SpendMarks` turns those totals into what was spent
since the last report, which the bid loop charges against the pool's budget lease, and keeps
how far the committed leases have charged them (persisted with each commit); a report
beyond the lease is committed as over-delivery, which SyncShield records and blocks on. The
platform itself is held to the lease by the daily budget pushed to it (kiki.flow.caps).
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

    def most(self, other: Delivered) -> Delivered:
        """Field by field the larger: running totals only grow, so a platform that revises
        one down charges nothing more (and is not refunded)."""
        return Delivered(
            max(self.spend_micros, other.spend_micros),
            max(self.clicks, other.clicks),
            max(self.conversions, other.conversions),
            max(self.value_micros, other.value_micros),
        )

    def minus(self, other: Delivered) -> Delivered:
        return Delivered(
            self.spend_micros - other.spend_micros,
            self.clicks - other.clicks,
            self.conversions - other.conversions,
            self.value_micros - other.value_micros,
        )

    def plus(self, other: Delivered) -> Delivered:
        return Delivered(
            self.spend_micros + other.spend_micros,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.value_micros + other.value_micros,
        )


MarkKey = tuple[str, str, date]  # platform, ad group ref, day
# A report total a commit carries to the ledger: platform, ad group ref, ISO day, spend,
# clicks, conversions, value (plain tuples: they travel to the budget actors every tick).
ReportMark = tuple[str, str, str, int, int, int, int]


def mark(key: MarkKey, totals: Delivered) -> ReportMark:
    platform, ref, day = key
    return (platform, ref, day.isoformat(), totals.spend_micros, totals.clicks,
            totals.conversions, totals.value_micros)  # fmt: skip


def unmark(row: ReportMark) -> tuple[MarkKey, Delivered]:
    platform, ref, day, *totals = row
    return (platform, ref, date.fromisoformat(day)), Delivered(*totals)


@dataclass
class SpendMarks:
    """Per platform, ad group and day, three running totals of the platform's reports:
    `latest` as last reported, `delivered` as far as handed to the bid loop (and so into a
    budget lease), `charged` as far as a committed lease has paid for (persisted with that
    commit, so a restarted shard starts from it and charges only new spend).

    What was delivered but never committed (a lease lost with a restart, a commit refused) is
    rewound to `charged` and delivered again, so a day is charged once, never twice or zero."""

    latest: dict[MarkKey, Delivered] = field(default_factory=dict)
    delivered: dict[MarkKey, Delivered] = field(default_factory=dict)
    charged: dict[MarkKey, Delivered] = field(default_factory=dict)

    def report(self, platform: str, rows: list[SpendRow]) -> None:
        for row in rows:
            key = (platform, row.ad_group_ref, row.day)
            now = Delivered(
                row.spend_micros, row.clicks, row.conversions, row.conversion_value_micros
            )
            self.latest[key] = self.latest.get(key, now).most(now)

    def take(self) -> dict[tuple[str, str], Delivered]:
        """What was reported since the last take, per (platform, ad group ref)."""
        out: dict[tuple[str, str], Delivered] = {}
        for key, latest in self.latest.items():
            before = self.delivered.get(key, Delivered())
            after = before.most(latest)
            if after == before:
                continue
            self.delivered[key] = after
            group = (key[0], key[1])
            out[group] = out.get(group, Delivered()).plus(after.minus(before))
        return out

    def pending(self, platform: str, refs: set[str]) -> tuple[ReportMark, ...]:
        """The delivered totals of these ad groups that no commit has carried yet: what a
        commit of their lease must persist."""
        return tuple(
            mark(key, totals)
            for key, totals in self.delivered.items()
            if key[0] == platform and key[1] in refs and self.charged.get(key) != totals
        )

    def settled(self, rows: tuple[ReportMark, ...], committed: bool) -> None:
        """A commit carrying `rows` was written (they are charged), or refused for good
        (their spend is rewound, to be delivered into the next lease)."""
        for row in rows:
            key, totals = unmark(row)
            if committed:
                self.charged[key] = self.charged.get(key, totals).most(totals)
            else:
                self.delivered[key] = self.charged.get(key, Delivered())

    def restore(self, rows: list[ReportMark]) -> None:
        """The persisted marks after a start: charged and delivered, nothing pending."""
        for row in rows:
            key, totals = unmark(row)
            self.charged[key] = self.delivered[key] = totals

    def rewind(self, in_flight: list[tuple[ReportMark, ...]]) -> None:
        """The leases were dropped (pools renumbered): deliver again whatever no commit
        has charged nor still carries (`in_flight`: commits waiting to be retried)."""
        self.delivered = dict(self.charged)
        for rows in in_flight:
            for row in rows:
                key, totals = unmark(row)
                self.delivered[key] = self.delivered.get(key, totals).most(totals)

    def forget_before(self, day: date) -> None:
        """Days no report asks for any more (the bid loop reads today and yesterday)."""
        for marks in (self.latest, self.delivered, self.charged):
            for key in [k for k in marks if k[2] < day]:
                del marks[key]

    def spent_on(self, platform: str, refs: set[str], day: date) -> int:
        """Delivered spend of these ad groups on `day` (what the bid loop already counts)."""
        return sum(
            totals.spend_micros
            for (p, ref, d), totals in self.delivered.items()
            if p == platform and d == day and ref in refs
        )
