"""Shopify Admin REST: `customers.json` and `orders.json?status=any`, incremental on
`updated_at_min`, 250 a page, further pages through the `Link: <...page_info=...>;
rel="next"` header (a page_info URL carries every filter itself: Shopify refuses others
beside it). Auth is the app's `X-Shopify-Access-Token`; `total_price` is a decimal string.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field

from kiki.engage.channels.http import HttpProvider, ProviderSettings
from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource, SourceName, micros

PAGE_SIZE = 250  # Shopify's largest page
NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class ShopifySettings(ProviderSettings):
    base_url: str = Field(description="the shop, e.g. https://acme.myshopify.com")
    access_token: str
    api_version: str = Field("2024-10", pattern=r"^[0-9]{4}-[0-9]{2}$")


class ShopifySource(HttpProvider[ShopifySettings], CrmSource):
    name: ClassVar[SourceName] = "shopify"
    provider: ClassVar[str] = "Shopify"
    credential_hint: ClassVar[str] = "the Shopify access token of the tenant's CRM source"
    refused: ClassVar[str] = "the request"

    async def _pages(
        self, resource: str, since: datetime | None, **extra: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        headers = {"X-Shopify-Access-Token": self.settings.access_token}
        path = f"/admin/api/{self.settings.api_version}/{resource}.json"
        params: dict[str, str] | None = {"limit": str(PAGE_SIZE), **extra}
        if since is not None and params is not None:
            params["updated_at_min"] = since.isoformat()
        while True:
            reply = await self._call("GET", path, params=params, headers=headers)
            yield reply.body[resource]
            found = NEXT.search(reply.headers.get("link", ""))
            if found is None:
                return
            url = urlsplit(found.group(1))
            path, params = f"{url.path}?{url.query}", None

    async def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        async for records in self._pages("customers", since):
            yield [
                CrmContact(
                    external_id=str(r["id"]),
                    email=r.get("email"),
                    phone=r.get("phone"),
                    first_name=r.get("first_name"),
                    updated_at=datetime.fromisoformat(r["updated_at"]),
                )
                for r in records
            ]

    async def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        async for records in self._pages("orders", since, status="any"):
            yield [
                CrmOrder(
                    external_id=str(r["id"]),
                    contact_id=str(r["customer"]["id"]) if r.get("customer") else None,
                    email=r.get("email"),
                    occurred_at=datetime.fromisoformat(r.get("processed_at") or r["created_at"]),
                    amount_micros=micros(r["total_price"]),
                    currency=r["currency"],
                    updated_at=datetime.fromisoformat(r["updated_at"]),
                )
                for r in records
            ]
