"""HubSpot CRM v3: contacts and orders through the search endpoint, filtered and sorted on
their last-modified property (`lastmodifieddate`, `hs_lastmodifieddate`: the only way
HubSpot lists changed records), and the orders' buyers through the v4 associations batch
read (search answers carry no associations).

Auth is a private app's token (`Authorization: Bearer`); pages follow `paging.next.after`.
A search stops at 10,000 results, so past that the search starts again from the last
modification time read (records of that millisecond are read twice, harmlessly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from kiki.engage.channels.http import HttpProvider, ProviderSettings
from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource, SourceName, micros
from kiki.errors import Unavailable

CONTACT_PROPERTIES = ("email", "firstname", "phone", "lastmodifieddate")
ORDER_PROPERTIES = ("hs_total_price", "hs_currency_code", "hs_createdate", "hs_lastmodifieddate")
PAGE_SIZE = 200  # HubSpot's largest search page
SEARCH_WINDOW = 10_000  # results one search can page through


class HubSpotSettings(ProviderSettings):
    base_url: str = "https://api.hubapi.com"
    access_token: str


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


class HubSpotSource(HttpProvider[HubSpotSettings], CrmSource):
    name: ClassVar[SourceName] = "hubspot"
    provider: ClassVar[str] = "HubSpot"
    credential_hint: ClassVar[str] = "the HubSpot access token of the tenant's CRM source"
    refused: ClassVar[str] = "the request"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.access_token}"}

    async def _search(
        self, kind: str, modified: str, properties: tuple[str, ...], since: datetime | None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of `kind` records modified at or after `since`, oldest first."""
        path = f"/crm/v3/objects/{kind}/search"
        start = since
        while True:  # one search per 10,000 results
            body: dict[str, Any] = {
                "filterGroups": (
                    [{"filters": [{"propertyName": modified, "operator": "GTE",
                                   "value": _ms(start)}]}]
                    if start else []
                ),
                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                "properties": list(properties),
                "limit": PAGE_SIZE,
            }  # fmt: skip
            read = 0
            while True:
                reply = await self._call("POST", path, json=body, headers=self._headers())
                records = reply.body["results"]
                yield records
                read += len(records)
                after = _next(reply.body)
                if after is None:
                    return
                if read + PAGE_SIZE > SEARCH_WINDOW:
                    break
                body["after"] = after
            last = _time(records[-1]["updatedAt"])
            if start is not None and last <= start:
                raise Unavailable(
                    f"more than {SEARCH_WINDOW:,} HubSpot {kind} were modified at "
                    f"{last.isoformat()}; HubSpot's search cannot page past them"
                )
            start = last

    async def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        async for records in self._search("contacts", "lastmodifieddate", CONTACT_PROPERTIES,
                                          since):  # fmt: skip
            yield [
                CrmContact(
                    external_id=str(r["id"]),
                    email=r["properties"].get("email"),
                    phone=r["properties"].get("phone"),
                    first_name=r["properties"].get("firstname"),
                    updated_at=_time(r["updatedAt"]),
                )
                for r in records
            ]

    async def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        async for records in self._search("orders", "hs_lastmodifieddate", ORDER_PROPERTIES,
                                          since):  # fmt: skip
            buyers = await self._buyers([str(r["id"]) for r in records])
            yield [_order(r, buyers.get(str(r["id"]))) for r in records]

    async def _buyers(self, order_ids: list[str]) -> dict[str, str]:
        """Each order's first associated contact. HubSpot answers 207 and lists an order
        without contacts under `errors`; such an order is matched by nothing."""
        if not order_ids:
            return {}
        reply = await self._call(
            "POST",
            "/crm/v4/associations/orders/contacts/batch/read",
            json={"inputs": [{"id": i} for i in order_ids]},
            headers=self._headers(),
        )
        return {
            str(r["from"]["id"]): str(r["to"][0]["toObjectId"])
            for r in reply.body.get("results", [])
            if r.get("to")
        }


def _next(body: dict[str, Any]) -> str | None:
    return ((body.get("paging") or {}).get("next") or {}).get("after")


def _order(record: dict[str, Any], contact_id: str | None) -> CrmOrder:
    props = record["properties"]
    return CrmOrder(
        external_id=str(record["id"]),
        contact_id=contact_id,
        email=None,
        occurred_at=_time(props.get("hs_createdate") or record["createdAt"]),
        amount_micros=micros(props.get("hs_total_price") or "0"),
        currency=props.get("hs_currency_code") or "USD",
        updated_at=_time(record["updatedAt"]),
    )
