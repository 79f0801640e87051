"""The live market: the bid loop pushes bids to a real connector over HTTP (the FAKE Google
Ads API of tests/fakes, served by uvicorn) and charges reported spend to its budget leases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pytest
import ray
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
from kiki.flow.connectors import PLATFORMS, build_connector
from kiki.flow.connectors.google_ads import GoogleAdsSettings
from kiki.flow.engine import BidEngine
from kiki.flow.market import LiveMarket
from kiki.shield.book import BudgetOp
from kiki.shield.breaker import BreakerConfig
from kiki.shield.guard import PlatformGuard
from launcher.cli import main
from tests.fakes.fake_amazon_ads import FakeAmazonAds
from tests.fakes.fake_google_ads import FakeGoogleAds
from tests.fakes.fake_linkedin import FakeLinkedIn
from tests.fakes.fake_meta import FakeMeta
from tests.fakes.fake_tiktok import FakeTikTok
from tests.integration.conftest import RunningPlatform, platform_spend_mismatches, run
from tests.integration.test_billing_stripe import serve

CUSTOMER = "1234567890"


@contextmanager
def served(platform: str) -> Iterator[Venue]:
    """The fake of `platform`, seeded, on uvicorn (the bid loop's actor calls it over HTTP)."""
    base_url = f"http://127.0.0.1:{free_port()}"
    place = venue(platform, base_url)
    with serve(place.fake.app, int(base_url.rsplit(":", 1)[1])):
        yield place


@pytest.fixture
def google() -> Iterator[Venue]:
    with served("google_ads") as place:
        yield place


@dataclass
class Venue:
    """One platform's FAKE as the live bid loop meets it: the campaign's ad group there (its
    campaign's daily budget 1,000.00 until KIKI pushes one), the credentials that reach it,
    and its auction (`serve(day, want)`: micros delivered, held to the budget in force)."""

    platform: str
    base_url: str
    fake: Any  # the platform's FakeApi
    ref: PlatformRef
    credentials: dict[str, Any]
    serve: Callable[[date, int], int]
    budget: Callable[[], int]  # the campaign's daily budget now, in micros


def venue(platform: str, base_url: str) -> Venue:
    """The fake of `platform`, seeded, answering at `base_url`."""
    here = partial(Venue, platform, base_url)
    if platform == "google_ads":
        google = FakeGoogleAds()
        google.seed_ad_group(CUSTOMER, "111", 100_000, campaign_id="900")
        name = google.seed_campaign(CUSTOMER, "900", "77", 1_000_000_000)
        return here(
            google,
            _ref(CUSTOMER, "900", "111"),
            {"developer_token": google.developer_token, "access_token": google.access_token},
            lambda day, want: google.serve(CUSTOMER, "111", day, want, clicks=3),
            lambda: google.budgets[name],
        )
    if platform == "meta":
        meta = FakeMeta()
        meta.ad_sets["23851"], meta.campaigns["2385"] = 100, 100_000  # cents
        return here(
            meta,
            _ref("1001", "2385", "23851"),
            {"access_token": meta.access_token},
            lambda day, want: meta.serve("1001", "23851", "2385", day, want),
            lambda: meta.campaigns["2385"] * 10_000,
        )
    if platform == "tiktok":
        tiktok = FakeTikTok()
        tiktok.seed_ad_group("7001", "1790001", "1.00")
        tiktok.seed_campaign("7001", "1790", "1000.00")
        return here(
            tiktok,
            _ref("7001", "1790", "1790001"),
            {"access_token": tiktok.access_token},
            lambda day, want: tiktok.serve("7001", "1790001", "1790", day, want),
            lambda: _micros(tiktok.campaigns["1790"]["budget"]),
        )
    if platform == "linkedin":  # a LinkedIn campaign is KIKI's ad group: its bid and budget
        linkedin = FakeLinkedIn()
        linkedin.seed_campaign("508001", "601")
        linkedin.campaigns[("508001", "601")]["dailyBudget"] = Decimal("1000.00")
        return here(
            linkedin,
            _ref("508001", "601", "601"),
            {"access_token": linkedin.access_token},
            lambda day, want: linkedin.serve("508001", "601", day, want),
            lambda: _micros(linkedin.campaigns[("508001", "601")]["dailyBudget"]),
        )
    profile = "3456789012"
    amazon = FakeAmazonAds(polls_until_ready=0, download_base=base_url)
    amazon.ad_groups[(profile, "4001")] = Decimal("0.50")
    amazon.campaigns[(profile, "5001")] = Decimal("1000.00")
    return here(
        amazon,
        _ref(profile, "5001", "4001"),
        {
            "client_id": amazon.client_id,
            "access_token": amazon.access_token,
            "report_poll_interval_s": 0,
        },
        lambda day, want: amazon.serve(profile, 4001, "5001", day, want),
        lambda: _micros(amazon.campaigns[(profile, "5001")]),
    )


def _ref(account: str, campaign: str, ad_group: str) -> PlatformRef:
    return PlatformRef(account_id=account, campaign_ref=campaign, ad_group_ref=ad_group)


def _micros(amount: Decimal) -> int:
    return int(amount * 1_000_000)


def live_campaign(
    tenant: str, start: datetime, places: list[Venue] | None = None, budget: int = 100_000_000
) -> Campaign:
    """One hour, 100.00 by default, on one ad group mapped to each venue's (Google Ads ad
    group 111 of campaign 900 by default), and one unmapped group."""
    refs = {p.platform: p.ref for p in places or []} or {"google_ads": _ref(CUSTOMER, "900", "111")}
    return Campaign(
        tenant_id=tenant,
        campaign_id="live",
        name="live",
        status=CampaignStatus.RUNNING,
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        timezone="UTC",
        budget_micros=budget,
        currency="USD",
        goal_kind="roas",
        goal_target=Decimal(2),
        platforms=tuple(refs),
        ad_groups=(
            AdGroup(
                ad_group_id="a",
                segment="s",
                value_per_conversion=Decimal(50),
                platform_refs=refs,
            ),
            AdGroup(ad_group_id="unmapped", segment="s", value_per_conversion=Decimal(50)),
        ),
        max_bid_micros=None,
        pacing=PacingSettings(slow_start=0.0),
    )


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


async def live_setup(url: str, places: list[Venue], budget: int = 100_000_000) -> LiveSetup:
    """A running campaign on the venues' ad groups, its budget allocated, and the bid loop's
    config for the live market on the fakes."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    conn = await asyncpg.connect(url)
    tenant = await ensure_tenant(conn, f"live-{start.timestamp():.0f}-{id(places)}")
    campaign = live_campaign(str(tenant.id), start, places, budget)
    await store.insert_campaign(conn, campaign, simulation=True)
    await conn.close()
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
        credentials={p.platform: {"base_url": p.base_url, **p.credentials} for p in places},
    )
    return LiveSetup(start, str(tenant.id), budgets, config)


async def live_run(url: str, place: Venue) -> dict:
    fake = place.fake
    live = await live_setup(url, [place])
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
    platform: RunningPlatform, google: Venue
) -> None:
    fake = google.fake
    result = run(live_run(platform.database_url, google))
    mutates = [r.json() for r in fake.requests if r.path.endswith("adGroups:mutate")]
    first = mutates[0]["operations"][0]["update"]
    # Prior 5 % x 50.00 / ROAS 2 = 1.25 per click, as Google wants it (micros, a string).
    assert first["cpcBidMicros"] == "1250000"
    # After the report (4 clicks, no conversion) the estimate is 2.5 / 54: 1.157 -> 1.15.
    assert fake.ad_groups[f"customers/{CUSTOMER}/adGroups/111"] == 1_150_000
    assert result["reports"][0].pushed == 1  # the unmapped ad group is not sent anywhere
    assert result["committed"] == 3_500_000  # the reported spend, in SyncShield's ledger
    assert result["rows"] == 2 * 4


async def capped_run(url: str, places: list[Venue]) -> dict:
    """An auction on every venue that would spend 5.00 on the ad group after every tick, far
    past any lease; the shard is killed (no settling: its open leases are lost) and
    restarted half way."""
    live = await live_setup(url, places, budget=500_000_000)
    start, budgets = live.start, live.budgets
    # Leases of 2 ticks: some are committed (their report marks persisted) before the kill.
    config = live.config.model_copy(update={"lease_ticks": 2})
    loops = BidLoopClient(url, config, shards=1, clock=VirtualClock(start))
    await loops.ready()
    ticks, wanted = 8, 0
    delivered = dict.fromkeys((p.platform for p in places), 0)
    for k in range(ticks + 2):  # two more ticks: one fetches the last report, one takes it
        now = start + timedelta(seconds=2 * k)
        await budgets.advance_clock(now)
        await loops.tick_all(now)
        if k < ticks:
            for place in places:
                delivered[place.platform] += place.serve(start.date(), 5_000_000)
            wanted += 5_000_000
        await asyncio.sleep(0.3)  # the spend reports are fetched between ticks
        if k == ticks // 2:
            ray.kill(loops.actors[0], no_restart=False)  # Ray restarts it; __init__ runs again
    await loops.stop()
    (status,) = await budgets.execute([live.status()])
    live.close(loops)
    conn = await asyncpg.connect(url)
    marks = await conn.fetch(
        """SELECT platform, spend_micros FROM platform_spend_marks
           WHERE tenant_id = $1 AND day = $2""",
        UUID(live.tenant),
        start.date(),
    )
    pushed = await conn.fetch(
        """SELECT platform, max_budget_micros FROM platform_budget_pushes
           WHERE tenant_id = $1""",
        UUID(live.tenant),
    )
    mismatches = await platform_spend_mismatches(conn, live.tenant)
    await conn.close()
    return {
        "wanted": wanted,
        "delivered": delivered,
        "budgets": {p.platform: p.budget() for p in places},
        "writes": {p.platform: writes_of(p) for p in places},
        "snapshot": status.snapshot,
        "marks": {r["platform"]: r["spend_micros"] for r in marks},
        "pushed": {r["platform"]: r["max_budget_micros"] for r in pushed},
        "mismatches": mismatches,
    }


# What a daily budget push and a bid push carry in their bodies, per platform.
WRITES = {
    "google_ads": (b"amountMicros", b"cpcBidMicros"),
    "meta": (b"daily_budget", b"bid_amount"),
    "tiktok": (b'"budget"', b"bid_price"),
    "linkedin": (b"dailyBudget", b"unitCost"),
    "amazon": (b"budgetType", b"defaultBid"),
}


def writes_of(place: Venue) -> list[str]:
    """The budget and bid pushes the venue received, in order."""
    budget, bid = WRITES[place.platform]
    return [
        "budget" if budget in r.body else "bid"
        for r in place.fake.requests
        if budget in r.body or bid in r.body
    ]


def test_pushed_cap_cuts_off_delivery_on_every_platform_and_a_restart_charges_once(
    platform: RunningPlatform,
) -> None:
    """One campaign bidding on all five fakes at once (one bid loop, one run), each holding
    its auction to the budget in force within its own terms' daily overshoot."""
    with ExitStack() as stack:
        places = [stack.enter_context(served(name)) for name in PLATFORMS]
        result = run(capped_run(platform.database_url, places))
    snapshot = result["snapshot"]
    for name in PLATFORMS:
        writes, delivered = result["writes"][name], result["delivered"][name]
        # The daily budget went out before the first bid, and was cut from 1,000.00.
        assert writes[0] == "budget" and "bid" in writes, (name, writes)
        assert 0 < result["budgets"][name] < 1_000_000_000, name
        # The platform delivered only what the pushed budgets allowed: a fraction of its wish.
        assert 0 < delivered < result["wanted"] // 4, (name, delivered)
        # Every micro delivered is committed once: the restart lost the open leases, and the
        # persisted report marks made the new shard charge only what they had not.
        committed = snapshot["platforms"][name]["committed"]
        assert committed == delivered == result["marks"][name], (name, committed, delivered)
        assert result["pushed"][name] >= result["budgets"][name], name
    assert snapshot["over_delivered"] == 0 and not snapshot["blocked"]
    # The restarted shard took each platform's spend so far from SyncShield, as it took the
    # campaign's: the audit trail's platform spend adds up before the kill and after.
    assert not result["mismatches"], result["mismatches"]


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
    google: Venue,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake, base_url = google.fake, google.base_url
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


START = datetime(2026, 12, 1, 10, tzinfo=UTC)


def in_process_capper(fake: FakeGoogleAds) -> tuple[CapPusher, BidEngine]:
    """A CapPusher on the live market of one campaign on the fake Google Ads (in-process)."""
    engine = BidEngine([live_campaign("00000000-0000-0000-0000-000000000001", START)])
    settings = GoogleAdsSettings(base_url="https://googleads.googleapis.com",
                                 developer_token=fake.developer_token,
                                 access_token=fake.access_token)  # fmt: skip
    market = LiveMarket({"google_ads": settings}, 60.0, VirtualClock(START))
    market.connectors["google_ads"] = build_connector(
        "google_ads", fake.client(settings.base_url), settings
    )
    market.rebuild(engine)
    return CapPusher(InProcessGuard(), market, timeout_s=5.0, threshold=0.1), engine


def test_a_pool_whose_cap_is_not_in_force_stops_bidding() -> None:
    """CapPusher against the fake Google Ads: the budget pushed, kept when nothing changed,
    and the pool blocked when the platform fails or the guard refuses."""
    fake = FakeGoogleAds()
    name = fake.seed_campaign(CUSTOMER, "900", "77", 1_000_000_000)
    capper, _ = in_process_capper(fake)
    today = START.date()

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


def test_an_ad_group_that_cannot_be_capped_is_paused_at_the_platform() -> None:
    """Google campaign 900 has no budget object, so no cap can be put in force over ad group
    111: the pool does not bid, and the ad group KIKI bid in is paused so the bids already
    there stop spending; once the campaign has a budget the cap goes out and the ad group
    serves again. A pause the guard refuses is said so in the decision log, and retried."""
    fake = FakeGoogleAds()
    group = fake.seed_ad_group(CUSTOMER, "111", 1_250_000, campaign_id="900")
    capper, engine = in_process_capper(fake)
    units, today = engine.unit_pool.tolist(), START.date()
    (unit,) = [u for u, ref in enumerate(capper.market.unit_refs) if ref]

    async def tick(lease: int = 3_000_000) -> dict[int, str]:
        blocked = await capper.push(np.array([lease]), today, None)
        return await capper.hold(units, blocked, None)

    async def scenario() -> None:
        assert await tick() == {unit: "cap_not_pushed: ad group paused"}
        assert fake.ad_group_status[group] == "PAUSED"
        assert fake.serve(CUSTOMER, "111", today, 5_000_000) == 0  # the old bid spends nothing
        sent = len(fake.requests)
        assert await tick() == {unit: "cap_not_pushed: ad group paused"}  # not paused twice
        assert [r.path for r in fake.requests[sent:]][-1].endswith("googleAds:searchStream")
        budget = fake.seed_campaign(CUSTOMER, "900", "77", 1_000_000_000)
        assert await tick() == {}  # the cap is in force: the ad group serves again
        assert (fake.budgets[budget], fake.ad_group_status[group]) == (1_500_000, "ENABLED")
        assert fake.serve(CUSTOMER, "111", today, 5_000_000) == 3_000_000  # 2 x the budget
        # The platform fails the next (cut) budget push: its breaker opens, so the pause the
        # pool now needs is refused by the guard, and the decision log says so.
        fake.fail_next("unavailable")
        assert await tick(1_000_000) == {unit: "cap_not_pushed: not paused (breaker_open)"}
        assert fake.ad_group_status[group] == "ENABLED" and not capper.paused

    asyncio.run(scenario())
