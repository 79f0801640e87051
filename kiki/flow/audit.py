"""The audit trail: one record per bidding unit per tick, and the `decision:` log line for it.

Records are built from the engine's columns in one pass (no per-decision objects) and travel
to PostgreSQL with COPY; the log lines go to a file in one write per tick.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import numpy as np

from kiki.billing import metering
from kiki.flow.engine import BidEngine, TickPlan

COLUMNS = (
    "tick_id",
    "decided_at",
    "tenant_id",
    "campaign_id",
    "ad_group_id",
    "platform",
    "value_micros",
    "cvr",
    "pacing_multiplier",
    "target_micros",
    "spent_micros",
    "budget_left_micros",
    "reserved_micros",
    "bid_micros",
    "reason",
    "connector_result",
    "shard",
)


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """Per unit: why the bid is what it is, and what the platform said."""

    reason: np.ndarray  # object array of str
    connector_result: np.ndarray  # object array of str


def budget_reasons(engine: BidEngine, plan: TickPlan, denied: dict[int, str]) -> np.ndarray:
    """Why each unit may or may not spend in the next tick."""
    c = engine.unit_campaign
    spent_out = engine.spent >= engine.budget
    reason = np.where(
        ~plan.live[c],
        "not_live",
        np.where(
            spent_out[c],
            "budget_spent",
            np.where(plan.reserve[engine.unit_pool] > 0, "reserved", "ahead_of_pace"),
        ),
    ).astype(object)
    for pool, rule in denied.items():
        reason[engine.unit_pool == pool] = f"denied:{rule}"
    return reason


def records(
    engine: BidEngine,
    plan: TickPlan,
    outcome: TickOutcome,
    tick_id: int,
    decided_at: datetime,
    shard: int,
    tenant_uuids: list[UUID],
) -> list[tuple]:
    """Rows for COPY into flow_decisions, in COLUMNS order: one per unit of a live campaign
    (a campaign outside its schedule or not running makes no decisions)."""
    units = np.flatnonzero(plan.live[engine.unit_campaign])
    c = engine.unit_campaign[units]
    n = len(units)
    campaign_ids = [k[1] for k in engine.campaign_keys()]
    spent = engine.spent[c]
    pick = units.tolist()
    return list(
        zip(
            [tick_id] * n,
            [decided_at] * n,
            [tenant_uuids[i] for i in c.tolist()],
            [campaign_ids[i] for i in c.tolist()],
            [engine.unit_ad_group[u] for u in pick],
            [engine.unit_platform[u] for u in pick],
            plan.value[units].tolist(),
            plan.cvr[units].tolist(),
            engine.multiplier[c].tolist(),
            plan.target[c].tolist(),
            spent.tolist(),
            np.maximum(engine.budget[c] - spent, 0).tolist(),
            engine.pool_cap[engine.unit_pool[units]].tolist(),
            plan.bids[units].tolist(),
            outcome.reason[units].tolist(),
            outcome.connector_result[units].tolist(),
            [shard] * n,
            strict=True,
        )
    )


# %-formatting, not json.dumps per field set: a tick writes 20,000 of these. Ids are validated
# to [A-Za-z0-9_.:-] at the edge; the free-text fields go through json.dumps.
_LINE = (
    'decision: {"tick":%d,"at":"%s","tenant":"%s","campaign":"%s","ad_group":"%s",'
    '"platform":"%s","value_micros":%d,"cvr":%.5f,"multiplier":%.4f,"target_micros":%d,'
    '"spent_micros":%d,"budget_left_micros":%d,"reserved_micros":%d,"bid_micros":%d,'
    '"reason":%s,"result":%s}\n'
)


def log_lines(rows: list[tuple]) -> str:
    """One `decision: {json}` line per record (the old SyncFlow's log contract)."""
    dumps = json.dumps
    return "".join(
        _LINE % (*r[:1], r[1].isoformat(), *r[2:14], dumps(r[14]), dumps(r[15])) for r in rows
    )


def usage(rows: list[tuple]) -> list[metering.Usage]:
    """Billing's `bid_decisions` for these rows: one report per tenant, tick time and shard,
    keyed so that writing the same rows twice bills them once."""
    counts = Counter((r[2], r[1], r[16]) for r in rows)
    return [
        metering.Usage(
            tenant_id=tenant,
            metric_code=metering.BID_DECISIONS,
            quantity=n,
            transaction_id=f"{metering.BID_DECISIONS}:{tenant}:{shard}:{at.isoformat()}",
            at=at,
        )
        for (tenant, at, shard), n in counts.items()
    ]
