"""The live market's pure parts: credentials checked at load, spend totals to increments."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from kiki.errors import ConfigError
from kiki.flow.connectors.base import SpendRow
from kiki.flow.connectors.google_ads import GoogleAdsSettings
from kiki.flow.live import SpendDeltas, load_credentials, parse_credentials

GOOGLE = {
    "base_url": "https://googleads.googleapis.com",
    "developer_token": "d",
    "access_token": "t",
}


def test_credentials_are_validated_per_platform(tmp_path: Path) -> None:
    parsed = parse_credentials({"google_ads": GOOGLE})
    assert isinstance(parsed["google_ads"], GoogleAdsSettings)
    with pytest.raises(ConfigError, match="myspace"):
        parse_credentials({"myspace": {}})
    with pytest.raises(ConfigError, match="google_ads: access_token"):
        parse_credentials({"google_ads": {**GOOGLE, "access_token": None}})
    path = tmp_path / "credentials.json"
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials(path)
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="an object per platform"):
        load_credentials(path)
    path.write_text(json.dumps({"google_ads": GOOGLE}))
    assert load_credentials(path) == {"google_ads": GOOGLE}


def row(ref: str, day: int, spend: int, clicks: int = 0) -> SpendRow:
    return SpendRow(
        ad_group_ref=ref,
        day=date(2026, 3, day),
        impressions=0,
        clicks=clicks,
        conversions=0,
        spend_micros=spend,
    )


def test_daily_totals_become_increments() -> None:
    deltas = SpendDeltas()
    first = deltas.update([row("a", 1, 500, 2), row("b", 1, 100)])
    assert first["a"].spend_micros == 500 and first["a"].clicks == 2
    again = deltas.update([row("a", 1, 800, 3), row("b", 1, 100), row("a", 2, 50)])
    assert again["a"].spend_micros == 300 + 50 and again["a"].clicks == 1
    assert again["b"].spend_micros == 0
    # A total revised down charges nothing (and is not refunded).
    assert deltas.update([row("a", 1, 700)])["a"].spend_micros == 0
