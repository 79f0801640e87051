"""`kiki train churn` and `kiki engage ...`: SyncEngage's churn models from the shell.

`train churn` joins the `train` group that `kiki train ltv` lives in (registered when this
module is imported, as launcher.cli does), so both models train the same way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import click
import pandas as pd

from kiki.auth import Tenant
from kiki.config import load_settings
from kiki.engage import registry
from kiki.errors import InvalidInput
from kiki.value import transactions
from launcher.value_cli import TENANT_OPTION, train, with_tenant


@train.command("churn")
@click.option(
    "--calibration-end",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="Last day of data the model may learn from.",
)
@click.option(
    "--horizon-days",
    default=90,
    show_default=True,
    type=click.IntRange(7, 365),
    help="Churned = no purchase in this many days (the training label).",
)
@click.option(
    "--trials",
    default=6,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Ray Tune trials (ASHA stops the weak ones early).",
)
@click.option("--rounds", default=300, show_default=True, type=click.IntRange(1, 5000))
@click.option(
    "--cpus-per-trial",
    type=click.FloatRange(0.1, 64),
    default=None,
    help="CPUs Ray reserves per trial [default: what is free, split over two trials, <= 1].",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--promote", is_flag=True, help="Put the new version in production at once.")
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
    --calibration-end, fit the best, and register it as the next churn model version."""
    from benchmarks.serving import local_ray
    from training.churn import train_churn

    settings = load_settings()
    cut = calibration_end.date()

    async def read(conn: asyncpg.Connection, owner: Tenant) -> tuple[Tenant, pd.DataFrame]:
        return owner, await transactions.history(conn, owner.id, datetime.now(UTC))

    owner, history = with_tenant(settings, tenant, read)
    known = history[history["ts"] <= pd.Timestamp(transactions.end_of(cut)).tz_localize(None)]
    if known["customer_id"].nunique() < 50:
        raise InvalidInput(
            f"tenant {owner.name} has {known['customer_id'].nunique()} customers with "
            f"purchases by {cut}; load more data first (`kiki ingest transactions` or "
            "`kiki demo load cdnow`)"
        )
    click.echo(
        f"training on {len(known):,} purchases of {known['customer_id'].nunique():,} "
        f"customers up to {cut}, {trials} Ray Tune trials ..."
    )
    with local_ray("kiki-train"):
        result = train_churn(
            history, cut, horizon_days, trials, seed, rounds, cpus_per_trial=cpus_per_trial
        )
    folder = Path(settings.home).resolve() / "models" / owner.name / f"churn-{uuid.uuid4().hex}"
    result.model.save(folder)

    async def record(conn: asyncpg.Connection, me: Tenant) -> registry.ModelRecord:
        saved = await registry.register(
            conn,
            me.id,
            metrics=result.metrics,
            feature_schema=list(result.model.meta.feature_names),
            config={**result.config.model_dump(), "seed": seed, "trials": trials},
            calibration_end=cut,
            horizon_days=horizon_days,
            data_window=result.data_window,
            artifact_path=str(folder),
        )
        return await registry.promote(conn, me.id, saved.version) if promote else saved

    saved = with_tenant(settings, owner.name, record)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if isinstance(v, float))
    click.echo(
        f"registered churn model version {saved.version} ({saved.status}) in "
        f"{result.seconds:.0f}s: {shown} [{result.metrics['evaluated_on']}]"
    )
    if not promote:
        click.echo(f"serve it with `kiki engage promote {saved.version}`")


@click.group()
def engage() -> None:
    """SyncEngage: churn model versions."""


@engage.command("models")
@TENANT_OPTION
def engage_models(tenant: str | None) -> None:
    """Churn model versions with their status and metrics."""

    async def work(conn: asyncpg.Connection, owner: Tenant) -> list[registry.ModelRecord]:
        return await registry.list_models(conn, owner.id)

    found = with_tenant(load_settings(), tenant, work)
    if not found:
        click.echo("no churn models yet: train one with `kiki train churn`")
        return
    click.echo(f"{'VERSION':>7}  {'STATUS':<10} {'CALIBRATION END':<15} {'HORIZON':>7}  METRICS")
    for m in found:
        shown = ", ".join(f"{k}={v:.3g}" for k, v in m.metrics.items() if isinstance(v, float))
        click.echo(
            f"{m.version:>7}  {m.status:<10} {m.calibration_end.isoformat():<15} "
            f"{m.horizon_days:>6}d  {shown}"
        )


@engage.command("promote")
@click.argument("version", type=int)
@TENANT_OPTION
def engage_promote(version: int, tenant: str | None) -> None:
    """Serve churn model VERSION (the engage app re-reads the registry within seconds)."""

    async def work(conn: asyncpg.Connection, owner: Tenant) -> registry.ModelRecord:
        return await registry.promote(conn, owner.id, version)

    record = with_tenant(load_settings(), tenant, work)
    click.echo(f"churn model version {record.version} is now in production")
