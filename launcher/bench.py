"""`kiki bench ...`: each benchmark runs on a scratch embedded PostgreSQL and a local Ray, so
it never touches a running platform's data, and prints its figures next to a baseline. The
exception is `kiki bench fuzz`, which tests the running platform itself under its own tenant."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from benchmarks.serving import local_ray, scratch_database
from kiki.config import SERVICES, Settings, load_settings
from kiki.errors import InvalidInput, Unavailable
from launcher.lazy import LazyGroup
from launcher.platform import RunState, database, pid_alive, read_state

INGRESS_OPTION = click.option(
    "--ingress",
    type=click.Choice(["auto", "haproxy", "proxy"]),
    default="auto",
    show_default=True,
    help="Serve's ingress, as KIKI_INGRESS.",
)


def nodes_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--nodes: 1 (the benchmark as always) or 3 (also on a local 3-node Ray, side by side)."""
    return click.option(
        "--nodes", type=click.Choice(["1", "3"]), default="1", show_default=True, help=help_text
    )


@click.group(
    cls=LazyGroup,
    lazy={
        "flow": "launcher.bench_flow:bench_flow",
        "pacing": "launcher.bench_flow:bench_pacing",
        "ltv": "launcher.bench_models:bench_ltv",
        "churn": "launcher.bench_models:bench_churn",
    },
)
def bench() -> None:
    """Benchmarks: figures, a baseline run in the same process, and the ratio."""


PROFILES = ((2, 50), (8, 250))  # (callers, reservations per call): latency, then throughput


@bench.command("shield")
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each run.")
@click.option("--campaigns", default=1000, show_default=True)
@click.option("--concurrency", default=64, show_default=True, help="Baseline connections.")
@click.option("--callers", type=int, help="Concurrent batched callers (default: both profiles).")
@click.option("--batch", type=int, help="Reservations per call (default: both profiles).")
@click.option("--shards", default=2, show_default=True, help="Budget actors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_shield(
    seconds: float,
    campaigns: int,
    concurrency: int,
    callers: int | None,
    batch: int | None,
    shards: int,
    as_json: bool,
) -> None:
    """Reservations/s and latency: budget actors (batched, ledger first) vs a conditional
    SQL UPDATE per reservation. Without --callers/--batch it runs a latency profile (2 callers
    x 50) and a throughput profile (8 x 250)."""
    from benchmarks import shield
    from benchmarks.common import table

    profiles = [(callers or 2, batch or 50)] if callers or batch else list(PROFILES)
    with scratch_database() as url, local_ray("kiki-bench"):
        baseline = asyncio.run(shield.sql_baseline(url, campaigns, concurrency, seconds))
        tenant = asyncio.run(shield.create_tenant(url))
        ours = [
            asyncio.run(shield.budget_actors(url, tenant, shards, campaigns, c, b, seconds))
            for c, b in profiles
        ]
    if as_json:
        click.echo(
            json.dumps({"baseline": baseline.to_json(), "results": [r.to_json() for r in ours]})
        )
    else:
        click.echo(f"SyncShield reservations, {campaigns} campaigns, {seconds:.0f}s each\n")
        click.echo(table(ours, baseline))


@bench.command("shield-http")
@click.option("--seconds", default=10.0, show_default=True, help="wrk duration per endpoint.")
@click.option("--connections", default=32, show_default=True, help="wrk connections.")
@click.option("--campaigns", default=1000, show_default=True)
@INGRESS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_shield_http(
    seconds: float, connections: int, campaigns: int, ingress: str, as_json: bool
) -> None:
    """The shield HTTP API under wrk: the app behind Ray Serve's ingress (the mode `kiki up`
    runs, see KIKI_INGRESS) vs the same FastAPI app on plain uvicorn, same budget actors."""
    from benchmarks.http import require_wrk, run_wrk
    from benchmarks.shield import endpoints, serve_and_uvicorn

    require_wrk()
    rows = []
    with (
        scratch_database() as url,
        serve_and_uvicorn(url, campaigns, ingress) as (serve_url, plain, key, chosen),
    ):
        for load in endpoints(campaigns):
            base = run_wrk(
                f"{load.label}: uvicorn", plain, load, key, seconds=seconds, connections=connections
            )
            ours = run_wrk(
                f"{load.label}: Serve",
                serve_url,
                load,
                key,
                prefix="/shield",
                seconds=seconds,
                connections=connections,
            )
            rows.append((base, ours, load.per_request))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"baseline": b.to_json(), "serve": o.to_json(), "reservations_per_request": n}
                    for b, o, n in rows
                ]
            )
        )
        return
    from benchmarks.common import table

    click.echo(
        f"SyncShield HTTP, wrk {connections} connections, {seconds:.0f}s per run, "
        f"Serve ingress: {chosen}\n"
    )
    for base, ours, per_request in rows:
        click.echo(table([ours], base))
        if per_request > 1:
            click.echo(f"    = {ours.per_second * per_request:,.0f} reservations/s via Serve")
        click.echo("")


@bench.command("ltv-serve")
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each run.")
@click.option("--connections", default=32, show_default=True, help="wrk connections.")
@nodes_option("3: also the Serve runs on a local 3-node Ray, ingress and scorer apart.")
@INGRESS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_ltv_serve(
    seconds: float, connections: int, nodes: str, ingress: str, as_json: bool
) -> None:
    """Predictions/s and latency: HTTP single, HTTP batch of 1,000 and gRPC on Serve, next
    to the same FastAPI app and model on plain uvicorn (needs wrk). With --nodes 3 the Serve
    runs again on a local 3-node Ray (head without CPUs running the proxy, ValueIngress on
    worker a, LTVScorer on worker b), next to the 1-node Serve figures."""
    from benchmarks.common import table
    from benchmarks.http import require_wrk, run_wrk
    from benchmarks.ltv_serve import LOADS, grpc_load, value_servers

    require_wrk()

    def serve_runs(s: dict, label: str) -> list:
        return [
            run_wrk(
                f"{load.label}: {label}",
                s["serve"],
                load,
                s["key"],
                prefix="/value",
                seconds=seconds,
                connections=connections if load.per_request == 1 else 4,
            )
            for load in LOADS
        ]

    bases = []
    with scratch_database() as url, value_servers(url, ingress) as s:
        for load in LOADS:
            conns = connections if load.per_request == 1 else 4
            bases.append(
                run_wrk(
                    f"{load.label}: uvicorn",
                    s["plain"],
                    load,
                    s["key"],
                    seconds=seconds,
                    connections=conns,
                )
            )
        served = serve_runs(s, "Serve")
        grpc = grpc_load(s["grpc"], s["key"], seconds)
    multi, grpc3, placement = [], None, {}
    if nodes == "3":
        with scratch_database() as url, value_servers(url, ingress, 3) as s3:
            multi = serve_runs(s3, "Serve, 3 nodes")
            grpc3 = grpc_load(s3["grpc"], s3["key"], seconds)
            grpc3.name += ", 3 nodes"
            placement = s3["placement"]
    per_request = [load.per_request for load in LOADS]
    rows = list(zip(bases, served, per_request, strict=True))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ingress": s["ingress"],
                    "grpc": grpc.to_json(),
                    "runs": [
                        {
                            "baseline": b.to_json(),
                            "serve": o.to_json(),
                            "predictions_per_request": n,
                        }
                        for b, o, n in rows
                    ],
                    "three_nodes": {
                        "placement": placement,
                        "serve": [m.to_json() for m in multi],
                        "grpc": grpc3.to_json() if grpc3 else None,
                    }
                    if multi
                    else None,
                }
            )
        )
        return
    click.echo(f"SyncValue predictions, Serve ingress: {s['ingress']}\n")
    for base, ours, per_request in rows:
        click.echo(table([ours], base))
        click.echo(
            f"    predictions/s: uvicorn {base.per_second * per_request:,.0f}, "
            f"Serve {ours.per_second * per_request:,.0f}\n"
        )
    click.echo(table([grpc], rows[0][0]))
    click.echo("    (the baseline row is uvicorn's HTTP single: there is no plain gRPC server)")
    if multi:
        where = ", ".join(f"{d} on {n}" for d, n in sorted(placement.items()))
        click.echo(f"\nServe on 3 nodes ({where}; the proxy on the head), vs 1 node:\n")
        for one, three, n in [*zip(served, multi, per_request, strict=True), (grpc, grpc3, 1)]:
            click.echo(table([three], one))
            click.echo(
                f"    predictions/s: 1 node {one.per_second * n:,.0f}, "
                f"3 nodes {three.per_second * n:,.0f}\n"
            )


@bench.command("billing")
@click.option("--events", default=200_000, show_default=True, help="Events sent per run.")
@click.option("--batch", default=1_000, show_default=True, help="Events per batch.")
@click.option("--duplicates", default=0.2, show_default=True, help="Share of retried events.")
@click.option("--concurrency", default=4, show_default=True, help="Connections sending.")
@click.option("--customers", default=10_000, show_default=True, help="Customers to invoice.")
@click.option(
    "--sample", default=500, show_default=True, help="Subscriptions the naive close runs."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_billing(
    events: int,
    batch: int,
    duplicates: float,
    concurrency: int,
    customers: int,
    sample: int,
    as_json: bool,
) -> None:
    """Usage events ingested per second (batches with retried events) vs one INSERT per
    event, and closing a period for --customers customers vs one close per subscription."""
    from benchmarks import billing
    from benchmarks.common import table

    with scratch_database() as url:
        naive, ours = asyncio.run(billing.ingestion(url, events, batch, duplicates, concurrency))
        close_naive, close_ours = asyncio.run(billing.closing(url, customers, 5, sample))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ingest": {"baseline": naive.to_json(), "ours": ours.to_json()},
                    "close": {"baseline": close_naive.to_json(), "ours": close_ours.to_json()},
                }
            )
        )
        return
    click.echo(f"Billing usage ingestion, {concurrency} connections (Lago: 10,000 events/s)\n")
    click.echo(table([ours], naive))
    click.echo(f"\nClosing a period, {customers:,} customers (subscriptions/s)\n")
    click.echo(table([close_ours], close_naive))


@bench.command("keyrate")
@click.option("--seconds", default=5.0, show_default=True, help="Duration of each run.")
@click.option("--concurrency", default=64, show_default=True, help="Requests in flight.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_keyrate(seconds: float, concurrency: int, as_json: bool) -> None:
    """What one rate limit per API key across the cluster costs a request: the key-rate
    actor's check (batched while a call is in flight) vs the per-replica token bucket."""
    from benchmarks.common import table
    from benchmarks.keyrate import key_rate_checks

    with local_ray("kiki-bench-keyrate"):
        baseline, ours = asyncio.run(key_rate_checks(concurrency, seconds))
    if as_json:
        click.echo(
            json.dumps({"baseline": baseline.to_json(), "ours": [r.to_json() for r in ours]})
        )
        return
    click.echo("API-key rate limit checks per second (a request's check; no request refused)\n")
    click.echo(table(ours, baseline))
    for r in ours:
        added_us = 1e6 / r.per_second - 1e6 / baseline.per_second if r.per_second else 0.0
        click.echo(f"{r.name}: {added_us:,.1f} us more per request than the baseline")


@bench.command("backup")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_backup(as_json: bool) -> None:
    """RPO and RTO on the demo-sized database (CDNOW) on a server of its own: dump, base
    backup, restore onto a fresh server after the data folder is deleted, and point-in-time
    recovery."""
    from benchmarks.backup import measure

    figures = measure()
    if as_json:
        click.echo(json.dumps(figures.to_json()))
        return
    f = figures
    click.echo(f"{f.rows:,} rows (CDNOW loaded)")
    click.echo(f"dump backup            {f.dump_s:6.1f} s  {f.dump_mb:6.1f} MB")
    click.echo(f"base backup            {f.base_s:6.1f} s  {f.base_mb:6.1f} MB")
    click.echo(f"WAL shipped            {f.ship_s:6.1f} s")
    click.echo(
        f"RTO, dump              {f.rto_dump_s:6.1f} s  (fresh server {f.fresh_server_s:.1f} s,"
        f" restore + checksums {f.restore_s:.1f} s)"
    )
    click.echo(f"RTO, point in time     {f.rto_pitr_s:6.1f} s")


@bench.command("fuzz")
@click.option(
    "--examples",
    default=25,
    show_default=True,
    help="Examples per operation, each of valid and of invalid requests.",
)
@click.option(
    "--apps", default=",".join(SERVICES), show_default=True, help="Comma-separated apps to fuzz."
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds without an answer before a request counts as a hang.",
)
@click.option("--seed", type=int, help="Hypothesis seed, to repeat a run's requests.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_fuzz(
    examples: int,
    apps: str,
    timeout: float,
    seed: int | None,
    as_json: bool,
) -> None:
    """Requests schemathesis generates from each app's OpenAPI and a corpus of malformed
    ones, sent to the platform that `kiki up --detach` runs under a new fuzz tenant, and
    malformed gRPC calls: counts per app and status class, and with a curl reproducer every
    answer >= 500, hang, error not in the error shape, malformed request not refused 4xx and
    refused request that wrote the tenant's rows; the gRPC statuses. Exit 1 on any."""
    from benchmarks.fuzz import fuzz_tenant_key, run_fuzz

    chosen = [a.strip() for a in apps.split(",") if a.strip()]
    if unknown := sorted(set(chosen) - set(SERVICES)):
        raise InvalidInput(f"--apps: unknown {', '.join(unknown)}; use {','.join(SERVICES)}")
    settings, state = running_platform("fuzz")
    with database(settings) as url:
        tenant, key = asyncio.run(fuzz_tenant_key(url))
        report = run_fuzz(
            state.http_url, key, chosen, examples=examples, database_url=url,
            grpc_target=state.grpc_address, max_body_bytes=settings.max_body_bytes,
            timeout_s=timeout, seed_value=seed,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps({"tenant": tenant, **report.model_dump(mode="json")}))
    else:
        click.echo(f"Fuzz of {state.http_url} and {state.grpc_address} as tenant {tenant}\n")
        click.echo(report.table())
    if any(report.failures.values()) or report.grpc_failures:
        sys.exit(1)


@bench.command("load")
@click.option(
    "--users",
    default="1,2,4,8,16,32",
    show_default=True,
    help="Comma-separated users of each step, run in turn.",
)
@click.option(
    "--step-s",
    default=30,
    show_default=True,
    type=click.IntRange(2, 3600),
    help="Seconds each step runs.",
)
@click.option(
    "--apps", default=",".join(SERVICES), show_default=True, help="Comma-separated apps in the mix."
)
@click.option("--campaigns", default=20, show_default=True, help="Budgets the mix uses.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_load(users: str, step_s: int, apps: str, campaigns: int, as_json: bool) -> None:
    """Locust, headless, drives a mix over the apps of the platform `kiki up --detach` runs,
    with the development key (the first-run demo's tenant, whose models answer): budget
    checks and reservations, predictions, churn risk and cohorts, usage events, campaigns and
    decisions, a creative now and then. Per step: requests/s, p50/p99 and errors; per route at
    the busiest step; and the step past which more users brought no more throughput. Writes
    `load_camp_NNN` budgets, a `load_requests` metric and a `load_customer` in that tenant."""
    from benchmarks.load import LoadOptions, run_load

    chosen = [a.strip() for a in apps.split(",") if a.strip()]
    if unknown := sorted(set(chosen) - set(SERVICES)):
        raise InvalidInput(f"--apps: unknown {', '.join(unknown)}; use {','.join(SERVICES)}")
    try:
        steps = [int(u) for u in users.split(",")]
    except ValueError:
        raise InvalidInput(f"--users: {users!r} is not a comma-separated list of numbers") from None
    if any(u < 1 for u in steps):
        raise InvalidInput("--users: every step needs at least 1 user")
    settings, state = running_platform("load")
    key_file = Path(settings.home) / "dev_api_key"
    if not key_file.exists():
        raise Unavailable(f"no development key at {key_file}: start KIKI with `kiki up`")
    options = LoadOptions(users=steps, step_s=step_s, apps=chosen, campaigns=campaigns)
    report = run_load(state.http_url, key_file.read_text().strip(), options)
    if as_json:
        click.echo(report.model_dump_json())
        return
    click.echo(f"Load on {state.http_url}, {step_s:g} s a step, apps {','.join(chosen)}\n")
    click.echo(report.table())


@bench.command("console")
@click.option("--campaigns", default=1000, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--ticks",
    default=3,
    show_default=True,
    type=click.IntRange(1, 2000),
    help="Pacing points the campaigns have first.",
)
@click.option("--keep-running", is_flag=True, help="Leave the bench campaigns running after.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_console(campaigns: int, runs: int, ticks: int, keep_running: bool, as_json: bool) -> None:
    """Each console page loaded in headless Chromium (Debian's) on the platform `kiki up
    --detach` runs, as the development key's tenant (the CDNOW demo and its models) with
    --campaigns campaigns (`console-bench-NNNN`) created and started through SyncFlow so the
    bid loop ticks them while the pages load: per page the time until its data and charts
    are shown: the first load (caches cold), then p50 and max of --runs more. The campaigns
    are paused after, unless --keep-running."""
    from benchmarks.console import PREFIX, ConsoleReport, measure, pause, seed

    settings, state = running_platform("console")
    key_file = Path(settings.home) / "dev_api_key"
    if not key_file.exists():
        raise Unavailable(f"no development key at {key_file}: start KIKI with `kiki up`")
    key = key_file.read_text().strip()
    try:
        running = asyncio.run(seed(state.http_url, key, campaigns, ticks, timeout_s=600))
        loads = measure(state.http_url, key, f"{PREFIX}{campaigns - 1:04d}", runs)
    finally:
        if not keep_running:
            asyncio.run(pause(state.http_url, key))
    report = ConsoleReport(campaigns=campaigns, running=running, runs=runs, pages=loads)
    if as_json:
        click.echo(report.model_dump_json())
        return
    click.echo(
        f"Console on {state.http_url}: {running} campaigns running, {runs} loads a page "
        "after a warm-up; shown = data and charts drawn, from the navigation's start\n"
    )
    click.echo(report.table())


def running_platform(bench_name: str) -> tuple[Settings, RunState]:
    """The settings and run state of the platform `kiki up --detach` runs, or why there is
    none to benchmark."""
    settings = load_settings()
    state = read_state(settings)
    if state is None or not pid_alive(state.pid) or state.status != "ready":
        raise Unavailable(
            "KIKI is not running (or not ready): start it with `kiki up --detach`, then run "
            f"`kiki bench {bench_name}` again"
        )
    return settings, state


@bench.command("create")
@click.option("--requests", default=10, show_default=True, help="Requests per run.")
@click.option("--variants", default=3, show_default=True, help="Images per request.")
@click.option("--steps", default=2, show_default=True, help="Denoising steps.")
@click.option(
    "--placement", default="tiktok_9_16", show_default=True, help="Placement of every request."
)
@click.option("--concurrency", default=1, show_default=True, help="Concurrent HTTP clients.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="Torch CPU threads, for the baseline and the replica alike (Ray gives a replica with "
    "num_cpus under 1 one thread).",
)
@INGRESS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_create(
    requests: int,
    variants: int,
    steps: int,
    placement: str,
    concurrency: int,
    threads: int,
    ingress: str,
    as_json: bool,
) -> None:
    """Creatives/s and request latency: SyncCreate over HTTP on Serve (safety check,
    generator replica, storage) vs Studio.make called directly in this process. The model is
    KIKI_CREATIVE_MODEL, else the built-in small random-weight pipeline."""
    from benchmarks import create
    from benchmarks.common import table

    load = create.Load(placement, variants, steps, requests, concurrency, threads)
    with scratch_database() as url:
        baseline, served, model = create.run(url, load, ingress)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": model,
                    "load": load.__dict__,
                    "baseline": baseline.to_json(),
                    "serve": served.to_json(),
                }
            )
        )
        return
    click.echo(
        f"SyncCreate, {placement}: {requests} requests x {variants} images, {steps} steps, "
        f"{threads} torch thread(s)\n"
        f"model: {model}\n(ops/s = images/s; latencies are per request)\n"
    )
    click.echo(table([served], baseline))
    click.echo(
        f"\nimages/s: baseline {baseline.per_second:.2f}, Serve {served.per_second:.2f} "
        f"({served.per_second / baseline.per_second:.2f}x)"
    )


@bench.command("node-loss")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--campaigns", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.option("--tick-s", default=0.5, show_default=True, type=click.FloatRange(0.1, 10))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_node_loss(repeats: int, campaigns: int, tick_s: float, as_json: bool) -> None:
    """Recovery from losing a node: a local 3-node Ray (head, workers A and B), the budget
    and bid-loop shards on A, A killed while the loop ticks on the wall clock. Prints the
    seconds until Ray marks A dead, until the actors are alive on B and until every campaign
    decides again, the ticks lost, overspend and lost ledger rows; per run and the median of
    --repeats runs (about 40-70 s each here), each on a scratch PostgreSQL."""
    from benchmarks.node_loss import NodeLossOptions, run_node_loss, summary, table

    options = NodeLossOptions(campaigns=campaigns, tick_s=tick_s)
    runs = []
    for _ in range(repeats):
        with scratch_database() as url:
            runs.append(run_node_loss(url, options))
    if as_json:
        click.echo(json.dumps({"summary": summary(runs), "runs": [r.model_dump() for r in runs]}))
        return
    click.echo(
        f"Losing the node that holds the budget and bid-loop shards: {campaigns} campaigns, "
        f"{tick_s:g} s ticks, {repeats} run(s)\n"
    )
    click.echo(table(runs))
