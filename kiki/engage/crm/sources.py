"""A tenant's configured CRM sources: settings validated per vendor, stored in
`engage_crm_sources` with their secrets sealed (kiki.vault), and built into
connectors. Secrets are opened only for a sync and never leave in an answer."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
from pydantic import BaseModel, ValidationError

from kiki.engage.channels.http import ProviderSettings
from kiki.engage.crm.base import SOURCES, CrmSource, SourceName
from kiki.engage.crm.hubspot import HubSpotSettings, HubSpotSource
from kiki.engage.crm.postgres import PostgresSettings, PostgresSource
from kiki.engage.crm.salesforce import SalesforceSettings, SalesforceSource
from kiki.engage.crm.shopify import ShopifySettings, ShopifySource
from kiki.errors import InvalidInput, NotFound
from kiki.vault import Vault, is_token

SETTINGS: dict[SourceName, type[BaseModel]] = {
    "hubspot": HubSpotSettings,
    "salesforce": SalesforceSettings,
    "shopify": ShopifySettings,
    "postgres": PostgresSettings,
}
M = TypeVar("M", bound=BaseModel)
# The database URL carries its password; Salesforce's refresh grant has two secrets.
SECRETS = ("access_token", "url", "refresh_token", "client_secret")


class SourceConfig(BaseModel):
    source: SourceName
    enabled: bool
    config: dict[str, Any]  # secrets masked
    updated_at: datetime


def checked(model: type[M], data: dict[str, Any], what: str) -> M:
    """`data` as `model`, or InvalidInput naming every field that is wrong (for callers
    without FastAPI's validation: the settings stored, the CLI)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"{what}: {problems}") from None


def validate(source: str, config: dict[str, Any]) -> BaseModel:
    """The source's settings, or InvalidInput naming every field that is wrong."""
    if source not in SETTINGS:
        raise InvalidInput(f"unknown CRM source {source!r}; one of {', '.join(SOURCES)}")
    return checked(SETTINGS[source], config, f"{source} settings")  # type: ignore[index]


def build(source: SourceName, config: dict[str, Any], client: httpx.AsyncClient) -> CrmSource:
    settings = validate(source, config)
    if isinstance(settings, PostgresSettings):
        return PostgresSource(settings)
    assert isinstance(settings, ProviderSettings)
    kind = {"hubspot": HubSpotSource, "salesforce": SalesforceSource, "shopify": ShopifySource}
    return kind[source](client, settings)  # type: ignore[abstract,arg-type]


def _view(row: asyncpg.Record) -> SourceConfig:
    config = json.loads(row["config"])
    masked = {k: ("***" if k in SECRETS else v) for k, v in config.items()}
    return SourceConfig(
        source=row["source"], enabled=row["enabled"], config=masked, updated_at=row["updated_at"]
    )


async def put(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    source: str,
    config: dict[str, Any],
    enabled: bool,
    vault: Vault,
) -> SourceConfig:
    settings = validate(source, config)
    row = await conn.fetchrow(
        """INSERT INTO engage_crm_sources (tenant_id, source, config, enabled)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, source) DO UPDATE
               SET config = $3, enabled = $4, updated_at = now()
           RETURNING *""",
        tenant_id, source, json.dumps(_sealed(settings.model_dump(), vault)), enabled,
    )  # fmt: skip
    return _view(row)


def _sealed(config: dict[str, Any], vault: Vault) -> dict[str, Any]:
    return {
        k: vault.seal(v) if k in SECRETS and isinstance(v, str) and not is_token(v) else v
        for k, v in config.items()
    }


async def listed(conn: asyncpg.Connection, tenant_id: UUID) -> list[SourceConfig]:
    rows = await conn.fetch(
        "SELECT * FROM engage_crm_sources WHERE tenant_id = $1 ORDER BY source", tenant_id
    )
    return [_view(r) for r in rows]


async def stored(
    conn: asyncpg.Connection, tenant_id: UUID, source: str, vault: Vault
) -> tuple[SourceName, dict[str, Any]]:
    """The settings with their secrets opened, for a sync. Secrets stored before encryption
    are sealed now (unless the row changed meanwhile, which sealed them itself)."""
    row = await conn.fetchrow(
        "SELECT source, config FROM engage_crm_sources WHERE tenant_id = $1 AND source = $2",
        tenant_id,
        source,
    )
    if row is None:
        raise NotFound(
            f"no {source} CRM source configured; add it first (PUT /api/v1/crm/{source}, or "
            f"`kiki engage crm add-source {source}`)"
        )
    config = json.loads(row["config"])
    what = f"the {source} CRM source's"
    opened = {
        k: vault.open(v, f"{what} {k}") if k in SECRETS and isinstance(v, str) else v
        for k, v in config.items()
    }
    sealed = _sealed(config, vault)
    if sealed != config:
        await conn.execute(
            """UPDATE engage_crm_sources SET config = $4
               WHERE tenant_id = $1 AND source = $2 AND config = $3::jsonb""",
            tenant_id, source, row["config"], json.dumps(sealed),
        )  # fmt: skip
    return row["source"], opened


async def remove(conn: asyncpg.Connection, tenant_id: UUID, source: str) -> None:
    done = await conn.execute(
        "DELETE FROM engage_crm_sources WHERE tenant_id = $1 AND source = $2", tenant_id, source
    )
    if done == "DELETE 0":
        raise NotFound(f"no {source} CRM source configured")


async def due(conn: asyncpg.Connection) -> list[tuple[UUID, SourceName]]:
    """Every enabled source of every tenant, for the scheduled sync."""
    rows = await conn.fetch(
        "SELECT tenant_id, source FROM engage_crm_sources WHERE enabled ORDER BY tenant_id, source"
    )
    return [(r["tenant_id"], r["source"]) for r in rows]
