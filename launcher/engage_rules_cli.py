"""`kiki engage rules ...`: retention rules, listed, added, deleted and run by hand."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import click
import httpx

from kiki.artifacts import ArtifactStore
from kiki.auth import Tenant
from kiki.config import load_settings
from kiki.engage import messaging, retention
from kiki.engage.channels import configured_channels
from kiki.engage.crm import sources
from kiki.errors import FailedPrecondition, InvalidInput
from kiki.gdpr import Suppressions
from kiki.money import micros_to_decimal_str
from launcher.engage_cli import given, json_file, model_options, with_pool
from launcher.value_cli import (
    TENANT_OPTION,
    with_tenant,
)


@click.group("rules")
def rules() -> None:
    """Retention rules: who gets which message when churn risk (and LTV) run high."""


@rules.command("add")
@click.argument("rule_id")
@json_file("--file", "the rule as POST /rules takes it, without rule_id")
@model_options({"rule": retention.RuleIn}, skip=("enabled",))
@click.option("--disabled", is_flag=True, help="Store it, but leave it out of scheduled runs.")
@TENANT_OPTION
def rules_add(
    rule_id: str, file: Path | None, disabled: bool, tenant: str | None, **options: str | None
) -> None:
    """Store retention rule RULE_ID (lower-case letters, digits, _ and -), as
    `POST /engage/api/v1/rules` does; the engage actor runs the enabled ones on its schedule."""
    if not re.match(retention.RULE_ID, rule_id):
        raise InvalidInput(f"rule id {rule_id!r}: use 1 to 64 of a-z, 0-9, _ and -")
    data = given(options, file) | ({"enabled": False} if disabled else {})
    rule = sources.checked(retention.RuleIn, data, f"rule {rule_id}")

    async def work(conn: asyncpg.Connection, owner: Tenant) -> retention.Rule:
        return await retention.create(conn, owner.id, rule_id, rule)

    saved = with_tenant(load_settings(), tenant, work)
    click.echo(f"retention rule {saved.rule_id} stored: {_condition(saved)}")


def _condition(r: retention.Rule) -> str:
    ltv = f" and LTV >= {r.min_ltv}" if r.min_ltv is not None else ""
    within = f" in segment {r.segment_id}" if r.segment_id else ""
    state = "" if r.enabled else " (disabled)"
    return (
        f"churn risk >= {r.min_churn_risk:g}{ltv}{within} -> {r.template} by {r.channel}, "
        f"at most once per {r.period_days} days{state}"
    )


@rules.command("list")
@TENANT_OPTION
def rules_list(tenant: str | None) -> None:
    """The tenant's retention rules."""

    async def work(conn: asyncpg.Connection, owner: Tenant) -> list[retention.Rule]:
        return await retention.list_rules(conn, owner.id)

    found = with_tenant(load_settings(), tenant, work)
    if not found:
        click.echo("no retention rules yet: add one with `kiki engage rules add`")
    for r in found:
        click.echo(f"{r.rule_id}  {r.name}: {_condition(r)}")


@rules.command("delete")
@click.argument("rule_id")
@TENANT_OPTION
def rules_delete(rule_id: str, tenant: str | None) -> None:
    """Delete retention rule RULE_ID (the messages it sent stay in the delivery log)."""

    async def work(conn: asyncpg.Connection, owner: Tenant) -> None:
        await retention.delete(conn, owner.id, rule_id)

    with_tenant(load_settings(), tenant, work)
    click.echo(f"retention rule {rule_id} deleted")


@rules.command("run")
@click.argument("rule_ids", metavar="[RULE_ID]...", nargs=-1)
@click.option("--dry-run", is_flag=True, help="List who would get what; send nothing.")
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Score customers as of this day [default: today, UTC].",
)
@TENANT_OPTION
def rules_run(
    rule_ids: tuple[str, ...], dry_run: bool, as_of: datetime | None, tenant: str | None
) -> None:
    """Run the tenant's enabled rules now (or the RULE_IDs named) on the production churn and
    LTV models. A customer gets a rule's message at most once per period, so running again
    sends nothing new within it."""
    settings = load_settings()
    day = as_of.date() if as_of else datetime.now(UTC).date()
    caps = messaging.Caps(
        per_day=settings.engage_cap_per_day, per_week=settings.engage_cap_per_week
    )

    async def work(
        pool: asyncpg.Pool, owner: Tenant
    ) -> tuple[list[retention.RunResult], list[str]]:
        async with httpx.AsyncClient() as client:
            channels = configured_channels(settings, client, pool)
            return await retention.run_rules(
                pool, owner.id, channels, caps, Suppressions.from_settings(settings), day,
                ArtifactStore.from_settings(settings), dry_run=dry_run,
                rule_ids=list(rule_ids) or None,
            )  # fmt: skip

    runs, errors = with_pool(settings, tenant, work)
    for run in runs:
        verb = "would send" if dry_run else "sent"
        click.echo(
            f"rule {run.rule_id} as of {run.as_of}: {run.template} by {run.channel}, "
            f"{sum(t.outcome in ('would_send', 'sent') for t in run.targets)} {verb}, "
            f"{len(run.targets)} picked"
        )
        for t in run.targets:
            ltv = f"LTV {micros_to_decimal_str(t.ltv_micros)}" if t.ltv_micros is not None else ""
            why = f" ({t.reason})" if t.reason else ""
            click.echo(f"  {t.customer_id:<24} risk {t.churn_risk:.4f}  {ltv:<16} {t.outcome}{why}")
    if not runs and not errors:
        click.echo("no enabled retention rules: add one with `kiki engage rules add`")
    if errors:
        raise FailedPrecondition("; ".join(errors))
