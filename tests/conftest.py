"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
