"""The audit trail: one record per bidding unit per tick, and the `decision:` log line for it.

Records are built from the engine's columns in one pass (no per-decision objects) and travel
to PostgreSQL with COPY; the log lines go to a file in one write per batch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from kiki.billing import BID_DECISIONS, Usage
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
    "platform_spent_micros",  # the unit's (campaign, platform) pool's spend so far
)


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """Per unit: why the bid is what it is, and what the platform said."""

    reason: np.ndarray  # object array of str
    connector_result: np.ndarray  # object array of str


def budget_reasons(engine: BidEngine, plan: TickPlan, denied: dict[int, str]) -> np.ndarray:
    """Why each unit may or may not spend in the next tick (`denied`: the pools left without a
    lease, with their reasons, from LeaseBook.settle), and why its bid multiplier is what it
    is (`pace:`, from the campaign's controller)."""
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
    for pool, why in denied.items():
        reason[engine.unit_pool == pool] = why
    # And why the campaign's multiplier is where it is: "reserved; pace:behind_curve".
    return reason + "; pace:" + engine.pace_reasons()[c]


@dataclass(frozen=True, slots=True)
class Decisions:
    """One tick's records as columns, in COLUMNS order. Rows are made one at a time while
    they are written (COPY, log lines) and freed at once: holding 20,000 tuples a tick would
    keep the garbage collector busy scanning them."""

    columns: tuple[list, ...]

    def __len__(self) -> int:
        return len(self.columns[0])

    def rows(self) -> Iterator[tuple]:
        return zip(*self.columns, strict=True)


def records(
    engine: BidEngine,
    plan: TickPlan,
    outcome: TickOutcome,
    tick_id: int,
    decided_at: datetime,
    shard: int,
) -> Decisions:
    """The records for flow_decisions: one per unit of a live campaign (a campaign outside
    its schedule or not running makes no decisions). The labels are the engine's prebuilt
    lists, the numbers one `tolist()` each."""
    units = np.flatnonzero(plan.live[engine.unit_campaign])
    n = len(units)
    labels = [
        engine.unit_tenant,
        engine.unit_campaign_id,
        engine.unit_ad_group,
        engine.unit_platform,
    ]
    if n < len(engine.unit_campaign):
        pick = units.tolist()
        labels = [[column[u] for u in pick] for column in labels]
    c = engine.unit_campaign[units]
    spent = engine.spent[c]
    return Decisions(
        (
            [tick_id] * n,
            [decided_at] * n,
            *labels,
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
            engine.pool_spent[engine.unit_pool[units]].tolist(),
        )
    )


class _Memo(dict):
    """Formats each distinct value once: a batch repeats one time and a few texts."""

    def __init__(self, render: Callable[[Any], str]) -> None:
        super().__init__()
        self.render = render

    def __missing__(self, key: Any) -> str:
        text = self[key] = self.render(key)
        return text


# %-formatting mapped over the columns in C, not json.dumps or Python code per row: a tick
# writes 20,000 of these. Ids are validated to [A-Za-z0-9_.:-] at the edge; the free-text
# fields go through json.dumps (once per distinct text).
_LINE = (
    'decision: {"tick":%d,"at":"%s","tenant":"%s","campaign":"%s","ad_group":"%s",'
    '"platform":"%s","value_micros":%d,"cvr":%.5f,"multiplier":%.4f,"target_micros":%d,'
    '"spent_micros":%d,"budget_left_micros":%d,"reserved_micros":%d,"bid_micros":%d,'
    '"reason":%s,"result":%s}\n'
)


def log_lines(decisions: Decisions) -> str:
    """One `decision: {json}` line per record (the old SyncFlow's log contract)."""
    c = decisions.columns
    at, text = _Memo(datetime.isoformat), _Memo(json.dumps)
    fields = zip(
        c[0],
        map(at.__getitem__, c[1]),
        *c[2:14],
        map(text.__getitem__, c[14]),
        map(text.__getitem__, c[15]),
        strict=True,
    )
    return "".join(map(_LINE.__mod__, fields))


def usage(rows: Iterable[tuple]) -> list[Usage]:
    """Billing's `bid_decisions` for these rows: one report per tenant, tick time and shard,
    keyed so that writing the same rows twice bills them once."""
    counts = Counter((r[2], r[1], r[16]) for r in rows)
    return [
        Usage(
            tenant_id=tenant,
            metric_code=BID_DECISIONS,
            quantity=n,
            transaction_id=f"{BID_DECISIONS}:{tenant}:{shard}:{at.isoformat()}",
            at=at,
        )
        for (tenant, at, shard), n in counts.items()
    ]
