"""A PostgreSQL table or view as a CRM: any database reachable by URL.

The contacts relation has `id, email, phone, first_name, updated_at`; the orders relation
`id, contact_id, occurred_at, amount (numeric), currency, updated_at`. A view maps other
column names onto these. Pages are keyset pages on (updated_at, id), so rows changing while
the sync reads neither repeat a page nor skip one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource, SourceName, micros
from kiki.errors import Unavailable

IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$"
PAGE_SIZE = 1000


class PostgresSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^postgres(ql)?://", description="postgresql://user:pw@host/db")
    contacts_table: str = Field("crm_contacts", pattern=IDENTIFIER)
    orders_table: str = Field("crm_orders", pattern=IDENTIFIER)


class PostgresSource(CrmSource):
    name: ClassVar[SourceName] = "postgres"

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings

    async def _pages(
        self, table: str, columns: str, since: datetime | None
    ) -> AsyncIterator[list[asyncpg.Record]]:
        try:
            conn = await asyncpg.connect(self.settings.url, timeout=15)
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(f"the PostgreSQL CRM source could not be reached: {exc}") from None
        try:
            after: tuple[Any, ...] = (since, None)
            while True:
                rows = await conn.fetch(
                    f"""SELECT {columns}, id::text AS key FROM {table}
                        WHERE ($1::timestamptz IS NULL OR updated_at >= $1)
                          AND ($2::text IS NULL OR (updated_at, id::text) > ($1, $2))
                        ORDER BY updated_at, id::text LIMIT {PAGE_SIZE}""",
                    *after,
                )
                yield list(rows)
                if len(rows) < PAGE_SIZE:
                    return
                after = (rows[-1]["updated_at"], rows[-1]["key"])
        except asyncpg.PostgresError as exc:
            raise Unavailable(
                f"reading {table} from the PostgreSQL CRM source failed: {exc}"
            ) from None
        finally:
            await conn.close()

    async def contacts(self, since: datetime | None) -> AsyncIterator[list[CrmContact]]:
        columns = "email, phone, first_name, updated_at"
        async for rows in self._pages(self.settings.contacts_table, columns, since):
            yield [
                CrmContact(
                    external_id=r["key"],
                    email=r["email"],
                    phone=r["phone"],
                    first_name=r["first_name"],
                    updated_at=r["updated_at"],
                )
                for r in rows
            ]

    async def orders(self, since: datetime | None) -> AsyncIterator[list[CrmOrder]]:
        columns = "contact_id::text, occurred_at, amount, currency, updated_at"
        async for rows in self._pages(self.settings.orders_table, columns, since):
            yield [
                CrmOrder(
                    external_id=r["key"],
                    contact_id=r["contact_id"],
                    email=None,
                    occurred_at=r["occurred_at"],
                    amount_micros=micros(r["amount"]),
                    currency=r["currency"],
                    updated_at=r["updated_at"],
                )
                for r in rows
            ]
