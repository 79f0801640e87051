"""The five ad-platform connectors against fakes of the vendors' APIs (tests/fakes/): request
shapes, exact money on the wire and back, per-item rejections, and platform failures mapped to
Unavailable / RateLimited for the circuit breaker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from kiki.clock import VirtualClock
from kiki.errors import ConfigError, InvalidInput, RateLimited, Unavailable
from kiki.flow.connectors import (
    PLATFORMS,
    AmazonAdsSettings,
    GoogleAdsSettings,
    LinkedInSettings,
    MetaSettings,
    PlatformConnector,
    PlatformSettings,
    TikTokSettings,
    build_connector,
)
from kiki.flow.connectors.amazon import AmazonAdsOAuth
from kiki.flow.connectors.base import (
    BidChange,
    BudgetChange,
    ChangeResult,
    SpendRow,
    StatusChange,
)
from kiki.flow.connectors.google_ads import GoogleAdsOAuth
from kiki.flow.connectors.linkedin import LinkedInOAuth
from kiki.flow.exchange import ExchangeConfig, SandboxConnector, SandboxExchange, Units
from kiki.http import dumps
from tests.fakes.ad_platforms import FakeApi
from tests.fakes.fake_amazon_ads import FakeAmazonAds
from tests.fakes.fake_google_ads import FakeGoogleAds
from tests.fakes.fake_linkedin import FakeLinkedIn
from tests.fakes.fake_meta import FakeMeta
from tests.fakes.fake_tiktok import FakeTikTok

T = TypeVar("T")
START = datetime(2026, 3, 1, tzinfo=UTC)
BID_MICROS = 1_250_000  # 1.25 in the account currency
BUDGET_MICROS = 75_500_000  # 75.50


@dataclass
class Setup:
    """One platform's connector wired to its fake, with one seeded ad group and campaign."""

    platform: str
    fake: Any
    settings: PlatformSettings
    bid: BidChange
    budget_campaign: str
    stored_bid: Callable[[], Any]  # the fake's state for bid.ad_group_ref
    expected_bid: Any
    stored_budget: Callable[[], Any]
    expected_budget: Any
    throttle_wait_s: float  # what a throttle ordered with retry_after_s=120 should yield
    clock: VirtualClock | None = None

    def run(
        self,
        action: Callable[[PlatformConnector], Awaitable[T]],
        transport: httpx.AsyncBaseTransport | None = None,
        settings: PlatformSettings | None = None,
    ) -> T:
        async def scenario() -> T:
            client = (
                httpx.AsyncClient(transport=transport)
                if transport
                else self.fake.client(self.settings.base_url)
            )
            async with client:
                connector = build_connector(
                    self.platform, client, settings or self.settings, self.clock
                )
                return await action(connector)

        return asyncio.run(scenario())

    def budget(self, micros: int = BUDGET_MICROS) -> BudgetChange:
        return BudgetChange(
            account_id=self.bid.account_id,
            campaign_ref=self.budget_campaign,
            daily_budget_micros=micros,
            currency="USD",
        )


def bid(account: str, ad_group: str, micros: int = BID_MICROS, currency: str = "USD") -> BidChange:
    return BidChange(
        account_id=account,
        campaign_ref="1",
        ad_group_ref=ad_group,
        bid_micros=micros,
        currency=currency,
    )


def google() -> Setup:
    fake = FakeGoogleAds()
    ad_group = fake.seed_ad_group("1234567890", "111", 500_000)
    budget = fake.seed_campaign("1234567890", "77", "9", 10_000_000)
    settings = GoogleAdsSettings(
        base_url="https://googleads.test",
        developer_token=SecretStr("dev-token-fake"),
        access_token=SecretStr("ya29.fake"),
        login_customer_id="9876543210",
    )
    return Setup(
        "google_ads",
        fake,
        settings,
        bid("123-456-7890", "111"),
        "77",
        lambda: fake.ad_groups[ad_group],
        BID_MICROS,
        lambda: fake.budgets[budget],
        BUDGET_MICROS,
        120.0,
    )


def meta() -> Setup:
    fake = FakeMeta()
    fake.ad_sets["23851"] = 100
    fake.campaigns["2385"] = 1000
    settings = MetaSettings(base_url="https://graph.test", access_token=SecretStr("EAAB-fake"))
    return Setup(
        "meta",
        fake,
        settings,
        bid("act_1001", "23851"),
        "2385",
        lambda: fake.ad_sets["23851"],
        125,  # cents
        lambda: fake.campaigns["2385"],
        7550,
        120.0,  # estimated_time_to_regain_access: 2 minutes
    )


def tiktok() -> Setup:
    fake = FakeTikTok()
    fake.seed_ad_group("7001", "1790001", "1.00")
    fake.seed_campaign("7001", "1790", "50.00")
    settings = TikTokSettings(
        base_url="https://tiktok.test", access_token=SecretStr("tt-fake"), default_retry_after_s=5
    )
    return Setup(
        "tiktok",
        fake,
        settings,
        bid("7001", "1790001"),
        "1790",
        lambda: fake.ad_groups["1790001"]["bid_price"],
        Decimal("1.25"),
        lambda: fake.campaigns["1790"]["budget"],
        Decimal("75.50"),
        5.0,  # TikTok names no wait: the configured default
    )


def linkedin() -> Setup:
    fake = FakeLinkedIn()
    fake.seed_campaign("508001", "601")
    settings = LinkedInSettings(
        base_url="https://linkedin.test", access_token=SecretStr("li-fake"), default_retry_after_s=9
    )
    return Setup(
        "linkedin",
        fake,
        settings,
        bid("508001", "601"),
        "601",
        lambda: fake.campaigns[("508001", "601")]["unitCost"],
        Decimal("1.25"),
        lambda: fake.campaigns[("508001", "601")]["dailyBudget"],
        Decimal("75.50"),
        9.0,
    )


def amazon() -> Setup:
    fake = FakeAmazonAds(polls_until_ready=2)
    fake.ad_groups[("3456789012", "4001")] = Decimal("0.50")
    fake.campaigns[("3456789012", "5001")] = Decimal("10.00")
    settings = AmazonAdsSettings(
        base_url="https://amazon-ads.test",
        client_id="amzn1.application-oa2-client.fake",
        access_token=SecretStr("Atza|fake"),
        report_poll_interval_s=30,
        report_max_polls=3,
    )
    return Setup(
        "amazon",
        fake,
        settings,
        bid("3456789012", "4001"),
        "5001",
        lambda: fake.ad_groups[("3456789012", "4001")],
        Decimal("1.25"),
        lambda: fake.campaigns[("3456789012", "5001")],
        Decimal("75.50"),
        120.0,  # Retry-After
        clock=VirtualClock(START),
    )


SETUPS = {
    "google_ads": google,
    "meta": meta,
    "tiktok": tiktok,
    "linkedin": linkedin,
    "amazon": amazon,
}


def test_every_platform_has_a_connector() -> None:
    assert set(SETUPS) == set(PLATFORMS)


# --- what every connector does the same way -------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_bid_round_trip_changes_the_platform_state(platform: str) -> None:
    setup = SETUPS[platform]()
    results = setup.run(lambda c: c.push_bids([setup.bid]))
    assert results == [ChangeResult(ok=True, ref=setup.bid.ad_group_ref)]
    assert setup.stored_bid() == setup.expected_bid


@pytest.mark.parametrize("platform", PLATFORMS)
def test_budget_round_trip_changes_the_platform_state(platform: str) -> None:
    setup = SETUPS[platform]()
    result = setup.run(lambda c: c.push_budget(setup.budget()))
    assert result == ChangeResult(ok=True, ref=setup.budget_campaign)
    assert setup.stored_budget() == setup.expected_budget


# Each fake's serving state of the seeded ad group, and its words for paused and serving.
STATUS: dict[str, tuple[Callable[[Any], Any], str, str]] = {
    "google_ads": (
        lambda f: f.ad_group_status.get("customers/1234567890/adGroups/111"),
        "PAUSED",
        "ENABLED",
    ),
    "meta": (lambda f: f.statuses.get("23851"), "PAUSED", "ACTIVE"),
    "tiktok": (lambda f: f.ad_groups["1790001"].get("status"), "DISABLE", "ENABLE"),
    "linkedin": (lambda f: f.campaigns[("508001", "601")]["status"], "PAUSED", "ACTIVE"),
    "amazon": (lambda f: f.states.get(("3456789012", "4001")), "PAUSED", "ENABLED"),
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_ad_group_is_paused_and_serves_again(platform: str) -> None:
    setup = SETUPS[platform]()
    state, paused, serving = STATUS[platform]
    pause = StatusChange(**setup.bid.model_dump(include={"account_id", "campaign_ref",
                                                         "ad_group_ref"}), paused=True)  # fmt: skip
    unknown = pause.model_copy(update={"ad_group_ref": "999"})
    results = setup.run(lambda c: c.push_status([pause, unknown]))
    assert [r.ok for r in results] == [True, False] and results[1].error
    assert state(setup.fake) == paused
    resume = pause.model_copy(update={"paused": False})
    assert setup.run(lambda c: c.push_status([resume])) == [
        ChangeResult(ok=True, ref=pause.ad_group_ref)
    ]
    assert state(setup.fake) == serving


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_rejected_item_fails_alone(platform: str) -> None:
    setup = SETUPS[platform]()
    unknown = setup.bid.model_copy(update={"ad_group_ref": "999"})
    results = setup.run(lambda c: c.push_bids([setup.bid, unknown]))
    assert [r.ok for r in results] == [True, False]
    assert results[1].ref == "999" and results[1].error
    assert setup.stored_bid() == setup.expected_bid


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_outage_is_unavailable(platform: str) -> None:
    setup = SETUPS[platform]()
    setup.fake.fail_next("unavailable")
    with pytest.raises(Unavailable):
        setup.run(lambda c: c.push_bids([setup.bid]))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_throttle_is_rate_limited_with_the_platforms_wait(platform: str) -> None:
    setup = SETUPS[platform]()
    setup.fake.fail_next("throttle", retry_after_s=120)
    with pytest.raises(RateLimited) as caught:
        setup.run(lambda c: c.push_budget(setup.budget()))
    assert caught.value.retry_after_s == setup.throttle_wait_s


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_transport_failures_are_unavailable(platform: str, error: httpx.HTTPError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    setup = SETUPS[platform]()
    with pytest.raises(Unavailable, match=platform):
        setup.run(lambda c: c.push_bids([setup.bid]), transport=httpx.MockTransport(fail))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_refused_credentials_are_unavailable_and_name_the_setting(platform: str) -> None:
    setup = SETUPS[platform]()
    wrong = setup.settings.model_copy(update={"access_token": SecretStr("expired")})
    with pytest.raises(Unavailable, match="access_token"):
        setup.run(lambda c: c.push_bids([setup.bid]), settings=wrong)
    assert setup.stored_bid() != setup.expected_bid


# --- OAuth refresh (the platforms that issue refresh tokens) --------------------------------

OAUTH = {
    "google_ads": (GoogleAdsOAuth, "/token"),
    "linkedin": (LinkedInOAuth, "/oauth/v2/accessToken"),
    "amazon": (AmazonAdsOAuth, "/auth/o2/token"),
}


def with_refresh(
    platform: str, *, expires_in: int = 3600, rotate: bool = False, refresh_token: str = "rt-1"
) -> tuple[Setup, PlatformSettings]:
    """The platform's setup whose access token has expired, with a refresh token the fake's
    token endpoint honours (or not, when `refresh_token` differs)."""
    setup = SETUPS[platform]()
    oauth_type, path = OAUTH[platform]
    setup.fake.serve_oauth(
        path, client_id="client-1", client_secret="s3cret", refresh_token="rt-1",
        expires_in=expires_in, rotate=rotate,
    )  # fmt: skip
    oauth = oauth_type(
        client_id="client-1",
        client_secret=SecretStr("s3cret"),
        refresh_token=SecretStr(refresh_token),
    )
    update = {"access_token": SecretStr("expired"), "oauth": oauth}
    return setup, setup.settings.model_copy(update=update)


def token_calls(setup: Setup) -> int:
    return sum(r.path == OAUTH[setup.platform][1] for r in setup.fake.requests)


@pytest.mark.parametrize("platform", list(OAUTH))
def test_a_refused_token_is_refreshed_once_and_the_call_sent_again(platform: str) -> None:
    setup, settings = with_refresh(platform)
    [result] = setup.run(lambda c: c.push_bids([setup.bid]), settings=settings)
    assert result.ok and setup.stored_bid() == setup.expected_bid
    assert setup.fake.tokens_issued == 1
    grant = next(r for r in setup.fake.requests if r.path == OAUTH[platform][1]).form()
    assert grant == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "client-1",
        "client_secret": "s3cret",
    }
    sent = [r for r in setup.fake.requests if r.path != OAUTH[platform][1]]
    assert sent[0].headers["authorization"] == "Bearer expired"
    assert sent[-1].headers["authorization"] == f"Bearer {setup.fake.access_token}"


@pytest.mark.parametrize("platform", list(OAUTH))
def test_concurrent_calls_share_one_refresh(platform: str) -> None:
    setup, settings = with_refresh(platform)

    async def five(connector: PlatformConnector) -> list[list[ChangeResult]]:
        return await asyncio.gather(*(connector.push_bids([setup.bid]) for _ in range(5)))

    results = setup.run(five, settings=settings)
    assert all(r.ok for [r] in results)
    assert setup.fake.tokens_issued == 1


def test_a_token_near_its_expiry_is_renewed_before_the_call() -> None:
    # Expires in 60 s, renewed 120 s ahead: every call after the first refresh renews first.
    setup, settings = with_refresh("google_ads", expires_in=60, rotate=True)

    async def twice(connector: PlatformConnector) -> None:
        await connector.push_bids([setup.bid])
        before = len(setup.fake.requests)
        await connector.push_bids([setup.bid])
        # The second call: one grant (with the rotated refresh token), then one API call.
        assert next(r.path for r in setup.fake.requests[before:]) == "/token"
        assert len(setup.fake.requests) - before == 2

    setup.run(twice, settings=settings)
    assert setup.fake.tokens_issued == 2


@pytest.mark.parametrize("platform", list(OAUTH))
def test_a_revoked_refresh_token_is_unavailable_and_says_what_to_do(platform: str) -> None:
    setup, settings = with_refresh(platform, refresh_token="revoked")
    refused = r"refused to refresh .*HTTP 400: Token has been revoked.*oauth\.refresh_token"
    with pytest.raises(Unavailable, match=refused):
        setup.run(lambda c: c.push_bids([setup.bid]), settings=settings)
    assert token_calls(setup) == 1 and setup.stored_bid() != setup.expected_bid


def test_oauth_settings_need_a_client_and_an_http_token_url() -> None:
    with pytest.raises(ValidationError, match="token_url"):
        GoogleAdsOAuth(
            token_url="ftp://x", client_id="c", client_secret=SecretStr("s"),
            refresh_token=SecretStr("r"),
        )  # fmt: skip
    with pytest.raises(ValidationError, match="client_id"):
        LinkedInOAuth(client_secret=SecretStr("s"), refresh_token=SecretStr("r"))  # type: ignore[call-arg]


@pytest.mark.parametrize("platform", [p for p in PLATFORMS if p != "meta"])
def test_an_amount_finer_than_a_cent_is_refused_before_any_call(platform: str) -> None:
    setup = SETUPS[platform]()
    inexact = setup.bid.model_copy(update={"bid_micros": 1_234_567})
    with pytest.raises(InvalidInput, match="finer"):
        setup.run(lambda c: c.push_bids([inexact]))
    with pytest.raises(InvalidInput, match="finer"):
        setup.run(lambda c: c.push_budget(setup.budget(micros=75_505_000)))
    assert setup.fake.requests == []


def test_a_float_amount_never_reaches_a_platform() -> None:
    with pytest.raises(ValidationError):
        bid("1", "2", micros=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        dumps({"bid_price": 1.25})


def test_build_connector_refuses_unknown_platforms_and_mismatched_settings() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ConfigError, match="unknown ad platform"):
        build_connector("myspace", client, google().settings)
    with pytest.raises(ConfigError, match="MetaSettings"):
        build_connector("meta", client, google().settings)


def last(fake: FakeApi) -> Any:
    return fake.requests[-1]


def sent_bid(setup: Setup) -> Any:
    """Push the setup's one bid; the request the fake received."""
    setup.run(lambda c: c.push_bids([setup.bid]))
    return last(setup.fake)


# --- Google Ads -------------------------------------------------------------------------------


def test_google_bid_request_shape() -> None:
    request = sent_bid(google())
    assert (request.method, request.path) == ("POST", "/v20/customers/1234567890/adGroups:mutate")
    assert (
        request.headers.items()
        >= {
            "authorization": "Bearer ya29.fake",
            "developer-token": "dev-token-fake",
            "login-customer-id": "9876543210",
        }.items()
    )
    assert request.json() == {
        "operations": [
            {
                "update": {
                    "resourceName": "customers/1234567890/adGroups/111",
                    "cpcBidMicros": "1250000",
                },
                "updateMask": "cpc_bid_micros",
            }
        ],
        "partialFailure": True,
    }


def test_google_budget_is_set_on_the_campaigns_budget_resource() -> None:
    setup = google()
    setup.run(lambda c: c.push_budget(setup.budget()))
    search, mutate = setup.fake.requests
    assert search.path == "/v20/customers/1234567890/googleAds:searchStream"
    assert search.json() == {
        "query": "SELECT campaign.campaign_budget FROM campaign WHERE campaign.id = 77"
    }
    assert mutate.path == "/v20/customers/1234567890/campaignBudgets:mutate"
    assert mutate.json()["operations"] == [
        {
            "update": {
                "resourceName": "customers/1234567890/campaignBudgets/9",
                "amountMicros": "75500000",
            },
            "updateMask": "amount_micros",
        }
    ]


def test_google_spend_report_streams_exact_micros() -> None:
    setup = google()
    fake = setup.fake
    fake.seed_delivery(
        "1234567890",
        "111",
        date(2026, 3, 1),
        impressions=1000,
        clicks=31,
        cost_micros=12_345_678,
        conversions=Decimal("2.5"),
        conversions_value=Decimal("99.99"),
    )
    fake.seed_delivery("1234567890", "111", date(2026, 3, 2), impressions=10)
    fake.seed_delivery("1234567890", "112", date(2026, 3, 3), impressions=5, cost_micros=10)
    fake.seed_delivery("1234567890", "112", date(2026, 3, 9), impressions=5)  # out of range
    rows = setup.run(lambda c: c.spend_report("1234567890", date(2026, 3, 1), date(2026, 3, 3)))
    # Three rows in two stream batches; zero metrics are left out of proto3 JSON.
    assert [(r.ad_group_ref, r.day.day, r.impressions, r.spend_micros) for r in rows[1:]] == [
        ("111", 2, 10, 0),
        ("112", 3, 5, 10),
    ]
    assert rows[:1] == [
        SpendRow(
            ad_group_ref="111",
            day=date(2026, 3, 1),
            impressions=1000,
            clicks=31,
            conversions=2,
            spend_micros=12_345_678,
            conversion_value_micros=99_990_000,
        ),
    ]
    assert "BETWEEN '2026-03-01' AND '2026-03-03'" in last(fake).json()["query"]


# --- Meta -------------------------------------------------------------------------------------


def test_meta_single_bid_posts_cents_to_the_ad_set() -> None:
    request = sent_bid(meta())
    assert (request.method, request.path) == ("POST", "/v21.0/23851")
    assert request.form() == {"bid_amount": "125", "access_token": "EAAB-fake"}


def test_meta_batches_fifty_updates_a_call() -> None:
    setup = meta()
    changes = [bid("act_1001", "23851", micros=1_000_000 + i * 10_000) for i in range(51)]
    results = setup.run(lambda c: c.push_bids(changes))
    assert all(r.ok for r in results) and len(results) == 51
    batch, single = setup.fake.requests
    assert (batch.path, single.path) == ("/v21.0/", "/v21.0/23851")
    form = batch.form()
    assert form["include_headers"] == "false" and form["access_token"] == "EAAB-fake"
    items = json.loads(form["batch"])
    assert len(items) == 50
    assert items[1] == {"method": "POST", "relative_url": "v21.0/23851", "body": "bid_amount=101"}
    assert setup.fake.ad_sets["23851"] == 150  # the 51st change, sent on its own


def test_meta_rounds_down_to_the_currency_offset() -> None:
    setup = meta()
    setup.run(lambda c: c.push_bids([setup.bid.model_copy(update={"bid_micros": 1_239_999})]))
    assert setup.fake.ad_sets["23851"] == 123  # 1.239999 USD -> 123 cents, never 124
    yen = bid("act_1001", "23851", micros=150_999_999, currency="JPY")
    setup.run(lambda c: c.push_bids([yen]))
    assert setup.fake.ad_sets["23851"] == 150  # offset 1: whole yen


def test_meta_insights_follow_the_cursor_and_count_purchases() -> None:
    setup = meta()
    purchase = "offsite_conversion.fb_pixel_purchase"
    for day, spend in [(1, "12.34"), (2, "0.01"), (3, "1000.00")]:
        setup.fake.seed_insight(
            "1001",
            "23851",
            date(2026, 3, day),
            spend=spend,
            impressions="1500",
            clicks="42",
            actions=[
                {"action_type": "link_click", "value": "42"},
                {"action_type": purchase, "value": "3"},
            ],
            action_values=[{"action_type": purchase, "value": "45.60"}],
        )
    settings = setup.settings.model_copy(update={"page_size": 2})
    rows = setup.run(
        lambda c: c.spend_report("act_1001", date(2026, 3, 1), date(2026, 3, 3)),
        settings=settings,
    )
    assert [r.spend_micros for r in rows] == [12_340_000, 10_000, 1_000_000_000]
    assert rows[0] == SpendRow(
        ad_group_ref="23851",
        day=date(2026, 3, 1),
        impressions=1500,
        clicks=42,
        conversions=3,
        spend_micros=12_340_000,
        conversion_value_micros=45_600_000,
    )
    first, second = setup.fake.requests
    params = dict(parse_qsl(first.query))
    assert first.path == "/v21.0/act_1001/insights"
    assert params["level"] == "adset" and params["time_increment"] == "1"
    assert json.loads(params["time_range"]) == {"since": "2026-03-01", "until": "2026-03-03"}
    assert params["fields"] == "adset_id,spend,impressions,clicks,actions,action_values"
    assert "after" in dict(parse_qsl(second.query))


# --- TikTok -----------------------------------------------------------------------------------


def test_tiktok_bid_request_shape() -> None:
    request = sent_bid(tiktok())
    assert (request.method, request.path) == ("POST", "/open_api/v1.3/adgroup/update/")
    assert (
        request.headers.items()
        >= {
            "access-token": "tt-fake",
            "content-type": "application/json",
        }.items()
    )
    assert request.body == b'{"advertiser_id":"7001","adgroup_id":"1790001","bid_price":1.25}'


def test_tiktok_refuses_a_bid_on_an_ad_group_without_a_custom_bid() -> None:
    setup = tiktok()
    setup.fake.seed_ad_group("7001", "1790002", "1.00", bid_type="BID_TYPE_NO_BID")
    [result] = setup.run(lambda c: c.push_bids([bid("7001", "1790002")]))
    assert not result.ok and "BID_TYPE_CUSTOM" in (result.error or "")


def test_tiktok_report_pages_and_splits_long_ranges() -> None:
    setup = tiktok()
    for day in (1, 2, 3):
        setup.fake.seed_delivery(
            "7001", "1790001", date(2026, 3, day), spend="12.34", impressions="100", clicks="7"
        )
    setup.fake.seed_delivery("7001", "1790001", date(2026, 4, 10), spend="0.05", conversion="2")
    settings = setup.settings.model_copy(update={"page_size": 2})
    rows = setup.run(
        lambda c: c.spend_report("7001", date(2026, 3, 1), date(2026, 4, 14)), settings=settings
    )
    assert [(r.day.isoformat(), r.spend_micros) for r in rows] == [
        ("2026-03-01", 12_340_000),
        ("2026-03-02", 12_340_000),
        ("2026-03-03", 12_340_000),
        ("2026-04-10", 50_000),
    ]
    assert rows[3].conversions == 2
    windows = [dict(parse_qsl(r.query)) for r in setup.fake.requests]
    assert [(w["start_date"], w["end_date"], w["page"]) for w in windows] == [
        ("2026-03-01", "2026-03-30", "1"),
        ("2026-03-01", "2026-03-30", "2"),
        ("2026-03-31", "2026-04-14", "1"),
    ]
    assert json.loads(windows[0]["dimensions"]) == ["adgroup_id", "stat_time_day"]
    assert (windows[0]["report_type"], windows[0]["data_level"]) == ("BASIC", "AUCTION_ADGROUP")


# --- LinkedIn ---------------------------------------------------------------------------------


def test_linkedin_bid_is_a_partial_update_of_the_campaign() -> None:
    request = sent_bid(linkedin())
    assert (request.method, request.path) == ("POST", "/rest/adAccounts/508001/adCampaigns/601")
    assert (
        request.headers.items()
        >= {
            "authorization": "Bearer li-fake",
            "x-restli-method": "PARTIAL_UPDATE",
            "linkedin-version": "202505",
            "x-restli-protocol-version": "2.0.0",
        }.items()
    )
    assert request.json() == {
        "patch": {"$set": {"unitCost": {"amount": "1.25", "currencyCode": "USD"}}}
    }


def test_linkedin_refuses_a_bid_in_another_currency() -> None:
    setup = linkedin()
    [result] = setup.run(lambda c: c.push_bids([bid("508001", "601", currency="EUR")]))
    assert not result.ok and "currencyCode" in (result.error or "")


def test_linkedin_retired_version_is_a_configuration_error() -> None:
    setup = linkedin()
    old = setup.settings.model_copy(update={"api_version": "202301"})
    with pytest.raises(Unavailable, match="api_version"):
        setup.run(lambda c: c.push_bids([setup.bid]), settings=old)


def test_linkedin_analytics_query_and_rounding() -> None:
    setup = linkedin()
    setup.fake.seed_analytics(
        "508001",
        "601",
        date(2026, 3, 2),
        costInLocalCurrency="12.3456785",
        impressions=900,
        clicks=12,
        externalWebsiteConversions=2,
        conversionValueInLocalCurrency="80.5",
    )
    rows = setup.run(lambda c: c.spend_report("508001", date(2026, 3, 1), date(2026, 3, 31)))
    assert rows == [
        SpendRow(
            ad_group_ref="601",
            day=date(2026, 3, 2),
            impressions=900,
            clicks=12,
            conversions=2,
            spend_micros=12_345_678,  # half-even to the micro
            conversion_value_micros=80_500_000,
        )
    ]
    assert last(setup.fake).query == (
        "q=analytics&pivot=CAMPAIGN&timeGranularity=DAILY"
        "&dateRange=(start:(year:2026,month:3,day:1),end:(year:2026,month:3,day:31))"
        "&accounts=List(urn%3Ali%3AsponsoredAccount%3A508001)"
        "&fields=pivotValues,dateRange,impressions,clicks,costInLocalCurrency,"
        "externalWebsiteConversions,conversionValueInLocalCurrency"
    )


# --- Amazon Ads -------------------------------------------------------------------------------


def test_amazon_bid_request_shape() -> None:
    request = sent_bid(amazon())
    assert (request.method, request.path) == ("PUT", "/sp/adGroups")
    assert (
        request.headers.items()
        >= {
            "content-type": "application/vnd.spAdGroup.v3+json",
            "accept": "application/vnd.spAdGroup.v3+json",
            "authorization": "Bearer Atza|fake",
            "amazon-advertising-api-clientid": "amzn1.application-oa2-client.fake",
            "amazon-advertising-api-scope": "3456789012",
        }.items()
    )
    assert request.body == b'{"adGroups":[{"adGroupId":"4001","defaultBid":1.25}]}'


def test_amazon_report_is_requested_polled_and_downloaded_without_auth() -> None:
    setup = amazon()
    setup.fake.seed_delivery(
        "3456789012",
        4001,
        date(2026, 3, 1),
        impressions=321,
        clicks=9,
        cost=Decimal("12.34"),
        purchases7d=2,
        sales7d=Decimal("59.98"),
    )
    rows = setup.run(lambda c: c.spend_report("3456789012", date(2026, 3, 1), date(2026, 3, 7)))
    assert rows == [
        SpendRow(
            ad_group_ref="4001",
            day=date(2026, 3, 1),
            impressions=321,
            clicks=9,
            conversions=2,
            spend_micros=12_340_000,
            conversion_value_micros=59_980_000,
        )
    ]
    create, *polls, download = setup.fake.requests
    assert (create.method, create.path) == ("POST", "/reporting/reports")
    assert create.headers["content-type"] == "application/vnd.createasyncreportrequest.v3+json"
    assert create.json()["configuration"] == {
        "adProduct": "SPONSORED_PRODUCTS",
        "reportTypeId": "spCampaigns",
        "groupBy": ["adGroup"],
        "columns": ["adGroupId", "date", "impressions", "clicks", "cost", "purchases7d", "sales7d"],
        "timeUnit": "DAILY",
        "format": "GZIP_JSON",
    }
    assert len(polls) == 3 and all(p.path.startswith("/reporting/reports/") for p in polls)
    assert "authorization" not in download.headers
    assert setup.clock is not None and setup.clock.now() == START.replace(minute=1)  # 2 x 30 s


def test_amazon_reuses_a_pending_duplicate_report() -> None:
    setup = amazon()
    setup.fake.polls_until_ready = 4
    setup.fake.seed_delivery("3456789012", 4001, date(2026, 3, 1), cost=Decimal("1"))

    def report(c: PlatformConnector) -> Awaitable[list[SpendRow]]:
        return c.spend_report("3456789012", date(2026, 3, 1), date(2026, 3, 1))

    with pytest.raises(Unavailable, match="not ready after 3 polls"):
        setup.run(report)
    rows = setup.run(report)  # 425 "duplicate of : <id>": the first report is waited for
    assert [r.spend_micros for r in rows] == [1_000_000]
    assert len(setup.fake.reports) == 1


# Each fake's auction on the seeded ad group: (fake, day, micros wanted) -> delivered.
SERVE: dict[str, Callable[[Any, date, int], int]] = {
    "google_ads": lambda f, day, want: f.serve("1234567890", "111", day, want),
    "meta": lambda f, day, want: f.serve("1001", "23851", "2385", day, want),
    "tiktok": lambda f, day, want: f.serve("7001", "1790001", "1790", day, want),
    "linkedin": lambda f, day, want: f.serve("508001", "601", day, want),
    "amazon": lambda f, day, want: f.serve("3456789012", 4001, "5001", day, want),
}


@pytest.mark.parametrize(
    ("setup", "most"),
    [(google, 151_000_000), (meta, 132_125_000), (tiktok, 75_500_000),
     (linkedin, 113_250_000), (amazon, 94_375_000)],
)  # fmt: skip
def test_a_pushed_daily_budget_holds_the_fakes_delivery_to_the_platforms_terms(
    setup: Callable[[], Setup], most: int
) -> None:
    """75.50 pushed: on a day Google delivers at most 2x, Meta 1.75x, TikTok 1x, LinkedIn
    1.5x, Amazon 1.25x, however much the auction wants; the report shows exactly that."""
    s = setup()
    s.run(lambda c: c.push_budget(s.budget()))
    day = date(2026, 3, 1)
    if s.platform == "google_ads":
        s.fake.ad_group_campaign[("1234567890", "111")] = "77"
    for _ in range(3):
        SERVE[s.platform](s.fake, day, 100_000_000)
    rows = s.run(lambda c: c.spend_report(s.bid.account_id, day, day))
    assert [r.spend_micros for r in rows] == [most]


def test_the_sandbox_pauses_an_ad_group_by_bidding_nothing() -> None:
    """The simulation's connector (kiki.flow.exchange) speaks push_status as the real ones
    do: a paused ad group's bid is 0 until the loop's next bid push; unknown ones fail."""
    one = np.zeros(1)
    units = Units(pool=np.zeros(1, dtype=np.int64), platform=["meta"], utc_offset_h=one,
                  true_cvr=one + 0.05, true_value_micros=one + 50e6)  # fmt: skip
    exchange = SandboxExchange(units, ExchangeConfig())
    sandbox = SandboxConnector("meta", exchange, {"23851": 0})
    change = StatusChange(account_id="1", campaign_ref="1", ad_group_ref="23851", paused=True)

    async def scenario() -> list[list[bool]]:
        await sandbox.push_bids([bid("1", "23851")])
        assert exchange.bids[0] == BID_MICROS
        paused = await sandbox.push_status(
            [change, change.model_copy(update={"ad_group_ref": "9"})]
        )
        assert exchange.bids[0] == 0
        resumed = await sandbox.push_status([change.model_copy(update={"paused": False})])
        assert exchange.bids[0] == 0  # serving again, at the next bid pushed
        return [[r.ok for r in paused], [r.ok for r in resumed]]

    assert asyncio.run(scenario()) == [[True, False], [True]]
