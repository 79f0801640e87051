"""`kiki train churn` and `kiki engage ...`: SyncEngage's churn models from the shell.

`train churn` joins the `train` group that `kiki train ltv` lives in (registered when this
module is imported, as launcher.cli does), so both models train the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import asyncpg
import click
import httpx
from pydantic import BaseModel

from kiki.auth import Tenant, ensure_tenant
from kiki.config import Settings, load_settings
from kiki.db.pool import create_pool
from kiki.engage import registry
from kiki.engage.crm import sources
from kiki.engage.crm.base import SOURCES, SourceName
from kiki.engage.crm.sync import SyncResult, cursor, sync_configured
from kiki.errors import InvalidInput, KikiError, Unavailable
from kiki.vault import Vault
from launcher.lazy import LazyGroup
from launcher.platform import database
from launcher.value_cli import (
    CALIBRATION_END_OPTION,
    CPUS_PER_TRIAL_OPTION,
    PROMOTE_OPTION,
    SEED_OPTION,
    TENANT_OPTION,
    TRIALS_OPTION,
    registry_commands,
    train,
    train_and_register,
    with_tenant,
)
from training.families import CHURN, TrainOptions

T = TypeVar("T")


@train.command("churn")
@CALIBRATION_END_OPTION
@click.option(
    "--horizon-days",
    default=90,
    show_default=True,
    type=click.IntRange(7, 365),
    help="Churned = no purchase in this many days (the training label).",
)
@TRIALS_OPTION
@click.option("--rounds", default=300, show_default=True, type=click.IntRange(1, 5000))
@CPUS_PER_TRIAL_OPTION
@SEED_OPTION
@PROMOTE_OPTION
@TENANT_OPTION
def train_churn_command(
    calibration_end: Any,
    horizon_days: int,
    trials: int,
    rounds: int,
    cpus_per_trial: float | None,
    seed: int,
    promote: bool,
    tenant: str | None,
) -> None:
    """Search XGBoost settings with Ray Tune on the tenant's purchases up to
    --calibration-end, fit the best, and register it as the next churn model version (its
    files in the artifact store). Runs on the Ray cluster RAY_ADDRESS names, else locally."""
    train_and_register(
        CHURN,
        tenant,
        calibration_end.date(),
        TrainOptions(horizon_days, trials, seed, rounds, cpus_per_trial),
        promote,
    )


@click.group(cls=LazyGroup, lazy={"rules": "launcher.engage_rules_cli:rules"})
def engage() -> None:
    """SyncEngage: churn model versions, CRM sources and sync, retention rules."""


registry_commands(engage, registry.CHURN_MODELS, "models", "kiki train churn")


# --- CRM sources and sync ---------------------------------------------------------------------


def with_pool(
    settings: Settings, tenant: str | None, work: Callable[[asyncpg.Pool, Tenant], Awaitable[T]]
) -> T:
    """Run `work` with a pool and the tenant (created if new): a sync and a rule run write
    page by page and send in between, which one connection (`with_tenant`) cannot serve."""

    async def run(url: str) -> T:
        pool = await create_pool(url, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                owner = await ensure_tenant(conn, tenant or settings.dev_tenant)
            return await work(pool, owner)
        finally:
            await pool.close()

    with database(settings) as url:
        return asyncio.run(run(url))


def model_options(models: dict[str, type[BaseModel]], skip: tuple[str, ...] = ()) -> Any:
    """One `--field-name` option per field of `models` (text, checked by the model itself),
    its help from the field: the API's own models, so the options cannot drift from them."""
    fields: dict[str, dict[str, list[str]]] = {}  # field -> its help -> the models saying so
    for label, model in models.items():
        for name, field in model.model_fields.items():
            if name in skip:
                continue
            about = field.description or ""
            if get_origin(field.annotation) is Literal:
                about = f"{about} one of {', '.join(get_args(field.annotation))}".strip()
            if not field.is_required() and field.default is not None:
                about = f"{about} [default: {field.default}]".strip()
            fields.setdefault(name, {}).setdefault(about, []).append(label)

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for name, helps in reversed(fields.items()):
            parts = []
            for about, labels in helps.items():
                who = ", ".join(labels) if len(models) > 1 else ""
                joiner = ": " if who and about[:1].isalnum() else " "
                parts.append(f"{who}{joiner}{about}".strip())
            flag = f"--{name.replace('_', '-')}"
            command = click.option(flag, name, default=None, help="; ".join(parts))(command)
        return command

    return apply


def given(options: dict[str, str | None], file: Path | None) -> dict[str, Any]:
    """The JSON object in `file` (if any) with the options given on top."""
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{file}: not a readable JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data | {k: v for k, v in options.items() if v is not None}


def json_file(flag: str, about: str) -> Any:
    return click.option(
        flag,
        "file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=f"JSON file: {about} (options given override it).",
    )


@engage.group("crm")
def crm() -> None:
    """CRM sources (HubSpot, Salesforce, Shopify, PostgreSQL) and their sync."""


@crm.command("add-source")
@click.argument("kind", type=click.Choice(SOURCES))
@json_file("--config", "the settings as PUT /crm/KIND takes them; keeps tokens out of history")
@model_options(sources.SETTINGS)
@click.option("--disabled", is_flag=True, help="Store it, but leave it out of scheduled syncs.")
@TENANT_OPTION
def crm_add_source(
    kind: SourceName, file: Path | None, disabled: bool, tenant: str | None, **options: str | None
) -> None:
    """Configure the tenant's KIND source (one per kind; adding it again replaces it).

    Settings are checked as `PUT /engage/api/v1/crm/KIND` checks them; secrets are stored
    encrypted with KIKI_SECRET_KEY (or $KIKI_HOME/secret.key) and shown masked.
    """
    settings = load_settings()
    config = given(options, file)
    vault = Vault.from_settings(settings)

    async def work(conn: asyncpg.Connection, owner: Tenant) -> sources.SourceConfig:
        return await sources.put(conn, owner.id, kind, config, not disabled, vault)

    saved = with_tenant(settings, tenant, work)
    state = "enabled" if saved.enabled else "disabled"
    click.echo(f"{saved.source} CRM source saved ({state}): {_shown(saved.config)}")


def _shown(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


@crm.command("sources")
@TENANT_OPTION
def crm_sources(tenant: str | None) -> None:
    """The tenant's CRM sources, their cursors (the last change read) and settings (secrets
    masked)."""

    async def work(
        conn: asyncpg.Connection, owner: Tenant
    ) -> list[tuple[sources.SourceConfig, list[datetime | None]]]:
        found = await sources.listed(conn, owner.id)
        return [
            (s, [await cursor(conn, owner.id, s.source, k) for k in ("contacts", "orders")])
            for s in found
        ]

    found = with_tenant(load_settings(), tenant, work)
    if not found:
        click.echo("no CRM sources yet: add one with `kiki engage crm add-source KIND`")
        return
    click.echo(
        f"{'SOURCE':<10} {'ENABLED':<7}  {'CONTACTS CURSOR':<25} {'ORDERS CURSOR':<25} SETTINGS"
    )
    for source, marks in found:
        c, o = (m.isoformat() if m else "-" for m in marks)
        click.echo(
            f"{source.source:<10} {'yes' if source.enabled else 'no':<7}  {c:<25} {o:<25} "
            f"{_shown(source.config)}"
        )


@crm.command("sync")
@click.argument("source", type=click.Choice(SOURCES), required=False, metavar="[SOURCE]")
@click.option(
    "--full", is_flag=True, help="Read everything again, not just changes since the cursors."
)
@TENANT_OPTION
def crm_sync(source: SourceName | None, full: bool, tenant: str | None) -> None:
    """Sync SOURCE now (default: every enabled source of the tenant): contacts and orders
    changed since the stored cursors, as the engage actor does on its schedule."""
    settings = load_settings()
    vault = Vault.from_settings(settings)

    async def work(pool: asyncpg.Pool, owner: Tenant) -> list[str]:
        if source is None:
            async with pool.acquire() as conn:
                names = [s.source for s in await sources.listed(conn, owner.id) if s.enabled]
            if not names:
                click.echo("no enabled CRM sources: add one with `kiki engage crm add-source`")
        else:
            names = [source]
        failed = []
        async with httpx.AsyncClient() as client:
            for name in names:
                try:
                    done = await sync_configured(pool, owner.id, name, client, vault, full=full)
                except KikiError as exc:
                    if source is not None:
                        raise
                    click.echo(f"{name}: error: {exc.message}", err=True)
                    failed.append(name)
                    continue
                click.echo(_summary(done))
        return failed

    failed = with_pool(settings, tenant, work)
    if failed:
        raise Unavailable(f"{len(failed)} CRM source(s) failed to sync: {', '.join(failed)}")


def _summary(r: SyncResult) -> str:
    upserted = r.contacts - r.contacts_suppressed
    updated = upserted - r.customers_created - r.customers_merged
    loaded = r.orders - r.orders_new - r.orders_unmatched - r.orders_suppressed

    def mark(at: datetime | None) -> str:
        return at.isoformat() if at else "none yet"

    return (
        f"{r.source}: contacts {r.contacts} read, {upserted} upserted ({r.customers_created} "
        f"new, {r.customers_merged} merged by email, {updated} updated), "
        f"{r.contacts_suppressed} suppressed (erased), cursor {mark(r.contacts_cursor)}\n"
        f"{' ' * len(r.source)}  orders {r.orders} read, {r.orders_new} new, {loaded} already "
        f"loaded, {r.orders_unmatched} unmatched (no such customer yet), "
        f"{r.orders_suppressed} suppressed (erased), cursor {mark(r.orders_cursor)}"
    )


# --- retention rules --------------------------------------------------------------------------
