"""`kiki engage crm ...` and `kiki engage rules ...` against a fresh database: a PostgreSQL
CRM source added from a JSON file (its URL stored encrypted), listed masked, synced with a
summary (incrementally, then --full), and retention rules added, listed, run dry and for
real, and deleted; bad input is one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from pathlib import Path

import asyncpg
import pandas as pd
import pytest
from click.testing import CliRunner

from kiki.auth import ensure_tenant
from kiki.db.pool import connect
from kiki.vault import is_token
from launcher.cli import main
from tests.integration.test_engage_api import purchases_and_churn_model
from tests.integration.test_engage_crm_sync import CRM_SCHEMA
from tests.unit.test_engage_churn import END

CRM = (
    "CREATE SCHEMA crm;"
    + CRM_SCHEMA
    + """
    INSERT INTO crm.people VALUES (1, 'ann@example.com', '+14155550100', 'Ann', '2026-02-01Z'),
                                  (2, 'bo@example.com', NULL, 'Bo', '2026-02-02Z');
    INSERT INTO crm.sales VALUES (10, 1, '2026-01-15Z', 12.30, 'USD', '2026-02-03Z'),
                                 (11, 7, '2026-01-16Z', 1.00, 'USD', '2026-02-03Z');"""
)


async def sql(url: str, text: str) -> object:
    """One query's value, or (several statements) None."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(text) if ";" not in text else await conn.execute(text)
    finally:
        await conn.close()


@pytest.fixture
def kiki(fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    monkeypatch.setenv("KIKI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KIKI_SECRET_KEY", raising=False)
    asyncio.run(sql(fresh_db, CRM))
    return CliRunner()


def test_crm_sources_and_sync(kiki: CliRunner, fresh_db: str, tmp_path: Path) -> None:
    def ok(*args: str) -> str:
        done = kiki.invoke(main, ["engage", "crm", *args])
        assert done.exit_code == 0, done.output
        return done.output

    assert "no CRM sources yet" in ok("sources")
    settings = tmp_path / "pg.json"
    settings.write_text(json.dumps({"url": fresh_db, "contacts_table": "wrong.people"}))
    out = ok("add-source", "postgres", "--config", str(settings),
             "--contacts-table", "crm.people", "--orders-table", "crm.sales")  # fmt: skip
    assert "postgres CRM source saved (enabled): contacts_table=crm.people" in out
    assert "url=***" in out and fresh_db not in out
    stored = json.loads(str(asyncio.run(sql(fresh_db, "SELECT config FROM engage_crm_sources"))))
    assert is_token(stored["url"])
    key = tmp_path / "home" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    listed = ok("sources")
    assert "postgres   yes" in listed and "url=***" in listed and fresh_db not in listed

    first = ok("sync")
    assert "postgres: contacts 2 read, 2 upserted (2 new, 0 merged by email, 0 updated), 0 " \
           "suppressed (erased), cursor 2026-02-02T00:00:00+00:00" in first  # fmt: skip
    assert "orders 2 read, 1 new, 0 already loaded, 1 unmatched" in first
    again = ok("sync", "postgres")  # inclusive cursors: the newest of each kind again
    assert "contacts 1 read, 1 upserted (0 new, 0 merged by email, 1 updated)" in again
    assert "orders 2 read, 0 new, 1 already loaded, 1 unmatched" in again
    full = ok("sync", "postgres", "--full")
    assert "contacts 2 read" in full and "orders 2 read, 0 new" in full
    assert "2026-02-03T00:00:00+00:00" in ok("sources")  # the orders cursor

    bad = kiki.invoke(main, ["engage", "crm", "add-source", "hubspot", "--base-url", "ftp://x"])
    assert bad.exit_code == 2
    assert "kiki: error: hubspot settings: base_url: Value error, base_url must start" in bad.output
    assert "access_token: Field required" in bad.output
    wrong = kiki.invoke(main, ["engage", "crm", "add-source", "postgres", "--url", fresh_db,
                               "--access-token", "t"])  # fmt: skip
    assert wrong.exit_code == 2
    assert "postgres settings: access_token: Extra inputs are not permitted" in wrong.output
    missing = kiki.invoke(main, ["engage", "crm", "sync", "hubspot"])
    assert missing.exit_code == 1
    assert "no hubspot CRM source configured" in missing.output
    assert "Traceback" not in missing.output


def test_retention_rules(kiki: CliRunner, fresh_db: str, tmp_path: Path) -> None:
    def invoke(*args: str) -> tuple[int, str]:
        done = kiki.invoke(main, ["engage", "rules", *args])
        return done.exit_code, done.output

    assert "no retention rules yet" in invoke("list")[1]
    code, out = invoke("add", "wb", "--name", "Win back", "--channel", "in_app",
                       "--template", "win_back", "--min-churn-risk", "0.8")  # fmt: skip
    assert code == 0, out
    assert "churn risk >= 0.8 -> win_back by in_app, at most once per 30 days" in out
    assert (
        invoke("add", "wb", "--name", "x", "--channel", "in_app", "--template", "win_back")[0] == 1
    )
    code, out = invoke("add", "w2", "--name", "x", "--channel", "fax", "--template", "nope")
    assert code == 2 and "rule w2: channel: Input should be" in out and "unknown template" in out
    assert invoke("add", "Bad Id", "--name", "x")[0] == 2
    rule = tmp_path / "vip.json"
    rule.write_text(json.dumps({"name": "VIP", "channel": "email", "template": "vip_thanks",
                                "min_ltv": "500", "period_days": 7}))  # fmt: skip
    code, out = invoke("add", "vip", "--file", str(rule), "--min-ltv", "250.5", "--disabled")
    assert code == 0, out
    assert "churn risk >= 0.7 and LTV >= 250.5 -> vip_thanks by email, at most once per 7 days " \
           "(disabled)" in out  # fmt: skip
    assert "wb  Win back: churn risk >= 0.8" in invoke("list")[1]

    code, out = invoke("run", "--dry-run")
    assert code == 1 and "kiki: error: rules: no churn model is in production" in out

    async def seed() -> None:
        conn = await connect(fresh_db)
        try:
            await purchases_and_churn_model(conn, (await ensure_tenant(conn, "dev")).id, tmp_path)
        finally:
            await conn.close()

    asyncio.run(seed())
    day = END.date().isoformat()
    code, out = invoke("run", "--dry-run", "--as-of", day)
    assert code == 0, out
    head = re.search(
        rf"rule wb as of {day}: win_back by in_app, (\d+) would send, (\d+) picked", out
    )
    assert head and int(head[1]) == int(head[2]) > 0, out
    picked = re.findall(r"^  (\S+)\s+risk (\d\.\d+) .*would_send$", out, re.MULTILINE)
    assert len(picked) == int(head[1]) and all(float(risk) >= 0.8 for _, risk in picked)
    assert asyncio.run(sql(fresh_db, "SELECT count(*) FROM engage_messages")) == 0
    code, out = invoke("run", "wb", "--as-of", day)
    assert code == 0 and f"{head[1]} sent, {head[1]} picked" in out, out
    code, out = invoke("run", "--as-of", (END + pd.Timedelta(days=1)).date().isoformat())
    assert code == 0 and "already_sent" in out and " 0 sent" in out, out
    assert asyncio.run(sql(fresh_db, "SELECT count(*) FROM engage_messages")) == int(head[1])

    assert invoke("delete", "wb") == (0, "retention rule wb deleted\n")
    code, out = invoke("delete", "wb")
    assert code == 1 and "no retention rule wb" in out
    code, out = invoke("run", "nope")
    assert code == 1 and "rules: no retention rule nope" in out
