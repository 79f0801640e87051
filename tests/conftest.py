"""Fixtures shared by every test layer."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kiki.db.embedded import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL for the whole test session: KIKI_TEST_DATABASE_URL if set, else an
    embedded server in a temporary folder (about a second to start)."""
    if os.environ.get("KIKI_TEST_DATABASE_URL"):
        yield os.environ["KIKI_TEST_DATABASE_URL"]
        return
    from kiki.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata", free_port())
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def fresh_db(pg_url: str) -> Iterator[str]:
    """A new, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"

    async def admin_exec(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_exec(f"CREATE DATABASE {name}"))
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin_exec(f"DROP DATABASE {name} WITH (FORCE)"))


@dataclass
class SmtpServer:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) and every message it accepted."""

    host: str
    port: int
    messages: list[EmailMessage]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    received: list[EmailMessage] = []

    class Keep:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(message_from_bytes(envelope.content, policy=default))
            return "250 Message accepted for delivery"

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, received)
    finally:
        controller.stop()
