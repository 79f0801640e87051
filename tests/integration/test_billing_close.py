"""Closing periods against PostgreSQL: invoices with exact totals, gapless numbers, renewal,
time zones, trials, upgrades with prorations, downgrades and cancellations, late events,
coupons and credits, outbound webhooks, and MRR analytics (a fresh database per test)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from cryptography.fernet import Fernet

from kiki.auth import Tenant, ensure_tenant
from kiki.billing import metering, payments, reports, repository, subscriptions
from kiki.billing.aggregation import Event
from kiki.billing.catalog import BillableMetric, Coupon, Plan
from kiki.billing.closing import close_period
from kiki.billing.invoice import InvoiceStatus, LineKind
from kiki.billing.models import CustomerIn
from kiki.billing.proration import ChangeKind
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.errors import Conflict, FailedPrecondition
from kiki.vault import Vault

JAN1 = datetime(2026, 1, 1, 9, tzinfo=UTC)
FEB1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR1 = datetime(2026, 3, 1, tzinfo=UTC)

Scenario = Callable[[asyncpg.Connection, Tenant], Awaitable[None]]


def run(url: str, scenario: Scenario) -> None:
    async def main() -> None:
        conn = await connect(url)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "acme")
            await catalog(conn, tenant)
            await scenario(conn, tenant)
        finally:
            await conn.close()

    asyncio.run(main())


def plan(code: str, fee: int, **extra: object) -> Plan:
    charges = [
        {"metric_code": "api_calls", "charge_model": "graduated", "tiers": [
            {"up_to": 1000}, {"up_to": None, "unit_price": "0.002"}]},
        {"metric_code": "storage_gb", "charge_model": "standard", "unit_price": "0.25"},
    ]  # fmt: skip
    return Plan.model_validate(
        {"code": code, "interval": "monthly", "currency": "USD", "base_fee_minor": fee,
         "charges": charges, **extra}
    )  # fmt: skip


async def catalog(conn: asyncpg.Connection, tenant: Tenant) -> None:
    await repository.create_metric(
        conn, tenant.id, BillableMetric(code="api_calls", aggregation="count")
    )
    await repository.create_metric(
        conn, tenant.id, BillableMetric(code="storage_gb", aggregation="max", field_name="gb")
    )
    for p in (plan("starter", 10_00), plan("pro", 50_00), plan("trial", 20_00, trial_days=14)):
        await repository.create_plan(conn, tenant.id, p)
    await repository.create_plan(conn, tenant.id, plan("annual_in_advance", 30_00,
                                                       pay_in_advance=True))  # fmt: skip


async def customer(
    conn: asyncpg.Connection, tenant: Tenant, cid: str, tz: str = "UTC", tax: str = "0"
) -> None:
    await repository.create_customer(
        conn, tenant.id, CustomerIn(customer_id=cid, timezone=tz, tax_percent=tax, currency="USD")
    )


def calls(cid: str, n: int, at: datetime, prefix: str = "c") -> list[Event]:
    return [
        Event(transaction_id=f"{prefix}-{cid}-{i}", customer=cid, metric_code="api_calls",
              timestamp=at + timedelta(seconds=i))
        for i in range(n)
    ]  # fmt: skip


def test_close_bills_usage_fee_and_tax_then_renews_with_gapless_numbers(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        await customer(conn, tenant, "alice", tax="8.875")
        await customer(conn, tenant, "bob")
        alice = await subscriptions.create(conn, tenant.id, "alice", "starter", None, JAN1)
        await subscriptions.create(conn, tenant.id, "bob", "pro", None, JAN1)
        await metering.ingest(conn, tenant.id, calls("alice", 1500, JAN1))
        storage = [
            Event(transaction_id=f"s{i}", customer="alice", metric_code="storage_gb",
                  timestamp=JAN1 + timedelta(days=i), properties={"gb": gb})
            for i, gb in enumerate(["3.5", 12, "7"])
        ]  # fmt: skip
        await metering.ingest(conn, tenant.id, storage)

        assert (await close_period(conn, tenant, JAN1 + timedelta(days=10))).invoices == 0
        report = await close_period(conn, tenant, FEB1)
        assert (report.invoices, report.renewed) == (2, 2)
        again = await close_period(conn, tenant, FEB1)
        assert again.invoices == 0  # closing twice never bills twice

        invoices = {i.customer_id: i for i in await repository.list_invoices(conn, tenant.id)}
        a = invoices["alice"]
        # 10.00 fee + 500 calls x 0.002 = 1.00 + max 12 GB x 0.25 = 3.00 -> 14.00; tax 8.875 %
        # = 1.2425 -> 1.24 (half up); total 15.24.
        assert [line.amount_minor for line in a.lines] == [10_00, 1_00, 3_00]
        assert (a.subtotal_minor, a.tax_minor, a.total_due_minor) == (14_00, 1_24, 15_24)
        assert a.status is InvoiceStatus.FINALIZED and a.currency == "USD"
        assert {i.number for i in invoices.values()} == {"ACME-2026-000001", "ACME-2026-000002"}

        renewed = await repository.get_subscription(conn, tenant.id, alice.id)
        assert renewed.period_index == 1
        assert (renewed.period_start, renewed.period_end) == (FEB1, MAR1)
        await close_period(conn, tenant, MAR1)
        numbers = sorted(i.number for i in await repository.list_invoices(conn, tenant.id))
        assert numbers == [f"ACME-2026-{n:06d}" for n in range(1, 5)]

    run(fresh_db, scenario)


def test_periods_follow_the_customer_time_zone(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        ny = ZoneInfo("America/New_York")
        await customer(conn, tenant, "nyc", tz="America/New_York")
        start = datetime(2026, 1, 15, 12, tzinfo=ny)
        sub = await subscriptions.create(conn, tenant.id, "nyc", "starter", None, start)
        assert sub.period_end == datetime(2026, 2, 15, tzinfo=ny)
        # 23:30 on Feb 14 in New York is Feb 15 in UTC: still the first period.
        late_evening = datetime(2026, 2, 14, 23, 30, tzinfo=ny)
        await metering.ingest(conn, tenant.id, calls("nyc", 1001, late_evening))
        assert (
            await close_period(conn, tenant, datetime(2026, 2, 15, 4, tzinfo=UTC))
        ).invoices == 0
        await close_period(conn, tenant, datetime(2026, 2, 15, 5, tzinfo=UTC))
        (invoice,) = await repository.list_invoices(conn, tenant.id)
        usage_line = invoice.lines[1]
        assert usage_line.units == 1001 and usage_line.amount_minor == 0  # 1 call x 0.002 -> 0

    run(fresh_db, scenario)


def test_upgrade_now_with_prorated_lines_downgrade_and_cancel_at_period_end(
    fresh_db: str,
) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        await customer(conn, tenant, "carol")
        sub = await subscriptions.create(conn, tenant.id, "carol", "starter", None, JAN1)
        with pytest.raises(Conflict, match="is a upgrade"):
            await subscriptions.change(
                conn,
                tenant.id,
                sub.id,
                "pro",
                None,
                datetime(2026, 1, 11, tzinfo=UTC),
                ChangeKind.DOWNGRADE,
            )
        # Jan 11 upgrade: 10 of 31 days used on starter (arrears) -> 10.00 x 10/31 = 3.23;
        # pro billed from Jan 11: 21 of 31 days -> 50.00 x 21/31 = 33.87.
        upgraded, change = await subscriptions.change(
            conn, tenant.id, sub.id, "pro", None, datetime(2026, 1, 11, tzinfo=UTC),
            ChangeKind.UPGRADE,
        )  # fmt: skip
        assert (change.days_remaining, change.used_old_minor) == (21, 3_23)
        assert upgraded.plan_code == "pro"
        downgraded, _ = await subscriptions.change(
            conn, tenant.id, sub.id, "starter", None, datetime(2026, 1, 20, tzinfo=UTC),
            ChangeKind.DOWNGRADE,
        )  # fmt: skip
        assert (downgraded.plan_code, downgraded.pending_plan_code) == ("pro", "starter")

        report = await close_period(conn, tenant, FEB1)
        assert report.downgraded == 1
        (jan,) = await repository.list_invoices(conn, tenant.id)
        amounts = {line.kind: line.amount_minor for line in jan.lines if line.amount_minor}
        assert amounts == {LineKind.BASE_FEE: 33_87, LineKind.PRORATION: 3_23}
        assert jan.total_due_minor == 37_10
        after = await repository.get_subscription(conn, tenant.id, sub.id)
        assert (after.plan_code, after.pending_plan_code, after.plan_since) == ("starter", None,
                                                                                 FEB1)  # fmt: skip

        await subscriptions.cancel_subscription(conn, tenant.id, sub.id, FEB1 + timedelta(days=3),
                                                immediately=False)  # fmt: skip
        report = await close_period(conn, tenant, MAR1)
        assert (report.ended, report.renewed) == (1, 0)
        ended = await repository.get_subscription(conn, tenant.id, sub.id)
        assert ended.status == "canceled" and ended.ended_at == MAR1
        with pytest.raises(FailedPrecondition, match="canceled"):
            await subscriptions.cancel_subscription(conn, tenant.id, sub.id, MAR1, immediately=True)

    run(fresh_db, scenario)


def test_immediate_cancel_bills_the_days_used_at_once(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        await customer(conn, tenant, "dan")
        sub = await subscriptions.create(conn, tenant.id, "dan", "pro", None, JAN1)
        at = datetime(2026, 1, 8, 12, tzinfo=UTC)
        await metering.ingest(conn, tenant.id, calls("dan", 1200, JAN1))
        await metering.ingest(conn, tenant.id, calls("dan", 50, at + timedelta(hours=1), "after"))
        canceled = await subscriptions.cancel_subscription(conn, tenant.id, sub.id, at,
                                                           immediately=True)  # fmt: skip
        report = await close_period(conn, tenant, at, subscription_ids=[canceled.id])
        assert report.ended == 1
        (final,) = await repository.list_invoices(conn, tenant.id)
        # 7 of 31 days of 50.00 -> 11.29; 1,200 calls before the cancel -> 200 x 0.002 = 0.40.
        assert final.total_due_minor == 11_29 + 40
        assert final.period_end == at

    run(fresh_db, scenario)


def test_trial_days_are_free_and_in_advance_fee_is_billed(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        await customer(conn, tenant, "erin")
        await customer(conn, tenant, "fay")
        await subscriptions.create(conn, tenant.id, "erin", "trial", None, JAN1)
        await subscriptions.create(conn, tenant.id, "fay", "annual_in_advance", None, JAN1)
        await close_period(conn, tenant, FEB1)
        invoices = {i.customer_id: i for i in await repository.list_invoices(conn, tenant.id)}
        # Trial to Jan 15 09:00: Jan 15 .. 31 = 17 of 31 days of 20.00 -> 10.97.
        assert invoices["erin"].lines[0].amount_minor == 10_97
        # In advance: January's fee (from creation) and February's, both on this invoice.
        fay = [line.amount_minor for line in invoices["fay"].lines if line.kind == "base_fee"]
        assert fay == [30_00, 30_00]

    run(fresh_db, scenario)


def test_late_events_become_adjustments_on_the_next_invoice(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        await customer(conn, tenant, "gus")
        await subscriptions.create(conn, tenant.id, "gus", "starter", None, JAN1)
        await metering.ingest(conn, tenant.id, calls("gus", 1100, JAN1))
        await close_period(conn, tenant, FEB1)
        (jan,) = await repository.list_invoices(conn, tenant.id)
        assert jan.lines[1].amount_minor == 20  # 100 calls over the free 1,000
        # 400 January calls arrive after January was invoiced; 10 February calls on time.
        await metering.ingest(conn, tenant.id, calls("gus", 400, JAN1 + timedelta(days=3), "late"))
        await metering.ingest(conn, tenant.id, calls("gus", 10, FEB1, "feb"))
        report = await close_period(conn, tenant, MAR1)
        assert report.late_events == 400
        unchanged = await repository.get_invoice(conn, tenant.id, jan.id)
        assert unchanged.total_due_minor == jan.total_due_minor
        feb = next(i for i in await repository.list_invoices(conn, tenant.id) if i.id != jan.id)
        (adjustment,) = [line for line in feb.lines if line.kind == LineKind.ADJUSTMENT]
        assert (adjustment.units, adjustment.amount_minor) == (400, 80)
        assert "2026-01-01 to 2026-02-01" in adjustment.description

    run(fresh_db, scenario)


def test_coupons_credits_and_outbound_webhooks(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        from kiki.billing import webhooks

        await customer(conn, tenant, "hal")
        await customer(conn, tenant, "ivy")
        await repository.create_coupon(conn, tenant.id, Coupon(code="half", percent_off=50))
        await repository.apply_coupon(conn, tenant.id, "hal", "half")
        await repository.add_credits(conn, tenant.id, "ivy", 60_00)
        await subscriptions.create(conn, tenant.id, "hal", "pro", None, JAN1)
        await subscriptions.create(conn, tenant.id, "ivy", "pro", None, JAN1)
        endpoint, secret = await webhooks.create_endpoint(
            conn,
            tenant.id,
            webhooks.EndpointIn(url="http://127.0.0.1:9/hook"),
            Vault(Fernet.generate_key(), "test"),
        )
        assert secret.startswith("whsec_") and endpoint.events is None
        await close_period(conn, tenant, FEB1)
        await close_period(conn, tenant, MAR1)
        by_customer: dict[str, list] = {}
        for i in sorted(await repository.list_invoices(conn, tenant.id), key=lambda i: i.number):
            by_customer.setdefault(i.customer_id, []).append(i)
        assert [i.total_due_minor for i in by_customer["hal"]] == [25_00, 50_00]  # once
        ivy = by_customer["ivy"]
        assert [(i.credits_applied_minor, i.total_due_minor) for i in ivy] == [
            (50_00, 0),
            (10_00, 40_00),
        ]
        assert ivy[0].status is InvoiceStatus.PAID  # nothing left to collect
        assert (await repository.get_customer(conn, tenant.id, "ivy")).credit_balance_minor == 0
        kinds = await conn.fetch(
            "SELECT event_type, count(*) FROM billing_webhook_deliveries GROUP BY 1 ORDER BY 1"
        )
        assert [tuple(k) for k in kinds] == [("invoice.finalized", 4), ("invoice.paid", 1)]

        voided = await payments.mark(conn, tenant.id, by_customer["hal"][1].id,
                                     InvoiceStatus.VOID, MAR1)  # fmt: skip
        assert voided.status is InvoiceStatus.VOID and voided.voided_at == MAR1
        with pytest.raises(FailedPrecondition, match="from void"):
            await payments.mark(conn, tenant.id, voided.id, InvoiceStatus.PAID, MAR1)

    run(fresh_db, scenario)


def test_mrr_movements_and_usage_series(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: Tenant) -> None:
        for cid in ("a", "b", "c"):
            await customer(conn, tenant, cid)
        december = datetime(2025, 12, 10, tzinfo=UTC)
        sa = await subscriptions.create(conn, tenant.id, "a", "starter", None, december)
        sb = await subscriptions.create(conn, tenant.id, "b", "pro", None, december)
        await subscriptions.change(
            conn,
            tenant.id,
            sa.id,
            "pro",
            None,
            datetime(2026, 1, 5, tzinfo=UTC),
            ChangeKind.UPGRADE,
        )
        await subscriptions.cancel_subscription(
            conn, tenant.id, sb.id, datetime(2026, 1, 6, tzinfo=UTC), immediately=True
        )
        await subscriptions.create(conn, tenant.id, "c", "starter", None, JAN1)
        (jan,) = await reports.mrr_report(conn, tenant.id, date(2026, 1, 1))
        m = jan.movements
        assert (m.starting_mrr, m.new, m.expansion, m.churned, m.ending_mrr) == (
            60_00, 10_00, 40_00, 50_00, 60_00)  # fmt: skip
        assert jan.net_revenue_retention_percent == Decimal("83.33")
        assert (jan.arr_minor, jan.arpu_minor, jan.paying_customers) == (720_00, 30_00, 2)

        await metering.ingest(conn, tenant.id, calls("c", 30, JAN1))
        await metering.ingest(conn, tenant.id, calls("c", 5, FEB1, "feb"))
        series = await reports.usage_series(conn, tenant.id, "api_calls", JAN1 - timedelta(days=1),
                                            MAR1, reports.Granularity.MONTH)  # fmt: skip
        assert [(p.start.month, p.events, p.quantity) for p in series] == [(1, 30, 30), (2, 5, 5)]

    run(fresh_db, scenario)
