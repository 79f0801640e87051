"""Closing periods: usage aggregated, invoices drafted, finalized and numbered, periods renewed.

`close_period(tenant, as_of)` takes every active subscription whose period ended by `as_of`
(again and again, so one that is several periods behind catches up), and in one transaction:
aggregates its usage (kiki.billing.aggregation), prices it and the base fee
(kiki.billing.invoice), adds waiting lines (prorations) and late-usage adjustments, applies
coupons, tax and prepaid credits, finalizes the invoice with the tenant's next gapless number,
moves the subscription to its next period, and applies a downgrade or cancellation due then.
Closing again finds nothing due, so it is safe to run from cron as often as wanted.

Late events (see kiki.billing.metering) for an already-invoiced period are billed on the next
invoice as adjustment lines (kiki.billing.late); those of a subscription that has ended are
not billed, and `late_unbilled` in the report counts them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import Field

from kiki.auth import Tenant
from kiki.billing import repository, webhooks
from kiki.billing.aggregation import MetricUsage, usage
from kiki.billing.catalog import BillableMetric, Coupon, FrozenModel, Plan, Wallet
from kiki.billing.invoice import (
    DraftInvoice,
    InvoiceLine,
    InvoiceStatus,
    base_fee_line,
    invoice_number,
    settle,
    transition,
    usage_lines,
)
from kiki.billing.late import late_lines
from kiki.billing.metering import StoredEvent, events_of, lock_key
from kiki.billing.models import Customer, Invoice, Subscription
from kiki.billing.periods import BillingPeriod
from kiki.billing.subscriptions import billing_since, current_period


class CloseReport(FrozenModel):
    as_of: datetime
    invoices: int = 0
    renewed: int = 0
    downgraded: int = 0
    ended: int = 0
    late_events: int = Field(0, description="late events billed as adjustments")
    late_unbilled: int = 0
    invoice_ids: tuple[UUID, ...] = ()


def invoice_prefix(tenant_name: str) -> str:
    """The tenant's invoice prefix: its name in upper-case letters and digits."""
    return re.sub(r"[^A-Z0-9]", "", tenant_name.upper())[:16] or "INV"


async def close_period(
    conn: asyncpg.Connection,
    tenant: Tenant,
    as_of: datetime,
    *,
    subscription_ids: Sequence[UUID] | None = None,
) -> CloseReport:
    """Invoice every period ended by `as_of` (of the given subscriptions, or all)."""
    report = CloseReport(as_of=as_of)
    async with conn.transaction():
        # Waits for ingests in flight; new ones wait for this commit (see metering).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock_key(tenant.id)
        )
        closed_at = await conn.fetchval("SELECT clock_timestamp()")
        catalog = await repository.metrics(conn, tenant.id)
        ids = None if subscription_ids is None else list(subscription_ids)
        while True:
            rows = await conn.fetch(
                f"""SELECT {repository.SUBSCRIPTION_COLUMNS} FROM billing_subscriptions
                    WHERE tenant_id = $1 AND status = 'active' AND period_end <= $2
                      AND ($3::uuid[] IS NULL OR id = ANY($3))
                    ORDER BY customer_id FOR UPDATE""",
                tenant.id,
                as_of,
                ids,
            )
            if not rows:
                return report
            batch = _Batch(conn, tenant, catalog, as_of, closed_at)
            report = await batch.close([Subscription(**dict(r)) for r in rows], report)


def period_lines(
    sub: Subscription,
    plan: Plan,
    period: BillingPeriod,
    used: Mapping[str, MetricUsage],
    next_plan: Plan | None = None,
) -> list[InvoiceLine]:
    """Usage and base fees of the period that ends: arrears fee for this period unless it
    was cut short (the cancellation's proration bills it), advance fee for the next (of the
    plan a downgrade switches to, when one is pending)."""
    lines = list(usage_lines(plan, used))
    if plan.base_fee_minor and not plan.pay_in_advance and sub.period_end >= period.end:
        lines.insert(0, base_fee_line(plan, period, bill_from=billing_since(sub)))
    following = next_plan or plan
    if not sub.cancel_at_period_end and following.pay_in_advance and following.base_fee_minor:
        bill_from = sub.trial_ends_at or period.end
        lines.append(base_fee_line(following, period.next(), bill_from=bill_from))
    return lines


class _Drafted(FrozenModel):
    sub: Subscription
    plan: Plan
    period: BillingPeriod
    draft: DraftInvoice
    coupons: tuple[str, ...]


class _Batch:
    """One pass over the subscriptions due: reads in bulk, computes, writes in bulk."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        tenant: Tenant,
        catalog: dict[str, BillableMetric],
        as_of: datetime,
        closed_at: datetime,
    ) -> None:
        self.conn, self.tenant, self.catalog = conn, tenant, catalog
        self.as_of, self.closed_at = as_of, closed_at

    async def close(self, subs: list[Subscription], report: CloseReport) -> CloseReport:
        conn, tid = self.conn, self.tenant.id
        keys = {(s.plan_code, s.plan_version) for s in subs} | {
            (s.pending_plan_code, s.pending_plan_version)
            for s in subs
            if s.pending_plan_code and s.pending_plan_version
        }
        self.plans = await repository.plans(conn, tid, keys)
        customer_ids = [s.customer_id for s in subs]
        self.customers = await self._customers(customer_ids)
        events = await events_of(
            conn, tid, customer_ids, min(s.period_start for s in subs),
            max(s.period_end for s in subs),
        )  # fmt: skip
        pending = await self._take_pending([s.id for s in subs])
        coupons = await self._coupons(customer_ids)
        late, late_counts = await late_lines(conn, tid, subs, self.plans, self.catalog)

        drafted = [
            self._draft(
                sub,
                events.get(sub.customer_id, []),
                [*pending[sub.id], *late[sub.id]],
                coupons[sub.customer_id],
            )
            for sub in subs
        ]
        invoices = await self._write_invoices(drafted)
        counts = await self._advance(drafted)
        await self._write_customers(drafted)
        await self._notify(invoices)
        return report.model_copy(
            update={
                "invoices": report.invoices + len(invoices),
                "renewed": report.renewed + counts["renewed"],
                "downgraded": report.downgraded + counts["downgraded"],
                "ended": report.ended + counts["ended"],
                "late_events": report.late_events + late_counts[0],
                "late_unbilled": report.late_unbilled + late_counts[1],
                "invoice_ids": (*report.invoice_ids, *(i.id for i in invoices)),
            }
        )

    def _draft(
        self,
        sub: Subscription,
        stored: list[StoredEvent],
        waiting: list[InvoiceLine],
        coupons: list[tuple[str, Coupon, int]],
    ) -> _Drafted:
        """The subscription's invoice, its customer's credit balance moved by it (in order:
        a customer's next subscription in the batch sees the balance this one left)."""
        plan = self.plans[(sub.plan_code, sub.plan_version)]
        period = current_period(sub, plan)
        customer = self.customers[sub.customer_id]
        lines = self._lines(sub, plan, period, stored)
        offered = [(code, c) for code, c, used in coupons if c.applies_in(used)]
        balance = customer.credit_balance_minor
        draft = settle(
            plan.currency,
            [*lines, *waiting],
            coupons=[c for _, c in offered],
            wallet=Wallet(balance_minor=balance, currency=plan.currency) if balance else None,
            tax_percent=customer.tax_percent,
        )
        left = balance - draft.credits_applied_minor + draft.credit_carried_minor
        self.customers[sub.customer_id] = customer.model_copy(update={"credit_balance_minor": left})
        codes = tuple(code for code, _ in offered)
        return _Drafted(sub=sub, plan=plan, period=period, draft=draft, coupons=codes)

    def _lines(
        self, sub: Subscription, plan: Plan, period: BillingPeriod, stored: list[StoredEvent]
    ) -> list[InvoiceLine]:
        mine = [s.event for s in stored if sub.started_at <= s.event.timestamp < sub.period_end]
        metrics = [self.catalog[c.metric_code] for c in plan.charges]
        return period_lines(sub, plan, period, usage(metrics, mine, period), self._next_plan(sub))

    def _next_plan(self, sub: Subscription) -> Plan | None:
        if sub.pending_plan_code and sub.pending_plan_version:
            return self.plans[(sub.pending_plan_code, sub.pending_plan_version)]
        return None

    async def _customers(self, customer_ids: list[str]) -> dict[str, Customer]:
        rows = await self.conn.fetch(
            f"""SELECT {repository.CUSTOMER_COLUMNS} FROM billing_customers
                WHERE tenant_id = $1 AND customer_id = ANY($2::text[]) FOR UPDATE""",
            self.tenant.id,
            customer_ids,
        )
        return {r["customer_id"]: Customer(**dict(r)) for r in rows}

    async def _take_pending(self, sub_ids: list[UUID]) -> dict[UUID, list[InvoiceLine]]:
        rows = await self.conn.fetch(
            """DELETE FROM billing_pending_lines WHERE subscription_id = ANY($1::uuid[])
               RETURNING id, subscription_id, line::text AS line""",
            sub_ids,
        )
        found: dict[UUID, list[InvoiceLine]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r["id"]):
            found[r["subscription_id"]].append(InvoiceLine.model_validate_json(r["line"]))
        return found

    async def _coupons(self, customer_ids: list[str]) -> dict[str, list[tuple[str, Coupon, int]]]:
        rows = await self.conn.fetch(
            """SELECT r.customer_id, r.coupon_code, r.invoices_discounted, c.spec::text AS spec
               FROM billing_coupon_redemptions r
               JOIN billing_coupons c ON c.tenant_id = r.tenant_id AND c.code = r.coupon_code
               WHERE r.tenant_id = $1 AND r.customer_id = ANY($2::text[])
               ORDER BY r.redeemed_at, r.coupon_code""",
            self.tenant.id,
            customer_ids,
        )
        found: dict[str, list[tuple[str, Coupon, int]]] = defaultdict(list)
        for r in rows:
            coupon = Coupon.model_validate_json(r["spec"])
            found[r["customer_id"]].append((r["coupon_code"], coupon, r["invoices_discounted"]))
        return found

    async def _write_invoices(self, drafted: list[_Drafted]) -> list[Invoice]:
        conn, tid = self.conn, self.tenant.id
        last = await conn.fetchval(
            """INSERT INTO billing_invoice_counters AS c (tenant_id, year, last_sequence)
               VALUES ($1, $2, $3) ON CONFLICT (tenant_id, year)
               DO UPDATE SET last_sequence = c.last_sequence + EXCLUDED.last_sequence
               RETURNING last_sequence""",
            tid,
            self.as_of.year,
            len(drafted),
        )
        prefix = invoice_prefix(self.tenant.name)
        invoices = []
        for n, d in enumerate(drafted, start=last - len(drafted) + 1):
            draft = d.draft
            status = transition(InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED)
            if draft.total_due_minor == 0:  # nothing to collect: settled at once, as Stripe does
                status = transition(status, InvoiceStatus.PAID)
            invoices.append(
                Invoice(
                    **dict(draft),
                    id=uuid.uuid4(),
                    customer_id=d.sub.customer_id,
                    subscription_id=d.sub.id,
                    number=invoice_number(prefix, self.as_of.year, n),
                    status=status,
                    plan_code=d.plan.code,
                    plan_version=d.plan.version,
                    period_start=d.period.start,
                    period_end=d.sub.period_end,
                    refunded_minor=0,
                    created_at=self.as_of,
                    finalized_at=self.as_of,
                    paid_at=self.as_of if status is InvoiceStatus.PAID else None,
                    voided_at=None,
                )
            )
        columns = [c.strip() for c in repository.INVOICE_COLUMNS.split(",")]
        await conn.copy_records_to_table(
            "billing_invoices",
            columns=[*columns, "tenant_id"],
            records=[(*_invoice_record(invoice, columns), tid) for invoice in invoices],
        )
        return invoices

    async def _advance(self, drafted: list[_Drafted]) -> dict[str, int]:
        """Next period for each subscription; downgrades and cancellations due take effect."""
        counts = {"renewed": 0, "downgraded": 0, "ended": 0}
        updates: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        for d in drafted:
            sub, period = d.sub, d.period
            nxt = period.next()
            plan = self._next_plan(sub) or d.plan
            if sub.cancel_at_period_end:
                counts["ended"] += 1
                updates.append((sub.id, "canceled", sub.period_index, sub.period_start,
                                sub.period_end, plan.code, plan.version, sub.plan_since,
                                sub.period_end))  # fmt: skip
                history.append((sub.id, None, None, sub.period_end))
                continue
            since = sub.plan_since
            if plan is not d.plan:
                counts["downgraded"] += 1
                since = period.end
                history.append((sub.id, plan.code, plan.version, period.end))
            counts["renewed"] += 1
            updates.append((sub.id, "active", nxt.index, nxt.start, nxt.end, plan.code,
                            plan.version, since, None))  # fmt: skip
        await self.conn.execute(
            """UPDATE billing_subscriptions s
               SET status = u.status, period_index = u.idx, period_start = u.ps,
                   period_end = u.pe, plan_code = u.pc, plan_version = u.pv, plan_since = u.since,
                   ended_at = u.ended, pending_plan_code = NULL, pending_plan_version = NULL,
                   last_closed_at = $1
               FROM unnest($2::uuid[], $3::text[], $4::integer[], $5::timestamptz[],
                           $6::timestamptz[], $7::text[], $8::integer[], $9::timestamptz[],
                           $10::timestamptz[]) AS u(id, status, idx, ps, pe, pc, pv, since, ended)
               WHERE s.id = u.id""",
            self.closed_at,
            *(list(column) for column in zip(*updates, strict=True)),
        )
        if history:
            await self.conn.executemany(
                """WITH ended AS (UPDATE billing_subscription_plans SET valid_to = $4
                                  WHERE subscription_id = $1 AND valid_to IS NULL)
                   INSERT INTO billing_subscription_plans
                       (subscription_id, tenant_id, plan_code, plan_version, valid_from)
                   SELECT $1, $5, $2, $3, $4 WHERE $2::text IS NOT NULL""",
                [(*h, self.tenant.id) for h in history],
            )
        return counts

    async def _write_customers(self, drafted: list[_Drafted]) -> None:
        ids = sorted({d.sub.customer_id for d in drafted})
        await self.conn.execute(
            """UPDATE billing_customers c SET credit_balance_minor = u.balance
               FROM unnest($2::text[], $3::bigint[]) AS u(customer_id, balance)
               WHERE c.tenant_id = $1 AND c.customer_id = u.customer_id
                 AND c.credit_balance_minor <> u.balance""",
            self.tenant.id,
            ids,
            [self.customers[i].credit_balance_minor for i in ids],
        )
        used = [(d.sub.customer_id, code) for d in drafted for code in d.coupons]
        if used:
            await self.conn.execute(
                """UPDATE billing_coupon_redemptions r
                   SET invoices_discounted = invoices_discounted + 1
                   FROM unnest($2::text[], $3::text[]) AS u(customer_id, code)
                   WHERE r.tenant_id = $1 AND r.customer_id = u.customer_id
                     AND r.coupon_code = u.code""",
                self.tenant.id,
                [u[0] for u in used],
                [u[1] for u in used],
            )

    async def _notify(self, invoices: list[Invoice]) -> None:
        if not await webhooks.has_endpoints(self.conn, self.tenant.id):
            return
        await webhooks.enqueue(
            self.conn, self.tenant.id, "invoice.finalized",
            [invoice_payload(i) for i in invoices], self.as_of,
        )  # fmt: skip
        paid = [invoice_payload(i) for i in invoices if i.status is InvoiceStatus.PAID]
        await webhooks.enqueue(self.conn, self.tenant.id, "invoice.paid", paid, self.as_of)


def invoice_payload(invoice: Invoice) -> dict[str, Any]:
    """An invoice as webhooks carry it: amounts in integer minor units with the currency."""
    return {**invoice.model_dump(mode="json"), "object": "invoice"}


def _invoice_record(invoice: Invoice, columns: list[str]) -> tuple[Any, ...]:
    values = dict(invoice)
    values["status"] = invoice.status.value
    values["lines"] = json.dumps([line.model_dump(mode="json") for line in invoice.lines])
    return tuple(values[c] for c in columns)
