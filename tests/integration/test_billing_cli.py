"""`kiki billing close-period` and `kiki billing report` against a fresh database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from kiki.auth import ensure_tenant
from kiki.billing import repository, subscriptions
from kiki.billing.catalog import Plan
from kiki.billing.models import CustomerIn
from kiki.db import migrate
from kiki.db.pool import connect
from launcher.cli import main


async def seed(url: str) -> None:
    conn = await connect(url)
    try:
        await migrate.migrate(conn, migrate.discover())
        tenant = await ensure_tenant(conn, "acme")
        plan = Plan(code="basic", interval="yearly", currency="JPY", base_fee_minor=120_000)
        await repository.create_plan(conn, tenant.id, plan)
        await repository.create_customer(
            conn, tenant.id, CustomerIn(customer_id="kyoto", currency="JPY", timezone="Asia/Tokyo")
        )
        start = datetime(2025, 1, 31, 16, tzinfo=UTC)  # Feb 1, 01:00 in Tokyo
        await subscriptions.create(conn, tenant.id, "kyoto", "basic", None, start)
    finally:
        await conn.close()


def test_close_period_and_report(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    monkeypatch.delenv("KIKI_STRIPE_API_KEY", raising=False)
    asyncio.run(seed(fresh_db))
    runner = CliRunner()

    early = runner.invoke(main, ["billing", "close-period", "--as-of", "2026-01-30"])
    assert early.exit_code == 0, early.output
    assert "nothing to close" in early.output
    # Tokyo's Feb 1 starts on Jan 31 at 15:00 UTC: the end of Jan 31 (UTC) closes the year.
    closed = runner.invoke(main, ["billing", "close-period", "--as-of", "2026-01-31"])
    assert closed.exit_code == 0, closed.output
    assert "acme: 1 invoices (1 renewed, 0 downgraded, 0 ended" in closed.output
    assert "neither KIKI_STRIPE_API_KEY nor KIKI_PAYPAL_CLIENT_ID/_SECRET is set" in closed.output

    report = runner.invoke(main, ["billing", "report", "--tenant", "acme", "--month", "2026-01"])
    assert report.exit_code == 0, report.output
    assert "2026-01 JPY: MRR 10,000 JPY, ARR 120,000 JPY" in report.output
    issued = runner.invoke(main, ["billing", "report", "--tenant", "acme", "--month", "2026-02"])
    assert "invoices finalized: 1, 120,000 JPY" in issued.output  # issued at Feb 1, 00:00 UTC
    as_json = runner.invoke(main, ["billing", "report", "--tenant", "acme", "--month",
                                   "2026-01", "--json"])  # fmt: skip
    (revenue,) = json.loads(as_json.output)["revenue"]
    assert (revenue["mrr_minor"], revenue["net_revenue_retention_percent"]) == (10_000, "100.00")
    bad = runner.invoke(main, ["billing", "report", "--month", "2026/01"])
    assert bad.exit_code == 2 and "is not YYYY-MM" in bad.output
