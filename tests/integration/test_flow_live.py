"""The live market: the bid loop pushes bids to a real connector over HTTP (the FAKE Google
Ads API of tests/fakes, served by uvicorn) and charges reported spend to its budget leases."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
import ray
import uvicorn

from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig
from actors.guard import GUARD_NAME
from kiki.auth import ensure_tenant
from kiki.clock import VirtualClock
from kiki.db.embedded import free_port
from kiki.flow import store
from kiki.flow.campaigns import (
    AdGroup,
    Campaign,
    CampaignStatus,
    PacingSettings,
    PlatformRef,
    budget_op,
)
from kiki.shield.book import BudgetOp
from tests.fakes.fake_google_ads import FakeGoogleAds
from tests.integration.conftest import RunningPlatform, run

CUSTOMER = "1234567890"


@pytest.fixture
def google() -> Iterator[tuple[FakeGoogleAds, str]]:
    fake = FakeGoogleAds()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


async def live_run(url: str, fake: FakeGoogleAds, base_url: str) -> dict:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    conn = await asyncpg.connect(url)
    tenant = await ensure_tenant(conn, f"live-{start.timestamp():.0f}-{id(fake)}")
    campaign = Campaign(
        tenant_id=str(tenant.id),
        campaign_id="live",
        name="live",
        status=CampaignStatus.RUNNING,
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        timezone="UTC",
        budget_micros=100_000_000,
        currency="USD",
        goal_kind="roas",
        goal_target=Decimal(2),
        platforms=("google_ads",),
        ad_groups=(
            AdGroup(
                ad_group_id="a",
                segment="s",
                value_per_conversion=Decimal(50),
                platform_refs={
                    "google_ads": PlatformRef(
                        account_id=CUSTOMER, campaign_ref="900", ad_group_ref="111"
                    )
                },
            ),
            AdGroup(ad_group_id="unmapped", segment="s", value_per_conversion=Decimal(50)),
        ),
        max_bid_micros=None,
        pacing=PacingSettings(slow_start=0.0),
    )
    await store.insert_campaign(conn, campaign, simulation=True)
    await conn.close()
    fake.seed_ad_group(CUSTOMER, "111", 100_000)
    namespace = f"kiki-live-{tenant.id.hex[:8]}"
    budgets = BudgetClient(url, shards=1, namespace=namespace, clock=VirtualClock(start),
                           detached=False)  # fmt: skip
    (allocated,) = await budgets.execute([budget_op(campaign)])
    allocated.raise_for_error()
    config = BidLoopConfig(
        namespace=namespace,
        detached=False,
        budget_shards=1,
        autorun=False,
        tenant_id=str(tenant.id),
        value_app=None,
        spend_poll_s=0.01,
        # The fill controller starts at the full value bid, whose cents this test checks (the
        # curve controller starts at the floor and steps only on reports).
        controller="fill",
        credentials={
            "google_ads": {
                "base_url": base_url,
                "developer_token": fake.developer_token,
                "access_token": fake.access_token,
            }
        },
    )
    loops = BidLoopClient(url, config, shards=1, clock=VirtualClock(start))
    await loops.ready()
    reports = []
    for k in range(4):
        now = start + timedelta(seconds=2 * k)
        await budgets.advance_clock(now)
        reports += await loops.tick_all(now)
        if k == 1:  # the platform reports delivery: 3.50 spent today on ad group 111
            fake.seed_delivery(CUSTOMER, "111", start.date(), cost_micros=3_500_000, clicks=4)
        await asyncio.sleep(0.5)  # the spend report is fetched between ticks
    rows = await loops.stop()
    (status,) = await budgets.execute([BudgetOp("status", str(tenant.id), "live")])
    loops.kill()
    budgets.kill()
    ray.kill(ray.get_actor(GUARD_NAME, namespace=namespace), no_restart=True)
    return {"reports": reports, "rows": rows, "committed": status.snapshot["committed"]}


def test_live_market_pushes_bids_and_charges_reported_spend(
    platform: RunningPlatform, google: tuple[FakeGoogleAds, str]
) -> None:
    fake, base_url = google
    result = run(live_run(platform.database_url, fake, base_url))
    mutates = [r.json() for r in fake.requests if r.path.endswith("adGroups:mutate")]
    first = mutates[0]["operations"][0]["update"]
    # Prior 5 % x 50.00 / ROAS 2 = 1.25 per click, as Google wants it (micros, a string).
    assert first["cpcBidMicros"] == "1250000"
    # After the report (4 clicks, no conversion) the estimate is 2.5 / 54: 1.157 -> 1.15.
    assert fake.ad_groups[f"customers/{CUSTOMER}/adGroups/111"] == 1_150_000
    assert result["reports"][0].pushed == 1  # the unmapped ad group is not sent anywhere
    assert result["committed"] == 3_500_000  # the reported spend, in SyncShield's ledger
    assert result["rows"] == 2 * 4
