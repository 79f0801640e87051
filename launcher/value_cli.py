"""`kiki ingest`, `kiki demo` and `kiki models`: SyncValue's data and model registry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
import pandas as pd

from benchmarks.serving import local_ray
from kiki.artifacts import ArtifactStore
from kiki.auth import Tenant, ensure_tenant
from kiki.config import Settings, load_settings
from kiki.db.pool import connect
from kiki.errors import InvalidInput
from kiki.gdpr import Suppressions
from kiki.model_registry import ModelRecord, ModelRegistry
from kiki.value import registry, transactions
from launcher.platform import database
from training.families import (
    LTV,
    MIN_CUSTOMERS,
    Family,
    TrainOptions,
    customers_by,
    register_trained,
)

T = TypeVar("T")
TENANT_OPTION = click.option(
    "--tenant", default=None, help="Tenant name (default: KIKI_DEV_TENANT, 'dev')."
)
# The options every `kiki train` command takes (besides its horizon and model size).
CALIBRATION_END_OPTION = click.option(
    "--calibration-end",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="Last day of data the model may learn from.",
)
TRIALS_OPTION = click.option(
    "--trials",
    default=6,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Ray Tune trials (ASHA stops the weak ones early).",
)
CPUS_PER_TRIAL_OPTION = click.option(
    "--cpus-per-trial",
    type=click.FloatRange(0.1, 64),
    default=None,
    help="CPUs Ray reserves per trial [default: what is free, split over two trials, <= 1].",
)
SEED_OPTION = click.option("--seed", default=0, show_default=True)
PROMOTE_OPTION = click.option(
    "--promote", is_flag=True, help="Put the new version in production at once."
)


def with_tenant(
    settings: Settings,
    tenant: str | None,
    work: Callable[[asyncpg.Connection, Tenant], Awaitable[T]],
) -> T:
    """Run `work` with a connection and the tenant (created if new)."""

    async def run(url: str) -> T:
        conn = await connect(url)
        try:
            return await work(conn, await ensure_tenant(conn, tenant or settings.dev_tenant))
        finally:
            await conn.close()

    with database(settings) as url:
        return asyncio.run(run(url))


def load_rows(settings: Settings, tenant: str | None, rows: list[transactions.Transaction]) -> None:
    """Insert all rows in one transaction with a progress bar, then print a summary."""

    suppressions = Suppressions.from_settings(settings)

    async def work(
        conn: asyncpg.Connection, owner: Tenant
    ) -> tuple[transactions.Loaded, dict[str, Any]]:
        with click.progressbar(length=len(rows), label="loading", show_pos=True) as bar:
            async with conn.transaction():
                loaded = await transactions.insert(
                    conn, owner.id, rows, suppressions, progress=bar.update
                )
        return loaded, await transactions.summary(conn, owner.id)

    loaded, totals = with_tenant(settings, tenant, work)
    inserted, suppressed = loaded.inserted, loaded.suppressed
    click.echo(
        f"read {len(rows):,} rows: {inserted:,} new, "
        f"{len(rows) - inserted - suppressed:,} already loaded, "
        f"{suppressed:,} of erased customers dropped\n"
        f"tenant now has {totals['purchases']:,} purchases by {totals['customers']:,} customers"
        + (f", {totals['first']:%Y-%m-%d} .. {totals['last']:%Y-%m-%d}" if totals["first"] else "")
    )


@click.group()
def ingest() -> None:
    """Load data into the platform."""


@ingest.command("transactions")
@click.argument("file", type=click.Path(path_type=Path))
@TENANT_OPTION
def ingest_transactions(file: Path, tenant: str | None) -> None:
    """Load purchases from a CSV with the header
    order_id,customer_id,occurred_at,amount[,currency,quantity].

    All or nothing: a bad row loads nothing and names its line and field. Rows whose order_id
    is already loaded are skipped, so a file can be loaded again safely.
    """
    settings = load_settings()
    rows = transactions.read_csv(file)
    load_rows(settings, tenant, rows)


@click.group()
def demo() -> None:
    """Demo data."""


@demo.command("load")
@click.argument("dataset", type=click.Choice(["cdnow"]))
@click.option("--tenant", default="demo", show_default=True)
def demo_load(dataset: str, tenant: str) -> None:
    """Load the CDNOW purchase log (69,659 purchases, 1997-01 .. 1998-06) shipped in the
    `lifetimes` wheel."""
    from kiki.value.cdnow import load_cdnow

    rows = transactions.from_frame(load_cdnow(), "cdnow-")
    load_rows(load_settings(), tenant, rows)


@click.group()
def models() -> None:
    """LTV model versions: list, promote (all traffic or an A/B share), roll back."""


def registry_commands(
    group: click.Group, models: ModelRegistry, list_name: str, train_command: str
) -> None:
    """`list_name`, `promote VERSION` (with `--traffic` where the registry allows A/B
    candidates) and `rollback` under `group`, for one model registry. Serving replicas pick
    a change up within seconds, without a restart."""

    @group.command(list_name)
    @TENANT_OPTION
    def list_versions(tenant: str | None) -> None:
        async def work(conn: asyncpg.Connection, owner: Tenant) -> list[ModelRecord]:
            return await models.list_models(conn, owner.id)

        found = with_tenant(load_settings(), tenant, work)
        if not found:
            click.echo(f"no {models.noun}s yet: train one with `{train_command}`")
            return
        click.echo(
            f"{'VERSION':>7}  {'STATUS':<10} {'TRAFFIC':>7}  {'CALIBRATION END':<15} "
            f"{'HORIZON':>7}  METRICS"
        )
        for m in found:
            shown = ", ".join(f"{k}={v:.3g}" for k, v in m.metrics.items() if isinstance(v, float))
            click.echo(
                f"{m.version:>7}  {m.status:<10} {m.traffic_percent:>6}%  "
                f"{m.calibration_end.isoformat():<15} {m.horizon_days:>6}d  {shown}"
            )

    noun = models.noun[0].upper() + models.noun[1:]
    list_versions.help = f"{noun} versions: status, traffic share, metrics."

    def promote(version: int, tenant: str | None, traffic: int = 100) -> None:
        async def work(conn: asyncpg.Connection, owner: Tenant) -> ModelRecord:
            return await models.promote(conn, owner.id, version, traffic)

        record = with_tenant(load_settings(), tenant, work)
        click.echo(
            f"{models.noun} version {record.version} is now {record.status} "
            f"({record.traffic_percent}%)"
        )

    if models.candidates:
        promote = click.option(
            "--traffic",
            default=100,
            show_default=True,
            type=click.IntRange(1, 100),
            help="Percent of customers; below 100 makes it the A/B candidate.",
        )(promote)
    promote.__doc__ = f"Serve {models.noun} VERSION" + (
        " to every customer, or to --traffic percent of them as an A/B test."
        if models.candidates
        else "."
    )
    group.command("promote")(click.argument("version", type=int)(TENANT_OPTION(promote)))

    @group.command("rollback")
    @TENANT_OPTION
    def rollback(tenant: str | None) -> None:
        async def work(conn: asyncpg.Connection, owner: Tenant) -> ModelRecord:
            return await models.rollback(conn, owner.id)

        record = with_tenant(load_settings(), tenant, work)
        click.echo(f"rolled back: {models.noun} version {record.version} is in production")

    rollback.help = f"Serve the previous production {models.noun} again (ending any A/B test)."


registry_commands(models, registry.LTV_MODELS, "list", "kiki train ltv")


@click.group()
def train() -> None:
    """Train models with Ray Tune."""


@train.command("ltv")
@CALIBRATION_END_OPTION
@click.option(
    "--horizon-days",
    default=90,
    show_default=True,
    type=click.IntRange(7, 730),
    help="How far ahead the model predicts spend.",
)
@TRIALS_OPTION
@click.option("--max-epochs", default=40, show_default=True, type=click.IntRange(1, 1000))
@CPUS_PER_TRIAL_OPTION
@SEED_OPTION
@PROMOTE_OPTION
@TENANT_OPTION
def train_ltv_command(
    calibration_end: Any,
    horizon_days: int,
    trials: int,
    max_epochs: int,
    cpus_per_trial: float | None,
    seed: int,
    promote: bool,
    tenant: str | None,
) -> None:
    """Search ZILN hyper-parameters with Ray Tune on the tenant's purchases up to
    --calibration-end, fit the best, and register it as the next model version (its files in
    the artifact store). Runs on the Ray cluster RAY_ADDRESS names, else on a local Ray."""
    train_and_register(
        LTV,
        tenant,
        calibration_end.date(),
        TrainOptions(horizon_days, trials, seed, max_epochs, cpus_per_trial),
        promote,
    )


@contextmanager
def training_ray(settings: Settings) -> Iterator[str]:
    """The cluster RAY_ADDRESS names, as a connected driver (Tune places trials wherever the
    cluster has room); else a Ray for this command alone. Yields where trials run."""
    import ray

    if not settings.ray_address:
        with local_ray("kiki-train"):
            yield "a local Ray"
        return
    ArtifactStore.for_cluster(settings)  # trials on other nodes must reach the results
    ray.init(address=settings.ray_address, namespace="kiki-train", log_to_driver=False)
    try:
        yield f"the Ray cluster at {settings.ray_address}"
    finally:
        ray.shutdown()


def train_and_register(
    family: Family, tenant: str | None, cut: date, options: TrainOptions, promote: bool
) -> None:
    """Read the tenant's purchases, train on Ray (search and final fit, see `training_ray`),
    save the model to the artifact store, register it, and promote it when asked."""
    settings = load_settings()
    store = ArtifactStore.from_settings(settings)

    async def read(conn: asyncpg.Connection, owner: Tenant) -> tuple[Tenant, pd.DataFrame]:
        # Everything loaded: training sees only up to the cut, later days (if any) score it.
        return owner, await transactions.history(conn, owner.id, datetime.now(UTC))

    owner, history = with_tenant(settings, tenant, read)
    customers = customers_by(history, cut)
    if customers < MIN_CUSTOMERS:
        raise InvalidInput(
            f"tenant {owner.name} has {customers} customers with purchases by {cut}; load more "
            "data first (`kiki ingest transactions` or `kiki demo load cdnow`)"
        )
    purchases = int((history["ts"] < pd.Timestamp(cut) + pd.Timedelta(days=1)).sum())
    with training_ray(settings) as where:
        click.echo(
            f"training on {purchases:,} purchases of {customers:,} customers up to {cut}, "
            f"{options.trials} Ray Tune trials on {where} ..."
        )
        result = family.train(history, cut, options, store)

    async def record(conn: asyncpg.Connection, me: Tenant) -> ModelRecord:
        saved = await register_trained(conn, store, family, me.id, result, cut, options)
        return await family.models.promote(conn, me.id, saved.version) if promote else saved

    saved = with_tenant(settings, owner.name, record)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if isinstance(v, float))
    click.echo(
        f"registered {family.models.noun} version {saved.version} ({saved.status}) in "
        f"{result.seconds:.0f}s: {shown} [{result.metrics['evaluated_on']}]\n"
        f"    files: {saved.artifact_url}"
    )
    if not promote:
        click.echo(f"serve it with `{family.promote_command} {saved.version}`")
