"""The live market: the bid loop pushes bids to a real connector over HTTP (the FAKE Google
Ads API of tests/fakes, served by uvicorn) and charges reported spend to its budget leases."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pytest
import ray
import uvicorn
from click.testing import CliRunner

from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig
from actors.flow.pushes import CapPusher
from actors.guard import GUARD_NAME
from kiki.auth import ensure_tenant
from kiki.clock import VirtualClock, WallClock
from kiki.db import migrate
from kiki.db.embedded import free_port
from kiki.db.pool import connect
from kiki.flow import store
from kiki.flow.campaigns import (
    AdGroup,
    Campaign,
    CampaignStatus,
    PacingSettings,
    PlatformRef,
    budget_op,
)
from kiki.flow.connectors import build_connector
from kiki.flow.connectors.google_ads import GoogleAdsSettings
from kiki.flow.engine import BidEngine
from kiki.flow.market import LiveMarket
from kiki.shield.book import BudgetOp
from kiki.shield.breaker import BreakerConfig
from kiki.shield.guard import PlatformGuard
from launcher.cli import main
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


def live_campaign(tenant: str, start: datetime) -> Campaign:
    """One hour, 100.00, on Google Ads ad group 111 of campaign 900 (and one unmapped group)."""
    campaign = Campaign(
        tenant_id=tenant,
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
    return campaign


@dataclass
class LiveSetup:
    start: datetime
    tenant: str
    budgets: BudgetClient
    config: BidLoopConfig

    def status(self) -> BudgetOp:
        return BudgetOp("status", self.tenant, "live")

    def close(self, loops: BidLoopClient) -> None:
        loops.kill()
        self.budgets.kill()
        ray.kill(ray.get_actor(GUARD_NAME, namespace=self.config.namespace), no_restart=True)


async def live_setup(url: str, fake: FakeGoogleAds, base_url: str) -> LiveSetup:
    """A running campaign on Google Ads ad group 111 (campaign 900, whose daily budget is
    1,000.00 until KIKI pushes one), its budget allocated, and the bid loop's config for the
    live market on the fake."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    conn = await asyncpg.connect(url)
    tenant = await ensure_tenant(conn, f"live-{start.timestamp():.0f}-{id(fake)}")
    campaign = live_campaign(str(tenant.id), start)
    await store.insert_campaign(conn, campaign, simulation=True)
    await conn.close()
    fake.seed_ad_group(CUSTOMER, "111", 100_000, campaign_id="900")
    fake.seed_campaign(CUSTOMER, "900", "77", 1_000_000_000)  # 1,000.00 a day
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
    return LiveSetup(start, str(tenant.id), budgets, config)


async def live_run(url: str, fake: FakeGoogleAds, base_url: str) -> dict:
    live = await live_setup(url, fake, base_url)
    start, budgets = live.start, live.budgets
    loops = BidLoopClient(url, live.config, shards=1, clock=VirtualClock(start))
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
    (status,) = await budgets.execute([live.status()])
    live.close(loops)
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


async def capped_run(url: str, fake: FakeGoogleAds, base_url: str) -> dict:
    """An auction that would spend 5.00 on ad group 111 after every tick, far past any lease;
    the shard is killed (no settling: its open lease is lost) and restarted half way."""
    live = await live_setup(url, fake, base_url)
    start, budgets = live.start, live.budgets
    budget_name = fake.campaign_budgets[(CUSTOMER, "900")]
    # Leases of 2 ticks: some are committed (their report marks persisted) before the kill.
    config = live.config.model_copy(update={"lease_ticks": 2})
    loops = BidLoopClient(url, config, shards=1, clock=VirtualClock(start))
    await loops.ready()
    ticks, wanted = 8, 0
    for k in range(ticks + 2):  # two more ticks: one fetches the last report, one takes it
        now = start + timedelta(seconds=2 * k)
        await budgets.advance_clock(now)
        await loops.tick_all(now)
        if k < ticks:
            fake.serve(CUSTOMER, "111", start.date(), 5_000_000, clicks=3)
            wanted += 5_000_000
        await asyncio.sleep(0.3)  # the spend report is fetched between ticks
        if k == ticks // 2:
            ray.kill(loops.actors[0], no_restart=False)  # Ray restarts it; __init__ runs again
    await loops.stop()
    (status,) = await budgets.execute([live.status()])
    live.close(loops)
    conn = await asyncpg.connect(url)
    marks = await conn.fetchval(
        "SELECT spend_micros FROM platform_spend_marks WHERE tenant_id = $1 AND day = $2",
        UUID(live.tenant),
        start.date(),
    )
    pushed = await conn.fetchrow(
        "SELECT * FROM platform_budget_pushes WHERE tenant_id = $1", UUID(live.tenant)
    )
    await conn.close()
    paths = [r.path.rsplit("/", 1)[-1] for r in fake.requests if r.path.endswith(":mutate")]
    return {
        "wanted": wanted,
        "delivered": sum(r["cost_micros"] for r in fake.delivery),
        "budget": fake.budgets[budget_name],
        "paths": paths,
        "snapshot": status.snapshot,
        "marks": marks,
        "pushed": pushed,
    }


def test_pushed_cap_cuts_off_delivery_and_a_restart_charges_the_day_once(
    platform: RunningPlatform, google: tuple[FakeGoogleAds, str]
) -> None:
    fake, base_url = google
    result = run(capped_run(platform.database_url, fake, base_url))
    # The daily budget went out before the first bid, and was cut from 1,000.00 to the lease.
    assert result["paths"][0] == "campaignBudgets:mutate"
    assert result["paths"].index("adGroups:mutate") > 0
    assert 0 < result["budget"] < 1_000_000_000
    # Google delivered only what the pushed budgets allowed: a fraction of what it wanted.
    assert 0 < result["delivered"] < result["wanted"] // 4
    snapshot = result["snapshot"]
    # Every micro Google delivered is committed once: the restart lost the open lease, and
    # the persisted report marks made the restarted shard charge only what they had not.
    assert snapshot["committed"] == result["delivered"] == result["marks"]
    assert snapshot["over_delivered"] == 0 and not snapshot["blocked"]
    assert result["pushed"]["max_budget_micros"] >= result["budget"]


async def seed_reconcile(url: str, day: date) -> str:
    """A live campaign on Google ad group 111 (campaign 900) that KIKI charged 9.00 on `day`,
    with a 5.00 daily budget pushed."""
    conn = await connect(url)
    try:
        await migrate.migrate(conn, migrate.discover())
        tenant = str((await ensure_tenant(conn, "recon")).id)
        start = datetime.combine(day, datetime.min.time(), UTC)
        ref = PlatformRef(account_id=CUSTOMER, campaign_ref="900", ad_group_ref="111")
        campaign = Campaign(
            tenant_id=tenant, campaign_id="live", name="live", status=CampaignStatus.STOPPED,
            starts_at=start, ends_at=start + timedelta(days=1), timezone="UTC",
            budget_micros=100_000_000, currency="USD", goal_kind="roas", goal_target=Decimal(2),
            platforms=("google_ads",), max_bid_micros=None, pacing=PacingSettings(),
            ad_groups=(AdGroup(ad_group_id="a", segment="s", value_per_conversion=Decimal(50),
                               platform_refs={"google_ads": ref}),),
        )  # fmt: skip
        await store.insert_campaign(conn, campaign)
        await store.record_budget_pushes(
            conn, [(tenant, "live", "google_ads", CUSTOMER, "900", day, "USD", 5_000_000)]
        )
        await conn.execute(
            """INSERT INTO platform_spend_marks (tenant_id, campaign_id, platform, ad_group_ref,
                   day, spend_micros, clicks, conversions, value_micros)
               VALUES ($1, 'live', 'google_ads', '111', $2, 9000000, 0, 0, 0)""",
            UUID(tenant),
            day,
        )
        return tenant
    finally:
        await conn.close()


def test_reconcile_lists_differences_and_claims_credit_where_the_platform_gives_it(
    fresh_db: str,
    google: tuple[FakeGoogleAds, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake, base_url = google
    day = date(2026, 11, 30)
    tenant = asyncio.run(seed_reconcile(fresh_db, day))
    # Google reports 12.00: 3.00 KIKI never charged, 2.00 beyond 2 x the 5.00 budget pushed.
    fake.seed_delivery(CUSTOMER, "111", day, cost_micros=12_000_000)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"google_ads": {
        "base_url": base_url, "developer_token": fake.developer_token,
        "access_token": fake.access_token}}))  # fmt: skip
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    runner = CliRunner()
    args = ["flow", "reconcile", "--date", day.isoformat(), "--credentials", str(credentials)]
    answer = runner.invoke(main, [*args, "--json"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.output)
    [line] = result["lines"]
    assert (line["tenant_id"], line["committed_micros"], line["reported_micros"]) == (
        tenant, 9_000_000, 12_000_000)  # fmt: skip
    assert line["status"] == "platform_higher" and line["over_limit_micros"] == 2_000_000
    [claim] = result["claims"]
    assert claim["amount_micros"] == 2_000_000 and claim["campaign_ref"] == "900"
    text = runner.invoke(main, args)
    assert text.exit_code == 0 and "claim: google_ads" in text.output
    # Bad input: a message and a non-zero exit, never a trace.
    future = runner.invoke(main, ["flow", "reconcile", "--date", "2999-01-01"])
    assert future.exit_code == 2 and "in the future" in future.output
    missing = runner.invoke(main, [*args[:4], "--credentials", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


class _Remote:
    """The shape of a Ray actor method, for the guard's domain object in-process."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method

    def remote(self, *args: Any) -> Awaitable[Any]:
        async def call() -> Any:
            return self.method(*args)

        return call()


class InProcessGuard:
    """What the guard actor answers (actors/guard.py), without Ray: a PlatformGuard."""

    def __init__(self) -> None:
        breaker = BreakerConfig(minimum_number_of_calls=1, sliding_window_size=1)
        self.guard = PlatformGuard(WallClock(), breaker, None)
        self.admit_many = _Remote(lambda calls: [self.guard.admit(p, n) for p, n in calls])
        self.record_many = _Remote(
            lambda outcomes: {p: self.guard.record(p, ok) for p, ok in outcomes}
        )


def test_a_pool_whose_cap_is_not_in_force_stops_bidding() -> None:
    """CapPusher against the fake Google Ads: the budget pushed, kept when nothing changed,
    and the pool blocked when the platform fails or the guard refuses."""
    fake = FakeGoogleAds()
    name = fake.seed_campaign(CUSTOMER, "900", "77", 1_000_000_000)
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    engine = BidEngine([live_campaign("00000000-0000-0000-0000-000000000001", start)])
    settings = GoogleAdsSettings(base_url="https://googleads.googleapis.com",
                                 developer_token=fake.developer_token,
                                 access_token=fake.access_token)  # fmt: skip
    market = LiveMarket({"google_ads": settings}, 60.0, VirtualClock(start))
    market.connectors["google_ads"] = build_connector(
        "google_ads", fake.client(settings.base_url), settings
    )
    market.rebuild(engine)
    guard = InProcessGuard()
    capper = CapPusher(guard, market, timeout_s=5.0, threshold=0.1)
    today = start.date()

    async def scenario() -> list[set[int]]:
        blocked = [await capper.push(np.array([3_000_000]), today, None)]
        assert fake.budgets[name] == 1_500_000  # 3.00 allowed, Google delivers up to 2x
        sent = len(fake.requests)
        blocked.append(await capper.push(np.array([3_000_000]), today, None))
        assert len(fake.requests) == sent  # unchanged: nothing pushed
        fake.fail_next("unavailable")
        blocked.append(await capper.push(np.array([1_000_000]), today, None))
        assert fake.budgets[name] == 1_500_000
        # The failure opened the breaker: the guard refuses, nothing is sent.
        sent = len(fake.requests)
        blocked.append(await capper.push(np.array([1_000_000]), today, None))
        assert len(fake.requests) == sent
        return blocked

    assert asyncio.run(scenario()) == [set(), set(), {0}, {0}]
