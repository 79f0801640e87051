"""In-app messages: the inbox is a table the customer's app reads (GET /inbox/{customer})."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

import asyncpg

from kiki.engage.channels.base import Channel, MessageChannel, Outgoing


class InboxChannel(MessageChannel):
    channel: ClassVar[Channel] = "in_app"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def send(self, message: Outgoing) -> str:
        async with self.pool.acquire() as conn:
            inbox_id = await conn.fetchval(
                """INSERT INTO engage_inbox (tenant_id, customer_id, message_id, title, body)
                   VALUES ($1, $2, $3, $4, $5) RETURNING id""",
                UUID(message.tenant_id), message.customer_id, message.message_id,
                message.subject, message.body,
            )  # fmt: skip
        return f"inbox:{inbox_id}"
