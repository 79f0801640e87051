"""Salesforce REST: SOQL through `GET /services/data/vXX.X/query?q=...`, further pages through
each answer's `nextRecordsUrl`, incremental on `LastModifiedDate`.

Orders are read with their `BillToContactId`; `TotalAmount` arrives as a JSON number and is
parsed as Decimal, never a float. A single-currency org has no `CurrencyIsoCode`, so the
org's currency is a setting.

Sessions expire (the org's session timeout; the token answer states no lifetime), so with a
connected app's refresh token (`refresh_token`, `client_id`, `client_secret`) the source trades
it at `POST /services/oauth2/token` when the org answers 401 INVALID_SESSION_ID, once for all
concurrent queries (kiki.http), and sends the query again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator

from kiki.engage.channels.http import HttpProvider, ProviderSettings
from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource, SourceName, micros
from kiki.http import OAuthRefresh


class SalesforceSettings(ProviderSettings):
    """Flat fields (the CRM source store seals secrets by top-level name)."""

    base_url: str = Field(description="the org's instance URL, e.g. https://acme.my.salesforce.com")
    access_token: str = Field("", description="a session token; optional with a refresh token")
    refresh_token: str | None = Field(None, description="the connected app's refresh token")
    client_id: str | None = Field(None, description="the connected app's consumer key")
    client_secret: str | None = Field(None, description="the connected app's consumer secret")
    login_url: str | None = Field(
        None, description="where to refresh (https://login.salesforce.com); default base_url"
    )
    api_version: str = Field("60.0", pattern=r"^[0-9]{2}\.0$")
    currency: str = Field("USD", min_length=3, max_length=3)

    @model_validator(mode="after")
    def _credentials(self) -> SalesforceSettings:
        if self.refresh_token and not (self.client_id and self.client_secret):
            raise ValueError("refresh_token needs the connected app's client_id and client_secret")
        if self.login_url and not self.login_url.startswith(("http://", "https://")):
            raise ValueError("login_url must start with http:// or https://")
        if not (self.access_token or self.refresh_token):
            raise ValueError("give access_token, or refresh_token with client_id and client_secret")
        return self

    @property
    def oauth(self) -> OAuthRefresh | None:
        """The refresh grant kiki.http renews sessions with, when a refresh token is set."""
        if not (self.refresh_token and self.client_id and self.client_secret):
            return None
        return OAuthRefresh(
            token_url=f"{(self.login_url or self.base_url).rstrip('/')}/services/oauth2/token",
            client_id=self.client_id,
            client_secret=SecretStr(self.client_secret),
            refresh_token=SecretStr(self.refresh_token),
            refresh_before_s=0,
        )


def _time(value: str) -> datetime:
    """Salesforce writes `2026-01-05T10:00:00.000+0000`."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def _where(since: datetime | None) -> str:
    if since is None:
        return ""
    return f" WHERE LastModifiedDate >= {since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


class SalesforceSource(HttpProvider[SalesforceSettings], CrmSource):
    name: ClassVar[SourceName] = "salesforce"
    provider: ClassVar[str] = "Salesforce"
    credential_hint: ClassVar[str] = "the Salesforce access token of the tenant's CRM source"
    grant_hint: ClassVar[str] = (
        "authorize the connected app again and set the source's refresh_token"
    )
    refused: ClassVar[str] = "the query"

    async def _query(self, soql: str) -> AsyncIterator[list[dict[str, Any]]]:
        headers = {"Authorization": self._bearer()}
        path = f"/services/data/v{self.settings.api_version}/query"
        params: dict[str, str] | None = {"q": soql}
        while True:
            reply = await self._call("GET", path, params=params, headers=headers)
            yield reply.body["records"]
            if reply.body.get("done", True):
                return
            path, params = reply.body["nextRecordsUrl"], None

    async def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        soql = (
            "SELECT Id, Email, FirstName, Phone, LastModifiedDate FROM Contact"
            f"{_where(since)} ORDER BY LastModifiedDate"
        )
        async for records in self._query(soql):
            yield [
                CrmContact(
                    external_id=r["Id"],
                    email=r.get("Email"),
                    phone=r.get("Phone"),
                    first_name=r.get("FirstName"),
                    updated_at=_time(r["LastModifiedDate"]),
                )
                for r in records
            ]

    async def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        soql = (
            "SELECT Id, BillToContactId, EffectiveDate, TotalAmount, LastModifiedDate FROM Order"
            f"{_where(since)} ORDER BY LastModifiedDate"
        )
        async for records in self._query(soql):
            yield [
                CrmOrder(
                    external_id=r["Id"],
                    contact_id=r.get("BillToContactId"),
                    email=None,
                    occurred_at=datetime.combine(
                        date.fromisoformat(r["EffectiveDate"]), time(), UTC
                    ),
                    amount_micros=micros(r.get("TotalAmount") or 0),
                    currency=self.settings.currency,
                    updated_at=_time(r["LastModifiedDate"]),
                )
                for r in records
            ]
