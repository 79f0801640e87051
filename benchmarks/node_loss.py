"""Losing a node while the bid loop runs (issue 18): the scenario that
tests/cluster/test_node_loss.py asserts on and `kiki bench node-loss` times.

A private Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head with no CPUs, so
no actor lands there, and worker A. The budget shards, the bid-loop shards and the guard are
created while A is the only place they fit; then worker B joins, the loop ticks on the wall
clock against the sandbox exchange, and A is killed without warning (SIGKILL, as a lost
machine). Ray notices the dead node, restarts the actors on B (`max_restarts=-1`), the budget
shards rebuild from the ledger and the bid-loop shards start ticking again. What is measured:
how long until every actor is alive elsewhere and every campaign decides again, how many
ticks each campaign missed, and the ledger afterwards (no row lost, no overspend, books equal
to a replay of the ledger).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import asyncpg
import psutil
import ray
from pydantic import BaseModel, Field
from ray._private import ray_constants
from ray._private.node import Node
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_nodes

from actors.budget import ACTOR_PREFIX as BUDGET_PREFIX
from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig
from actors.flow.client import ACTOR_PREFIX as BIDLOOP_PREFIX
from actors.guard import GUARD_NAME
from benchmarks.pacing import SimulationOptions, synthetic_campaigns
from benchmarks.serving import add_worker, local_cluster
from benchmarks.simulate import SANDBOX_RATE
from kiki.auth import ensure_tenant
from kiki.errors import Unavailable
from kiki.flow import store
from kiki.flow.campaigns import Campaign, budget_op
from kiki.shield import store as ledger_store
from kiki.shield.book import BudgetBook, BudgetOp

NAMESPACE = "kiki-node-loss"
POLL_S = 0.25
LEDGER_ROWS = "SELECT seq, campaign_id, kind, amount_micros, idempotency_key FROM budget_ledger"


class NodeLossOptions(BaseModel):
    campaigns: int = Field(4, ge=1, le=1000)
    tick_s: float = Field(0.5, gt=0, le=10, description="the bid loop's wall-clock tick")
    shards: int = Field(2, ge=1, le=8, description="budget shards, and bid-loop shards")
    ticks_before: int = Field(6, ge=1, description="ticks every campaign decides before the loss")
    ticks_after: int = Field(4, ge=1, description="ticks every campaign decides after it")
    timeout_s: float = Field(120.0, gt=0, description="longest wait for the loop to come back")
    seed: int = 0


class NodeLossResult(BaseModel):
    lost_node: str
    placed: dict[str, str] = Field(description="actor -> node before the loss")
    moved: dict[str, str] = Field(description="actor -> node once alive again")
    restarts: dict[str, int] = Field(description="actor -> restarts Ray counted")
    dead_s: float = Field(description="kill -> Ray marks the node dead")
    alive_s: float = Field(description="kill -> every actor alive on a surviving node")
    recovery_s: float = Field(description="kill -> every campaign has a decision again")
    ticks_lost: dict[str, int] = Field(description="campaign -> tick slots without a decision")
    ticks_after: dict[str, int] = Field(description="campaign -> ticks decided after the loss")
    ledger_rows_before: int
    ledger_rows_missing: int = Field(description="rows written before the loss, now gone")
    budget_micros: dict[str, int]
    committed_micros: dict[str, int] = Field(description="campaign -> committed, ledger rows")
    shard_committed_micros: dict[str, int] = Field(description="the rebuilt shard's answer")
    lost_in_flight_micros: dict[str, int] = Field(
        description="delivered by the exchange to the lost shard's open leases, never committed"
    )
    overspend_micros: dict[str, int] = Field(
        description="over budget: committed plus lost in flight, or the shard's committed"
    )
    books_differ: list[str] = Field(description="campaigns whose shard's book != ledger replay")


def run_node_loss(database_url: str, options: NodeLossOptions) -> NodeLossResult:
    """The whole scenario on its own cluster, torn down afterwards. `database_url`: a migrated
    database that no other bid loop uses (the loop runs every live campaign in it)."""
    with local_cluster() as (cluster, folder):
        node_a = add_worker(cluster, folder, "a")
        ray.init(
            address=cluster.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            configure_logging=False,
        )
        return asyncio.run(_scenario(cluster, folder, node_a, database_url, options))


async def _scenario(
    cluster: Cluster, folder: Path, node_a: Node, url: str, o: NodeLossOptions
) -> NodeLossResult:
    campaigns = await _campaigns(url, o)
    budgets = BudgetClient(url, shards=o.shards, namespace=NAMESPACE)
    for result in await budgets.execute([budget_op(c) for c in campaigns]):
        result.raise_for_error()
    config = BidLoopConfig(
        tick_s=o.tick_s,
        namespace=NAMESPACE,
        budget_shards=o.shards,
        value_app=None,  # no SyncValue here: the ad groups' stated values
        guard_rate=SANDBOX_RATE,
        seed=o.seed,
    )
    loops = BidLoopClient(url, config, shards=o.shards)
    await loops.ready()
    add_worker(cluster, folder, "b")
    names = _actor_names(o.shards)
    placed = {name: node for name, (node, _, _) in _actors(cluster, names).items()}
    deadline = time.monotonic() + o.timeout_s
    # Before the loss every campaign has ticked, and has spent: a campaign the exchange had
    # not yet delivered anything to would say nothing about the caps holding.
    while (
        min((await _ticks(url, campaigns, None)).values()) < o.ticks_before
        or min((await _spent(url, campaigns)).values()) == 0
    ):
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the bid loop did not tick {o.ticks_before} times and spend on every "
                "campaign before the loss"
            )
        await asyncio.sleep(POLL_S)
    before = await _fetch(url, LEDGER_ROWS)

    lost = node_a.node_id
    loss_at = datetime.now(UTC)
    killed = time.monotonic()
    _lose(cluster, node_a)
    watch = await _watch(cluster, url, campaigns, names, lost, loss_at, killed, o)

    await loops.stop()  # settle open leases and flush the trail: the ledger holds still
    after = {tuple(r) for r in await _fetch(url, LEDGER_ROWS)}
    committed = {
        r["campaign_id"]: r["committed"]
        for r in await _fetch(
            url,
            "SELECT campaign_id, coalesce(sum(amount_micros) FILTER (WHERE kind = 'committed'), "
            "0)::bigint AS committed FROM budget_ledger GROUP BY campaign_id",
        )
    }
    shard_books = await _shard_books(budgets, campaigns)
    replayed = await _replay(url, campaigns)
    budget = {c.campaign_id: c.budget_micros for c in campaigns}
    shard_committed = {cid: book["committed"] for cid, book in shard_books.items()}
    return NodeLossResult(
        lost_node=lost,
        placed=placed,
        ledger_rows_before=len(before),
        ledger_rows_missing=sum(tuple(r) not in after for r in before),
        budget_micros=budget,
        committed_micros={cid: committed.get(cid, 0) for cid in budget},
        shard_committed_micros=shard_committed,
        overspend_micros={
            cid: max(
                0,
                committed.get(cid, 0) + watch["lost_in_flight_micros"][cid] - b,
                shard_committed[cid] - b,
            )
            for cid, b in budget.items()
        },
        books_differ=sorted(cid for cid in budget if shard_books[cid] != replayed[cid]),
        **watch,
    )


async def _watch(
    cluster: Cluster,
    url: str,
    campaigns: list[Campaign],
    names: list[str],
    lost: str,
    loss_at: datetime,
    killed: float,
    o: NodeLossOptions,
) -> dict:
    """Poll Ray's state API and the audit trail from the kill until every actor is alive on
    another node and every campaign has decided `ticks_after` ticks since the loss."""
    dead_s = alive_s = None
    deadline = killed + o.timeout_s
    while True:
        waited = time.monotonic() - killed
        if dead_s is None and _node_dead(cluster, lost):
            dead_s = waited
        actors = _actors(cluster, names)
        if alive_s is None and all(s == "ALIVE" and n != lost for n, s, _ in actors.values()):
            alive_s = waited
        after = await _ticks(url, campaigns, loss_at)
        if alive_s is not None and dead_s is not None and min(after.values()) >= o.ticks_after:
            break
        if time.monotonic() > deadline:
            raise Unavailable(
                f"{o.timeout_s:g} s after the node's loss: node dead {dead_s is not None}, "
                f"actors { ({k: v[:2] for k, v in actors.items()}) }, ticks since {after}"
            )
        await asyncio.sleep(POLL_S)
    # Each campaign's outage: its longest pause between two ticks that ends after the loss
    # (a tick the dying process finished is not a recovery). Each tick records the campaign's
    # spend so far: before the loss, what the exchange delivered; on resuming, what the
    # ledger had committed. The difference was delivered to leases the lost shard held.
    gaps = await _fetch(
        url,
        """WITH ticks AS (SELECT campaign_id, decided_at, max(spent_micros) AS spent
                          FROM flow_decisions WHERE tenant_id = $1 GROUP BY 1, 2),
                gaps AS (SELECT *, lag(decided_at) OVER w AS previous_at,
                                lag(spent) OVER w AS previous_spent
                         FROM ticks WINDOW w AS (PARTITION BY campaign_id ORDER BY decided_at))
           SELECT DISTINCT ON (campaign_id) campaign_id, decided_at AS resumed_at,
                  extract(epoch FROM decided_at - previous_at)::float8 AS gap_s,
                  greatest(previous_spent - spent, 0) AS lost
           FROM gaps WHERE decided_at > $2 AND previous_at IS NOT NULL
           ORDER BY campaign_id, decided_at - previous_at DESC""",
        uuid.UUID(campaigns[0].tenant_id),
        loss_at,
    )
    return {
        "moved": {name: node for name, (node, _, _) in actors.items()},
        "restarts": {name: restarts for name, (_, _, restarts) in actors.items()},
        "dead_s": dead_s,
        "alive_s": alive_s,
        "recovery_s": max((r["resumed_at"] - loss_at).total_seconds() for r in gaps),
        "ticks_lost": {r["campaign_id"]: round(r["gap_s"] / o.tick_s) - 1 for r in gaps},
        "lost_in_flight_micros": {r["campaign_id"]: r["lost"] for r in gaps},
        "ticks_after": after,
    }


def _lose(cluster: Cluster, node: Node) -> None:
    """The node's raylet and every process under it (its workers: the actors) killed at once,
    as when its machine goes away; `remove_node` alone kills the raylet and leaves the
    workers running on for a moment."""
    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    for process in [raylet, *raylet.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    cluster.remove_node(node, allow_graceful=False)


def _actor_names(shards: int) -> list[str]:
    """Every actor the bid loop needs: the budget shards, the bid-loop shards, the guard."""
    shards_ = [
        f"{p}-{i}-of-{shards}" for p in (BUDGET_PREFIX, BIDLOOP_PREFIX) for i in range(shards)
    ]
    return [*shards_, GUARD_NAME]


def _actors(cluster: Cluster, names: list[str]) -> dict[str, tuple[str, str, int]]:
    """Each named actor's (node, state, restarts), from Ray's state API."""
    found = list_actors(
        address=cluster.address,
        filters=[("ray_namespace", "=", NAMESPACE)],
        detail=True,
        raise_on_missing_output=False,
    )
    by_name = {a.name: (a.node_id or "", a.state, a.num_restarts or 0) for a in found}
    return {name: by_name.get(name, ("", "MISSING", 0)) for name in names}


def _node_dead(cluster: Cluster, node_id: str) -> bool:
    nodes = list_nodes(
        address=cluster.address, filters=[("node_id", "=", node_id)], raise_on_missing_output=False
    )
    return bool(nodes) and nodes[0].state == "DEAD"


async def _campaigns(url: str, o: NodeLossOptions) -> list[Campaign]:
    """A new tenant's running campaigns, stored as live ones (the loop runs them as any
    customer's): an hour each, 55 minutes of it already past, with budgets of a few dollars.
    Far behind its curve, each spends up against its cap, so the cap is what the loss tests."""
    start = datetime.now(UTC) - timedelta(minutes=55)
    conn = await asyncpg.connect(url)
    try:
        tenant = await ensure_tenant(conn, f"node-loss-{uuid.uuid4().hex[:8]}")
        options = SimulationOptions(
            campaigns=o.campaigns,
            hours=1,
            platforms=2,
            ad_groups=2,
            seed=o.seed,
            budget_per_hour=(2, 6),
        )
        campaigns = synthetic_campaigns(str(tenant.id), options, start)
        async with conn.transaction():
            for campaign in campaigns:
                await store.insert_campaign(conn, campaign)
    finally:
        await conn.close()
    return campaigns


async def _ticks(url: str, campaigns: list[Campaign], since: datetime | None) -> dict[str, int]:
    """Per campaign, the ticks (distinct decision times) in the audit trail after `since`."""
    rows = await _fetch(
        url,
        """SELECT campaign_id, count(DISTINCT decided_at) AS ticks FROM flow_decisions
           WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR decided_at > $2)
           GROUP BY campaign_id""",
        uuid.UUID(campaigns[0].tenant_id),
        since,
    )
    found = {r["campaign_id"]: r["ticks"] for r in rows}
    return {c.campaign_id: found.get(c.campaign_id, 0) for c in campaigns}


async def _spent(url: str, campaigns: list[Campaign]) -> dict[str, int]:
    """Per campaign, the spend its latest decision recorded (what the exchange delivered)."""
    rows = await _fetch(
        url,
        """SELECT campaign_id, max(spent_micros) AS spent FROM flow_decisions
           WHERE tenant_id = $1 GROUP BY campaign_id""",
        uuid.UUID(campaigns[0].tenant_id),
    )
    found = {r["campaign_id"]: r["spent"] for r in rows}
    return {c.campaign_id: found.get(c.campaign_id, 0) for c in campaigns}


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _shard_books(budgets: BudgetClient, campaigns: list[Campaign]) -> dict[str, dict]:
    """Each campaign's book as its (restarted) budget shard holds it."""
    ops = [BudgetOp("status", c.tenant_id, c.campaign_id) for c in campaigns]
    results = await budgets.execute(ops)
    for result in results:
        result.raise_for_error()
    return {c.campaign_id: r.snapshot or {} for c, r in zip(campaigns, results, strict=True)}


async def _replay(url: str, campaigns: list[Campaign]) -> dict[str, dict]:
    """Each campaign's book recomputed here from the ledger rows alone."""
    book = BudgetBook()
    conn = await asyncpg.connect(url)
    try:
        await ledger_store.rebuild(conn, book, 0, 1)
    finally:
        await conn.close()
    now = datetime.now(UTC)
    return {
        c.campaign_id: book.campaigns[(c.tenant_id, c.campaign_id)].snapshot(now) for c in campaigns
    }


def summary(runs: list[NodeLossResult]) -> dict[str, float]:
    """The figures over repeated runs: the timings' medians, the worst run for the rest."""
    return {
        "dead_s": median(r.dead_s for r in runs),
        "alive_s": median(r.alive_s for r in runs),
        "recovery_s": median(r.recovery_s for r in runs),
        "ticks_lost": median(max(r.ticks_lost.values()) for r in runs),
        "overspend_usd": max(sum(r.overspend_micros.values()) for r in runs) / 1e6,
        "lost_in_flight_usd": max(sum(r.lost_in_flight_micros.values()) for r in runs) / 1e6,
        "ledger_rows_missing": max(r.ledger_rows_missing for r in runs),
        "books_differ": max(len(r.books_differ) for r in runs),
    }


def table(runs: list[NodeLossResult]) -> str:
    """One row per run, then the summary row (timings: median; the rest: the worst run)."""
    lines = [
        "| run | node dead s | actors alive s | recovery s | ticks lost | overspend USD "
        "| lost in flight USD | ledger rows lost | books differ |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(str(i + 1), summary([r])) for i, r in enumerate(runs)]
    for name, s in [*rows, ("summary", summary(runs))]:
        lines.append(
            f"| {name} | {s['dead_s']:.1f} | {s['alive_s']:.1f} | {s['recovery_s']:.1f} "
            f"| {s['ticks_lost']:g} | {s['overspend_usd']:.2f} | {s['lost_in_flight_usd']:.2f} "
            f"| {s['ledger_rows_missing']:g} | {s['books_differ']:g} |"
        )
    return "\n".join(lines)
