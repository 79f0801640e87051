"""Retention automation: stored rules such as "churn risk >= 0.7 and LTV >= 200 -> win_back
email", evaluated over a churn-risk table (kiki.engage.risk), optionally within a stored
segment, and sent through kiki.engage.messaging.

A rule's message to a customer carries the idempotency key `rule:<rule>:<customer>:<period>`
(period = days since 0001-01-01 // period_days), so the delivery log's unique index lets a
customer get a rule's message at most once per period however often the rule runs. A dry
run lists who would get what, and who already has it this period, without sending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kiki.artifacts import ArtifactStore
from kiki.billing import MESSAGES_SENT, record_usage
from kiki.db.values import PgText
from kiki.engage import messaging, registry, segments
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.churn import TrainedChurnModel
from kiki.engage.risk import RiskTable, risk_table
from kiki.engage.templates import TEMPLATES
from kiki.errors import Conflict, FailedPrecondition, KikiError, NotFound
from kiki.gdpr import Suppressions
from kiki.money import MICROS_PER_UNIT, decimal_to_micros, micros_to_decimal_str
from kiki.value import LTV_MODELS, TrainedLTVModel, end_of_day, purchase_history

RULE_ID = r"^[a-z0-9_-]{1,64}$"
Outcome = Literal["would_send", "already_sent", "sent", "refused", "failed"]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PgText = Field(min_length=1, max_length=200, description="what the rule is for")
    min_churn_risk: float = Field(0.7, ge=0, le=1, description="churn risk at or above")
    min_ltv: str | None = Field(
        None,
        pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$",
        description="expected LTV at or above, a decimal string in the LTV model's currency",
    )
    segment_id: str | None = Field(None, pattern=RULE_ID, description="only its members")
    channel: Channel
    template: str = Field(
        min_length=1, max_length=64, description=f"one of {', '.join(sorted(TEMPLATES))}"
    )
    period_days: int = Field(30, ge=1, le=366, description="at most one message per period")
    enabled: bool = True

    @field_validator("template")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in TEMPLATES:
            raise ValueError(f"unknown template {value!r}; one of {', '.join(sorted(TEMPLATES))}")
        return value

    @property
    def min_ltv_micros(self) -> int | None:
        return None if self.min_ltv is None else decimal_to_micros(Decimal(self.min_ltv))


class Rule(RuleIn):
    rule_id: str
    created_at: datetime
    updated_at: datetime


class Target(BaseModel):
    customer_id: str
    churn_risk: float
    ltv_micros: int | None
    idempotency_key: str
    outcome: Outcome
    reason: str | None = None
    message_id: int | None = None


class RunResult(BaseModel):
    rule_id: str
    dry_run: bool
    as_of: date
    channel: Channel
    template: str
    targets: list[Target]
    suppressed: int = Field(0, description="customers it held for who were erased: skipped")


# --- storage ----------------------------------------------------------------------------------


def _rule(row: asyncpg.Record) -> Rule:
    return Rule(
        **json.loads(row["definition"]),
        rule_id=row["rule_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create(conn: asyncpg.Connection, tenant_id: UUID, rule_id: str, body: RuleIn) -> Rule:
    row = await conn.fetchrow(
        """INSERT INTO engage_retention_rules (tenant_id, rule_id, definition, enabled)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING *""",
        tenant_id, rule_id, body.model_dump_json(), body.enabled,
    )  # fmt: skip
    if row is None:
        raise Conflict(f"retention rule {rule_id} exists; PUT it to replace it")
    return _rule(row)


async def replace(conn: asyncpg.Connection, tenant_id: UUID, rule_id: str, body: RuleIn) -> Rule:
    row = await conn.fetchrow(
        """UPDATE engage_retention_rules SET definition = $3, enabled = $4, updated_at = now()
           WHERE tenant_id = $1 AND rule_id = $2 RETURNING *""",
        tenant_id, rule_id, body.model_dump_json(), body.enabled,
    )  # fmt: skip
    if row is None:
        raise NotFound(f"no retention rule {rule_id}")
    return _rule(row)


async def get(conn: asyncpg.Connection, tenant_id: UUID, rule_id: str) -> Rule:
    row = await conn.fetchrow(
        "SELECT * FROM engage_retention_rules WHERE tenant_id = $1 AND rule_id = $2",
        tenant_id,
        rule_id,
    )
    if row is None:
        raise NotFound(f"no retention rule {rule_id}")
    return _rule(row)


async def list_rules(
    conn: asyncpg.Connection, tenant_id: UUID, enabled_only: bool = False
) -> list[Rule]:
    rows = await conn.fetch(
        """SELECT * FROM engage_retention_rules WHERE tenant_id = $1 AND (enabled OR NOT $2)
           ORDER BY rule_id""",
        tenant_id,
        enabled_only,
    )
    return [_rule(r) for r in rows]


async def delete(conn: asyncpg.Connection, tenant_id: UUID, rule_id: str) -> None:
    done = await conn.execute(
        "DELETE FROM engage_retention_rules WHERE tenant_id = $1 AND rule_id = $2",
        tenant_id,
        rule_id,
    )
    if done == "DELETE 0":
        raise NotFound(f"no retention rule {rule_id}")


async def tenants_with_rules(conn: asyncpg.Connection) -> list[UUID]:
    rows = await conn.fetch("SELECT DISTINCT tenant_id FROM engage_retention_rules WHERE enabled")
    return [r["tenant_id"] for r in rows]


# --- evaluation -------------------------------------------------------------------------------


def ltv_micros(value: Any) -> int | None:
    """A model's expected LTV (a float prediction) as micros, once, at the boundary."""
    if value is None or value != value:  # missing or NaN
        return None
    return int((Decimal(repr(float(value))) * MICROS_PER_UNIT).to_integral_value())


def period_key(rule_id: str, customer_id: str, day: date, period_days: int) -> str:
    return f"rule:{rule_id}:{customer_id}:{day.toordinal() // period_days}"


def select(
    rule: Rule, table: RiskTable, members: set[str] | None
) -> list[tuple[str, float, int | None]]:
    """The customers the rule holds for: (customer, churn risk, LTV micros), riskiest first."""
    minimum = rule.min_ltv_micros
    if minimum is not None and "ltv_expected" not in table.frame.columns:
        raise FailedPrecondition(
            f"rule {rule.rule_id} needs LTV, but no LTV model serves: `kiki train ltv`"
        )
    chosen = []
    for customer_id, row in table.frame.iterrows():
        risk = float(row["churn_risk"])
        if risk < rule.min_churn_risk or (members is not None and customer_id not in members):
            continue
        ltv = ltv_micros(row.get("ltv_expected"))
        if minimum is not None and (ltv is None or ltv < minimum):
            continue
        chosen.append((str(customer_id), risk, ltv))
    return chosen


def table_personalize(table: RiskTable, currency: str) -> messaging.Personalize:
    """Template context from the same table the rule was evaluated on."""

    async def personalize(customer_id: str, profile: messaging.Profile | None) -> dict[str, Any]:
        context: dict[str, Any] = {"personalized": True}
        if profile is not None:
            context |= {"first_name": profile.first_name, "attributes": profile.attributes}
        if customer_id in table.frame.index:
            row = table.frame.loc[customer_id]
            context |= {
                "churn_risk": round(float(row["churn_risk"]), 4),
                "days_since_last": (table.as_of - row["last_purchase"]).days,
            }
            ltv = ltv_micros(row.get("ltv_expected"))
            if ltv is not None:
                context |= {"ltv": micros_to_decimal_str(ltv), "currency": currency}
        return context

    return personalize


async def _members(
    conn: asyncpg.Connection, tenant_id: UUID, rule: Rule, day: date, currency: str
) -> set[str]:
    segment = await segments.get(conn, tenant_id, rule.segment_id or "")
    found: set[str] = set()
    after = None
    while True:
        page = await segments.evaluate(conn, tenant_id, segment.rule, day, currency, after=after)
        found.update(page.customer_ids)
        if page.next_after is None:
            return found
        after = page.next_after


async def meter_sent(pool: asyncpg.Pool, tenant_id: UUID, record: messaging.MessageRecord) -> None:
    """Bill a sent message once per idempotency key, however often it is retried."""
    async with pool.acquire() as conn:
        await record_usage(
            conn,
            tenant_id,
            MESSAGES_SENT,
            1,
            f"{MESSAGES_SENT}:{tenant_id}:{record.idempotency_key}",
            record.updated_at,
        )


async def run(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    rule: Rule,
    table: RiskTable,
    channels: Mapping[Channel, MessageChannel],
    caps: messaging.Caps,
    suppressions: Suppressions,
    currency: str = "USD",
    *,
    dry_run: bool,
) -> RunResult:
    """Evaluate one rule on `table` (as of its day) and send, or with dry_run only list;
    customers erased at their request are skipped and counted."""
    day = table.as_of
    async with pool.acquire() as conn:
        members = await _members(conn, tenant_id, rule, day, currency) if rule.segment_id else None
        chosen, suppressed = await suppressions.keep(
            conn, tenant_id, select(rule, table, members), lambda c: c[0]
        )
        keys = [period_key(rule.rule_id, c, day, rule.period_days) for c, _, _ in chosen]
        done = {
            r["idempotency_key"]: r["id"]
            for r in await conn.fetch(
                """SELECT idempotency_key, id FROM engage_messages WHERE tenant_id = $1
                   AND idempotency_key = ANY($2::text[]) AND status <> 'failed'""",
                tenant_id,
                keys,
            )
        }
    personalize = table_personalize(table, currency)
    targets = []
    for (customer_id, risk, ltv), key in zip(chosen, keys, strict=True):
        target = Target(customer_id=customer_id, churn_risk=round(risk, 4), ltv_micros=ltv,
                        idempotency_key=key, outcome="would_send")  # fmt: skip
        if key in done:
            target.outcome, target.message_id = "already_sent", done[key]
        elif not dry_run:
            request = messaging.MessageRequest(
                customer_id=customer_id, channel=rule.channel, template=rule.template,
                idempotency_key=key,
            )  # fmt: skip
            record, _ = await messaging.send_message(
                pool, tenant_id, request, channels, personalize, caps, suppressions
            )
            target.outcome, target.reason, target.message_id = (
                record.status, record.reason, record.message_id,  # type: ignore[assignment]
            )  # fmt: skip
            if record.status == "sent":
                await meter_sent(pool, tenant_id, record)
        targets.append(target)
    return RunResult(rule_id=rule.rule_id, dry_run=dry_run, as_of=day, channel=rule.channel,
                     template=rule.template, targets=targets, suppressed=suppressed)  # fmt: skip


async def run_rules(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    channels: Mapping[Channel, MessageChannel],
    caps: messaging.Caps,
    suppressions: Suppressions,
    day: date,
    store: ArtifactStore,
    *,
    dry_run: bool,
    rule_ids: list[str] | None = None,
) -> tuple[list[RunResult], list[str]]:
    """The tenant's enabled rules (or those named, enabled or not) on its scores as of `day`:
    what the schedule and `kiki engage rules run` do. A rule that fails is reported as
    "rule <id>: why" and the others still run; "rules: why" when none could (no model)."""
    try:
        async with pool.acquire() as conn:
            if rule_ids is None:
                rules = await list_rules(conn, tenant_id, enabled_only=True)
            else:
                rules = [await get(conn, tenant_id, rule_id) for rule_id in rule_ids]
            if not rules:
                return [], []
            table, currency = await score(conn, tenant_id, day, store)
    except KikiError as exc:
        return [], [f"rules: {exc.message}"]
    runs, errors = [], []
    for rule in rules:
        try:
            result = await run(
                pool, tenant_id, rule, table, channels, caps, suppressions, currency,
                dry_run=dry_run,
            )  # fmt: skip
            runs.append(result)
        except KikiError as exc:
            errors.append(f"rule {rule.rule_id}: {exc.message}")
    return runs, errors


async def score(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    as_of: date,
    store: ArtifactStore,
    horizon_days: int = 90,
) -> tuple[RiskTable, str]:
    """The tenant's risk table from its production churn (and LTV) models, and the LTV
    currency: what the scheduled runs evaluate rules on."""
    churn = await registry.production(conn, tenant_id)
    if churn is None:
        raise FailedPrecondition(registry.NO_CHURN_MODEL)
    ltv = (await LTV_MODELS.serving(conn, tenant_id))[0]
    history = await purchase_history(conn, tenant_id, end_of_day(as_of), None)
    currency = ltv.config.get("currency", "USD") if ltv else "USD"
    if history.empty:
        return RiskTable.empty(as_of, horizon_days), currency
    model = await asyncio.to_thread(store.load, churn.artifact_url, TrainedChurnModel)
    ltv_model = (
        await asyncio.to_thread(store.load, ltv.artifact_url, TrainedLTVModel) if ltv else None
    )
    table = await asyncio.to_thread(risk_table, model, history, as_of, horizon_days, ltv_model)
    return table, currency
