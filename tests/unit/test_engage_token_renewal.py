"""Salesforce (OAuth refresh) and FCM (service-account JWT grant) renew their access tokens
through kiki.http, as the ad-platform connectors do: against fakes whose tokens expire on the
test's clock and whose APIs refuse expired ones, many concurrent calls across an expiry make
exactly one token request."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from kiki.clock import VirtualClock
from kiki.config import Settings
from kiki.engage.channels import configured_channels
from kiki.engage.channels.base import Outgoing
from kiki.engage.channels.push import SCOPE, FcmPushChannel, FcmSettings
from kiki.engage.crm.salesforce import SalesforceSettings, SalesforceSource
from kiki.errors import Unavailable
from kiki.http import ServiceAccountGrant
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.fake_salesforce import FakeSalesforce

START = datetime(2026, 3, 1, 12, tzinfo=UTC)
CALLS = 25
SF_URL = "https://acme.my.salesforce.com"
TOKEN_URL = "https://oauth2.googleapis.com/token"
DEVICE = "dev-token-0123456789abcdef"


def salesforce(
    refresh_token: str = "5Aep861-refresh",
) -> tuple[FakeSalesforce, SalesforceSource, VirtualClock]:
    clock = VirtualClock(START)
    fake = FakeSalesforce()
    fake.now = clock.now
    fake.serve_oauth_refresh(
        client_id="3MVG9-app", client_secret="app-secret", refresh_token="5Aep861-refresh",
        session_s=900,
    )  # fmt: skip
    fake.add_contact("0031", START, Email="a@example.com", FirstName="A", Phone=None)
    settings = SalesforceSettings(
        base_url=SF_URL, refresh_token=refresh_token, client_id="3MVG9-app",
        client_secret="app-secret",
    )  # fmt: skip
    return fake, SalesforceSource(fake.client(SF_URL), settings, clock), clock


async def _contacts(source: SalesforceSource) -> int:
    return sum([len(page) async for page in source.contacts(None)])


def test_salesforce_sessions_are_refreshed_once_for_concurrent_queries_across_expiry() -> None:
    fake, source, clock = salesforce()

    async def scenario() -> None:
        # No session yet: one grant serves every first query.
        assert await asyncio.gather(*(_contacts(source) for _ in range(CALLS))) == [1] * CALLS
        assert fake.tokens_issued == 1
        clock.advance(901)  # the org's session timeout passes; the org says so only by a 401
        before = len(fake.requests)
        assert await asyncio.gather(*(_contacts(source) for _ in range(CALLS))) == [1] * CALLS
        assert fake.tokens_issued == 2
        grants = [r for r in fake.requests[before:] if r.path == "/services/oauth2/token"]
        assert len(grants) == 1
        assert grants[0].form() == {
            "grant_type": "refresh_token", "refresh_token": "5Aep861-refresh",
            "client_id": "3MVG9-app", "client_secret": "app-secret",
        }  # fmt: skip
        queries = [r for r in fake.requests[before:] if r.path != "/services/oauth2/token"]
        # Each query went once with the expired session (refused) and once with the new one.
        assert len(queries) == 2 * CALLS

    asyncio.run(scenario())


def test_salesforce_refused_refresh_token_says_what_to_do() -> None:
    _, source, _ = salesforce(refresh_token="revoked")
    with pytest.raises(Unavailable, match=r"expired access/refresh token.*refresh_token"):
        asyncio.run(_contacts(source))


def test_salesforce_refresh_needs_the_connected_app() -> None:
    with pytest.raises(ValueError, match="client_id and client_secret"):
        SalesforceSettings(base_url=SF_URL, refresh_token="rt")
    with pytest.raises(ValueError, match="access_token, or refresh_token"):
        SalesforceSettings(base_url=SF_URL)


def _key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def key_file(private_pem: str) -> dict[str, str]:
    return {
        "type": "service_account", "project_id": "kiki-test", "private_key_id": "k1",
        "private_key": private_pem, "client_email": "push@kiki-test.iam.gserviceaccount.com",
        "token_uri": TOKEN_URL,
    }  # fmt: skip


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _key()


def fcm(private_pem: str, public_pem: str) -> tuple[FakeFcm, FcmPushChannel, VirtualClock]:
    clock = VirtualClock(START)
    fake = FakeFcm(project_id="kiki-test")
    fake.now = clock.now
    fake.devices.add(DEVICE)
    fake.serve_google_oauth(
        client_email="push@kiki-test.iam.gserviceaccount.com", public_key_pem=public_pem,
        token_url=TOKEN_URL, lifetime_s=3600,
    )  # fmt: skip
    grant = ServiceAccountGrant.from_key_file(key_file(private_pem), SCOPE)
    settings = FcmSettings(project_id="kiki-test", oauth=grant)
    channel = FcmPushChannel(fake.client("https://fcm.googleapis.com"), settings, clock)
    return fake, channel, clock


def _message(i: int) -> Outgoing:
    return Outgoing(
        message_id=i + 1, tenant_id="t1", customer_id=f"c{i}", to=DEVICE, subject="Hi",
        body=f"message {i}",
    )  # fmt: skip


def test_fcm_mints_one_token_from_the_service_account_for_concurrent_sends(
    keys: tuple[str, str],
) -> None:
    fake, channel, clock = fcm(*keys)

    async def scenario() -> None:
        await asyncio.gather(*(channel.send(_message(i)) for i in range(CALLS)))
        assert fake.tokens_issued == 1 and len(fake.delivered) == CALLS
        grant = next(r for r in fake.requests if r.path == "/token").form()
        assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        header, claims = (json.loads(_b64(p)) for p in grant["assertion"].split(".")[:2])
        assert header["alg"] == "RS256" and header["kid"] == "k1"
        assert claims["scope"] == SCOPE and claims["aud"] == TOKEN_URL
        assert claims["exp"] - claims["iat"] == 3600
        clock.advance(3600 - 60)  # inside the renewal window: renewed before any send fails
        before = len(fake.requests)
        await asyncio.gather(*(channel.send(_message(i)) for i in range(CALLS)))
        assert fake.tokens_issued == 2 and len(fake.delivered) == 2 * CALLS
        assert len(fake.requests) - before == CALLS + 1  # one grant, no refused send

    asyncio.run(scenario())


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_fcm_refuses_an_expired_token_and_a_foreign_key(keys: tuple[str, str]) -> None:
    fake, channel, clock = fcm(*keys)
    asyncio.run(channel.send(_message(0)))
    stale = fake.requests[-1].headers["authorization"].removeprefix("Bearer ")
    clock.advance(3601)
    fixed = FcmPushChannel(
        fake.client("https://fcm.googleapis.com"),
        FcmSettings(project_id="kiki-test", access_token=SecretStr(stale)),
        clock,
    )
    with pytest.raises(Unavailable, match="refused the configured credentials"):
        asyncio.run(fixed.send(_message(1)))
    other, _ = _key()
    _, forged, _ = fcm(other, keys[1])
    with pytest.raises(Unavailable, match=r"Invalid JWT Signature.*KIKI_FCM_SERVICE_ACCOUNT"):
        asyncio.run(forged.send(_message(2)))


def test_the_service_account_setting_builds_the_push_channel(keys: tuple[str, str]) -> None:
    settings = Settings(
        fcm_project_id="kiki-test", fcm_service_account=json.dumps(key_file(keys[0]))
    )
    channel = configured_channels(settings, httpx.AsyncClient(), None)["push"]  # type: ignore[arg-type]
    assert isinstance(channel, FcmPushChannel) and channel.settings.oauth is not None
    with pytest.raises(ValueError, match="key file's JSON"):
        Settings(fcm_project_id="kiki-test", fcm_service_account="/etc/key.json")
