"""`kiki bench ...`: each benchmark runs on a scratch embedded PostgreSQL and a local Ray, so
it never touches a running platform's data, and prints its figures next to a baseline."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from kiki.db.embedded import EmbeddedPostgres, free_port
from launcher.platform import run_migrations


@contextmanager
def scratch_database() -> Iterator[str]:
    """A migrated PostgreSQL in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="kiki-bench-"))
    server = EmbeddedPostgres(folder / "pgdata", free_port())
    try:
        url = server.start()
        asyncio.run(run_migrations(url))
        yield url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def local_ray() -> Iterator[None]:
    import ray

    ray.init(
        address="local",
        namespace="kiki-bench",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@click.group()
def bench() -> None:
    """Benchmarks: figures, a baseline run in the same process, and the ratio."""


@bench.command("shield")
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each run.")
@click.option("--campaigns", default=1000, show_default=True)
@click.option("--concurrency", default=64, show_default=True, help="Baseline connections.")
@click.option("--callers", default=8, show_default=True, help="Concurrent batched callers.")
@click.option("--batch", default=250, show_default=True, help="Reservations per call.")
@click.option("--shards", default=2, show_default=True, help="Budget actors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_shield(
    seconds: float,
    campaigns: int,
    concurrency: int,
    callers: int,
    batch: int,
    shards: int,
    as_json: bool,
) -> None:
    """Reservations/s and latency: budget actors (batched, ledger first) vs a conditional
    SQL UPDATE per reservation."""
    from benchmarks import shield
    from benchmarks.common import table

    with scratch_database() as url, local_ray():
        baseline = asyncio.run(shield.sql_baseline(url, campaigns, concurrency, seconds))
        tenant = asyncio.run(shield.create_tenant(url))
        ours = asyncio.run(
            shield.budget_actors(url, tenant, shards, campaigns, callers, batch, seconds)
        )
    if as_json:
        click.echo(json.dumps({"baseline": baseline.to_json(), "results": [ours.to_json()]}))
    else:
        click.echo(f"SyncShield reservations, {campaigns} campaigns, {seconds:.0f}s each\n")
        click.echo(table([ours], baseline))
