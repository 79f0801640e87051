"""HubSpot CRM v3: contacts through the search endpoint (filtered and sorted on
`lastmodifieddate`, the only way HubSpot lists changed records), orders through the list
endpoint with their contact associations (search does not return associations).

Auth is a private app's token (`Authorization: Bearer`); pages follow `paging.next.after`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from kiki.engage.connectors.http import HttpProvider, ProviderSettings
from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource, SourceName, micros

CONTACT_PROPERTIES = ("email", "firstname", "phone", "lastmodifieddate")
ORDER_PROPERTIES = ("hs_total_price", "hs_currency_code", "hs_createdate")
PAGE_SIZE = 100  # HubSpot's largest page for search and list


class HubSpotSettings(ProviderSettings):
    base_url: str = "https://api.hubapi.com"
    access_token: str


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


class HubSpotSource(HttpProvider[HubSpotSettings], CrmSource):
    name: ClassVar[SourceName] = "hubspot"
    provider: ClassVar[str] = "HubSpot"
    credential_hint: ClassVar[str] = "the HubSpot access token of the tenant's CRM source"
    refused: ClassVar[str] = "the request"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.access_token}"}

    async def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        filters = (
            [{"propertyName": "lastmodifieddate", "operator": "GTE",
              "value": str(int(since.timestamp() * 1000))}]
            if since else []
        )  # fmt: skip
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": list(CONTACT_PROPERTIES),
            "limit": PAGE_SIZE,
        }
        while True:
            reply = await self._call(
                "POST", "/crm/v3/objects/contacts/search", json=body, headers=self._headers()
            )
            yield [
                CrmContact(
                    external_id=str(r["id"]),
                    email=r["properties"].get("email"),
                    phone=r["properties"].get("phone"),
                    first_name=r["properties"].get("firstname"),
                    updated_at=_time(r["updatedAt"]),
                )
                for r in reply.body["results"]
            ]
            after = _next(reply.body)
            if after is None:
                return
            body["after"] = after

    async def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        params = {
            "limit": str(PAGE_SIZE),
            "properties": ",".join(ORDER_PROPERTIES),
            "associations": "contacts",
        }
        while True:
            reply = await self._call(
                "GET", "/crm/v3/objects/orders", params=params, headers=self._headers()
            )
            page = [_order(r) for r in reply.body["results"]]
            yield [o for o in page if since is None or o.updated_at >= since]
            after = _next(reply.body)
            if after is None:
                return
            params["after"] = after


def _next(body: dict[str, Any]) -> str | None:
    return ((body.get("paging") or {}).get("next") or {}).get("after")


def _order(record: dict[str, Any]) -> CrmOrder:
    props = record["properties"]
    linked = ((record.get("associations") or {}).get("contacts") or {}).get("results") or []
    return CrmOrder(
        external_id=str(record["id"]),
        contact_id=str(linked[0]["id"]) if linked else None,
        email=None,
        occurred_at=_time(props.get("hs_createdate") or record["createdAt"]),
        amount_micros=micros(props.get("hs_total_price") or "0"),
        currency=props.get("hs_currency_code") or "USD",
        updated_at=_time(record["updatedAt"]),
    )
