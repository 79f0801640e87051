"""Fixtures shared by every test layer."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.db.embedded import free_port
from kiki.gdpr import Suppressions

REPO = Path(__file__).resolve().parent.parent
# Who was erased, under a fixed key: for tests that run the domain on a fresh database.
SUPPRESSIONS = Suppressions(b"test suppression key, 32 bytes!!")


def store_in(settings: Settings, folder: Path, kind: str) -> str:
    """A saved model folder put into the artifact store of `settings`, as `kiki train` does;
    its URL."""
    return ArtifactStore.from_settings(settings).put_folder(folder, kind)


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
    with new_database(pg_url) as url:
        yield url


@contextmanager
def new_database(pg_url: str) -> Iterator[str]:
    """A new, empty database on the server of `pg_url`, dropped at the end of the block."""
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
class S3Server:
    """A real S3 endpoint on 127.0.0.1 (moto's server) with one empty bucket per test."""

    endpoint_url: str

    def bucket(self) -> str:
        import boto3

        name = f"kiki-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint_url).create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import boto3

        pages = boto3.client("s3", endpoint_url=self.endpoint_url).get_paginator("list_objects_v2")
        return [o["Key"] for p in pages.paginate(Bucket=bucket, Prefix=prefix)
                for o in p.get("Contents", [])]  # fmt: skip


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session; any key id and secret will do, so the AWS variables
    are set for this process and the Ray workers it starts."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    os.environ.update(
        AWS_ACCESS_KEY_ID="kiki-test", AWS_SECRET_ACCESS_KEY="kiki-test",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


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
