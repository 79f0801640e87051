"""The CRM connectors against faithful fakes of HubSpot, Salesforce and Shopify: every page
followed, the incremental cursor sent in each vendor's own form, auth and failures mapped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from kiki.engage.channels.base import Rejected
from kiki.engage.crm import hubspot
from kiki.engage.crm.base import CrmContact, CrmOrder
from kiki.engage.crm.hubspot import HubSpotSettings, HubSpotSource
from kiki.engage.crm.salesforce import SalesforceSettings, SalesforceSource
from kiki.engage.crm.shopify import ShopifySettings, ShopifySource
from kiki.engage.crm.sources import build, validate
from kiki.errors import InvalidInput, RateLimited, Unavailable
from tests.fakes import fake_hubspot
from tests.fakes.fake_hubspot import FakeHubSpot
from tests.fakes.fake_salesforce import FakeSalesforce
from tests.fakes.fake_shopify import FakeShopify

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pages(stream: AsyncIterator[list[T]]) -> list[list[T]]:
    async def collect() -> list[list[T]]:
        return [page async for page in stream]

    return asyncio.run(collect())


def test_hubspot_searches_contacts_by_lastmodifieddate_and_pages_with_after() -> None:
    fake = FakeHubSpot(token="pat-1")
    for i in range(250):
        fake.add_contact(str(i + 1), at(i), email=f"C{i}@Example.com", phone="+1 415 555 0100")
    source = HubSpotSource(
        fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat-1")
    )
    every = pages(source.contacts(None))
    assert [len(p) for p in every] == [200, 50]  # HubSpot's largest search page
    first = every[0][0]
    assert first == CrmContact(
        external_id="1", email="c0@example.com", phone="+14155550100", first_name=None,
        updated_at=at(0),
    )  # fmt: skip
    assert fake.requests[0].headers["authorization"] == "Bearer pat-1"
    assert fake.requests[1].json()["after"] == "200"
    since = pages(source.contacts(at(240)))
    assert [c.external_id for c in since[0]] == [str(i) for i in range(241, 251)]
    sent = fake.requests[-1].json()["filterGroups"][0]["filters"][0]
    assert sent == {"propertyName": "lastmodifieddate", "operator": "GTE",
                    "value": str(int(at(240).timestamp() * 1000))}  # fmt: skip


def test_hubspot_orders_carry_their_contact_and_exact_amounts() -> None:
    fake = FakeHubSpot(token="pat-1")
    fake.add_order("7", at(5), contact="3", total="19.99", currency="EUR")
    fake.add_order("8", at(1), contact=None, total="0.000001", currency="USD")
    source = HubSpotSource(
        fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat-1")
    )
    (page,) = pages(source.orders(None))
    assert [(o.external_id, o.contact_id, o.amount_micros, o.currency) for o in page] == [
        ("8", None, 1, "USD"),  # oldest change first; no contact: HubSpot answers 207
        ("7", "3", 19_990_000, "EUR"),
    ]
    search, linked = fake.requests
    assert search.path == "/crm/v3/objects/orders/search" and search.json()["filterGroups"] == []
    assert linked.path == "/crm/v4/associations/orders/contacts/batch/read"
    assert linked.json() == {"inputs": [{"id": "8"}, {"id": "7"}]}


def test_hubspot_orders_are_searched_incrementally_on_hs_lastmodifieddate() -> None:
    fake = FakeHubSpot(token="pat-1")
    for i in range(450):
        fake.add_order(str(i + 1), at(i), contact=str(i % 7 + 1), total="1.00", currency="USD")
    source = HubSpotSource(
        fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat-1")
    )
    every = pages(source.orders(None))
    assert [len(p) for p in every] == [200, 200, 50]
    assert [o.external_id for p in every for o in p] == [str(i + 1) for i in range(450)]
    searches = [r.json() for r in fake.requests if r.path.endswith("/search")]
    assert [s.get("after") for s in searches] == [None, "200", "400"]
    fake.requests.clear()
    since = pages(source.orders(at(440)))  # inclusive: the order of the cursor's own minute too
    assert [o.external_id for p in since for o in p] == [str(i) for i in range(441, 451)]
    assert since[0][0].contact_id == str(440 % 7 + 1)
    body = fake.requests[0].json()
    assert body["filterGroups"] == [{"filters": [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE",
         "value": str(int(at(440).timestamp() * 1000))}]}]  # fmt: skip
    assert body["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    fake.add_order("1", at(1000), contact="2", total="5.00", currency="USD")  # changed again
    assert [o.external_id for p in pages(source.orders(at(450))) for o in p] == ["1"]


def test_hubspot_search_starts_again_past_its_result_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HubSpot refuses to page a search past 10,000 results (here 400): the connector
    searches again from the last modification time it read."""
    monkeypatch.setattr(fake_hubspot, "SEARCH_WINDOW", 400)
    monkeypatch.setattr(hubspot, "SEARCH_WINDOW", 400)
    fake = FakeHubSpot(token="pat-1")
    for i in range(900):
        fake.add_contact(str(i + 1), at(i // 2), email=f"w{i}@example.com")  # two a minute
    source = HubSpotSource(
        fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat-1")
    )
    seen = [c.external_id for p in pages(source.contacts(None)) for c in p]
    assert set(seen) == {str(i + 1) for i in range(900)}
    assert len(seen) == 904  # each new search reads the last minute of the one before again
    filters = [r.json()["filterGroups"] for r in fake.requests]
    starts = {f[0]["filters"][0]["value"] for f in filters if f}
    assert starts == {str(int(at(m).timestamp() * 1000)) for m in (199, 398)}
    for i in range(900, 1300):  # 400 changes in one millisecond: no search can page past them
        fake.add_contact(str(i + 1), at(1000), email=None)
    fake.add_contact("9999", at(1001), email=None)
    with pytest.raises(Unavailable, match="more than 400 HubSpot contacts were modified at"):
        pages(source.contacts(at(1000)))


def test_hubspot_bad_token_and_throttle() -> None:
    fake = FakeHubSpot(token="pat-1")
    source = HubSpotSource(fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="x"))
    with pytest.raises(Unavailable, match="HubSpot access token"):
        pages(source.contacts(None))
    fake.fail_next("throttle", retry_after_s=7)
    good = HubSpotSource(
        fake.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat-1")
    )
    with pytest.raises(RateLimited) as caught:
        pages(good.contacts(None))
    assert caught.value.retry_after_s == 7


def test_salesforce_runs_soql_and_follows_next_records_url() -> None:
    fake = FakeSalesforce(token="00D!tok", batch_size=2)
    for i in range(5):
        fake.add_contact(f"003{i}", at(i), Email=f"s{i}@example.com", FirstName=f"S{i}", Phone=None)
    fake.add_order("801A", at(3), BillToContactId="0031", EffectiveDate="2026-02-27",
                   TotalAmount=Decimal("1234.56"))  # fmt: skip
    settings = SalesforceSettings(base_url="https://acme.my.salesforce.com", access_token="00D!tok")
    source = SalesforceSource(fake.client(settings.base_url), settings)
    every = pages(source.contacts(None))
    assert [len(p) for p in every] == [2, 2, 1]
    assert every[0][0].updated_at == at(0) and every[0][0].first_name == "S0"
    assert fake.requests[1].path.startswith("/services/data/v60.0/query/01g")
    since = pages(source.contacts(at(3)))
    assert [c.external_id for p in since for c in p] == ["0033", "0034"]
    assert "LastModifiedDate+%3E%3D+2026-03-01T12%3A03%3A00Z" in fake.requests[-1].query
    (orders,) = pages(source.orders(None))
    assert orders == [
        CrmOrder(external_id="801A", contact_id="0031", email=None,
                 occurred_at=datetime(2026, 2, 27, tzinfo=UTC), amount_micros=1_234_560_000,
                 currency="USD", updated_at=at(3))
    ]  # fmt: skip
    expired = SalesforceSource(
        fake.client(settings.base_url), settings.model_copy(update={"access_token": "old"})
    )
    with pytest.raises(Unavailable, match="Session expired"):
        pages(expired.contacts(None))


def test_shopify_follows_link_page_info_and_filters_updated_at_min() -> None:
    fake = FakeShopify(token="shpat_1")
    for i in range(1, 601):
        fake.add_customer(i, at(i), email=f"p{i}@example.com", first_name="Pat", phone=None)
    fake.add_order(1, at(10), customer=5, total_price="10.50", closed=True)
    fake.add_order(2, at(20), customer=None, total_price="3.00", email="walkin@example.com")
    settings = ShopifySettings(base_url="https://acme.myshopify.com", access_token="shpat_1")
    source = ShopifySource(fake.client(settings.base_url), settings)
    every = pages(source.contacts(None))
    assert [len(p) for p in every] == [250, 250, 100]
    assert fake.requests[0].headers["x-shopify-access-token"] == "shpat_1"
    assert "page_info=" in fake.requests[1].query and "updated_at_min" not in fake.requests[1].query
    since = pages(source.contacts(at(590)))
    assert [c.external_id for p in since for c in p] == [str(i) for i in range(590, 601)]
    (orders,) = pages(source.orders(None))  # status=any: the closed order too
    assert [(o.external_id, o.contact_id, o.email, o.amount_micros) for o in orders] == [
        ("1", "5", None, 10_500_000),
        ("2", None, "walkin@example.com", 3_000_000),
    ]
    wrong = ShopifySource(
        fake.client(settings.base_url), settings.model_copy(update={"access_token": "no"})
    )
    with pytest.raises(Unavailable, match="Invalid API key"):
        pages(wrong.contacts(None))


def test_settings_are_checked_and_vendor_refusals_are_rejections() -> None:
    with pytest.raises(InvalidInput, match="access_token"):
        validate("hubspot", {})
    with pytest.raises(InvalidInput, match="unknown CRM source 'zoho'"):
        validate("zoho", {})
    with pytest.raises(InvalidInput, match="url"):
        validate("postgres", {"url": "mysql://x"})
    fake = FakeShopify(token="t", api_version="2024-10")
    config: dict[str, Any] = {"base_url": "https://s.myshopify.com", "access_token": "t",
                              "api_version": "2023-01"}  # fmt: skip
    with pytest.raises(Rejected, match="Shopify refused the request"):
        pages(build("shopify", config, fake.client(config["base_url"])).contacts(None))
