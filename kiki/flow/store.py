"""SyncFlow's tables: campaigns (one validated spec per row) and the decision audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from uuid import UUID

import asyncpg

from kiki.errors import Conflict, NotFound
from kiki.flow.audit import COLUMNS
from kiki.flow.campaigns import Campaign, CampaignStatus
from kiki.flow.live import ReportMark


def _campaign(row: asyncpg.Record) -> Campaign:
    spec = json.loads(row["spec"])
    return Campaign.model_validate(
        {**spec, "tenant_id": str(row["tenant_id"]), "status": row["status"]}
    )


def _spec_json(campaign: Campaign) -> str:
    return campaign.model_dump_json(exclude={"tenant_id", "status"})


async def insert_campaign(
    conn: asyncpg.Connection, campaign: Campaign, simulation: bool = False
) -> Campaign:
    try:
        await conn.execute(
            """INSERT INTO flow_campaigns (tenant_id, campaign_id, status, spec, simulation)
               VALUES ($1, $2, $3, $4, $5)""",
            UUID(campaign.tenant_id),
            campaign.campaign_id,
            campaign.status.value,
            _spec_json(campaign),
            simulation,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"campaign {campaign.campaign_id} already exists; PATCH it or choose another id"
        ) from None
    return campaign


async def get_campaign(conn: asyncpg.Connection, tenant_id: str, campaign_id: str) -> Campaign:
    row = await conn.fetchrow(
        "SELECT * FROM flow_campaigns WHERE tenant_id = $1 AND campaign_id = $2",
        UUID(tenant_id),
        campaign_id,
    )
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return _campaign(row)


async def list_campaigns(
    conn: asyncpg.Connection, tenant_id: str, status: str | None, limit: int, after: str | None
) -> list[Campaign]:
    rows = await conn.fetch(
        """SELECT * FROM flow_campaigns
           WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR campaign_id > $3)
           ORDER BY campaign_id LIMIT $4""",
        UUID(tenant_id),
        status,
        after,
        limit,
    )
    return [_campaign(r) for r in rows]


async def save_campaign(conn: asyncpg.Connection, campaign: Campaign) -> Campaign:
    await conn.execute(
        """UPDATE flow_campaigns SET status = $3, spec = $4, updated_at = now()
           WHERE tenant_id = $1 AND campaign_id = $2""",
        UUID(campaign.tenant_id),
        campaign.campaign_id,
        campaign.status.value,
        _spec_json(campaign),
    )
    return campaign


async def running_campaigns(
    conn: asyncpg.Connection, simulation_tenant: str | None = None
) -> list[Campaign]:
    """Live campaigns, or with `simulation_tenant` that simulation's campaigns only."""
    rows = await conn.fetch(
        """SELECT * FROM flow_campaigns WHERE status = $1
           AND simulation = ($2::uuid IS NOT NULL)
           AND ($2::uuid IS NULL OR tenant_id = $2)""",
        CampaignStatus.RUNNING.value,
        UUID(simulation_tenant) if simulation_tenant else None,
    )
    return [_campaign(r) for r in rows]


async def stop_simulation(conn: asyncpg.Connection, tenant_id: str) -> None:
    await conn.execute(
        "UPDATE flow_campaigns SET status = 'stopped', updated_at = now() "
        "WHERE tenant_id = $1 AND simulation",
        UUID(tenant_id),
    )


async def copy_decisions(conn: asyncpg.Connection, rows: Iterable[tuple]) -> None:
    await conn.copy_records_to_table("flow_decisions", columns=COLUMNS, records=rows)


async def decisions(
    conn: asyncpg.Connection,
    tenant_id: str,
    campaign_id: str | None,
    since: datetime | None,
    limit: int,
) -> list[dict]:
    rows = await conn.fetch(
        f"""SELECT {", ".join(COLUMNS)} FROM flow_decisions
            WHERE tenant_id = $1 AND ($2::text IS NULL OR campaign_id = $2)
              AND ($3::timestamptz IS NULL OR decided_at >= $3)
            ORDER BY decided_at, tick_id, campaign_id, ad_group_id, platform LIMIT $4""",
        UUID(tenant_id),
        campaign_id,
        since,
        limit,
    )
    return [dict(r) for r in rows]


async def pacing(
    conn: asyncpg.Connection,
    tenant_id: str,
    campaign_id: str,
    after: datetime | None,
    limit: int,
) -> list[dict]:
    """A campaign's pacing, one point a tick, oldest first: when, its cumulative spend and
    its target curve (the same for every unit of the campaign in a tick), and per platform
    its spend so far and what it was granted for the tick (the same for every unit of the
    platform). The newest `limit` points after `after`."""
    rows = await conn.fetch(
        """SELECT decided_at, target_micros, spent_micros, platforms, reserved, platform_spent
           FROM (
               SELECT decided_at, max(target_micros) AS target_micros,
                      max(spent_micros) AS spent_micros,
                      array_agg(platform ORDER BY platform) AS platforms,
                      array_agg(reserved ORDER BY platform) AS reserved,
                      array_agg(platform_spent ORDER BY platform) AS platform_spent
               FROM (SELECT decided_at, target_micros, spent_micros, platform,
                            max(reserved_micros) AS reserved,
                            max(platform_spent_micros) AS platform_spent
                     FROM flow_decisions
                     WHERE tenant_id = $1 AND campaign_id = $2
                       AND ($3::timestamptz IS NULL OR decided_at > $3)
                     GROUP BY decided_at, target_micros, spent_micros, platform) per_platform
               GROUP BY decided_at ORDER BY decided_at DESC LIMIT $4) newest
           ORDER BY decided_at""",
        UUID(tenant_id),
        campaign_id,
        after,
        limit,
    )
    return [
        {
            "at": r["decided_at"],
            "target_micros": r["target_micros"],
            "spent_micros": r["spent_micros"],
            "reserved_micros": dict(zip(r["platforms"], r["reserved"], strict=True)),
            "platform_spent_micros": dict(zip(r["platforms"], r["platform_spent"], strict=True)),
        }
        for r in rows
    ]


async def latest_ticks(
    conn: asyncpg.Connection, tenant_id: str, campaign_ids: list[str]
) -> dict[str, tuple[int, int]]:
    """Per campaign with decisions: (target, cumulative spend) at its newest tick; one
    backward index scan each."""
    rows = await conn.fetch(
        """SELECT c.id, d.target_micros, d.spent_micros
           FROM unnest($2::text[]) AS c(id)
           CROSS JOIN LATERAL (
               SELECT target_micros, spent_micros FROM flow_decisions
               WHERE tenant_id = $1 AND campaign_id = c.id
               ORDER BY decided_at DESC LIMIT 1) d""",
        UUID(tenant_id),
        campaign_ids,
    )
    return {r["id"]: (r["target_micros"], r["spent_micros"]) for r in rows}


# --- the live market: persisted spend marks and pushed daily budgets ---------------------------


async def spend_marks(
    conn: asyncpg.Connection, since: date, tenant_id: str | None = None
) -> list[ReportMark]:
    """The report totals committed leases have charged, from `since` on (a shard's start)."""
    rows = await conn.fetch(
        """SELECT platform, ad_group_ref, day, spend_micros, clicks, conversions, value_micros
           FROM platform_spend_marks
           WHERE day >= $1 AND ($2::uuid IS NULL OR tenant_id = $2)""",
        since,
        UUID(tenant_id) if tenant_id else None,
    )
    return [
        (r["platform"], r["ad_group_ref"], r["day"].isoformat(), r["spend_micros"], r["clicks"],
         r["conversions"], r["value_micros"])
        for r in rows
    ]  # fmt: skip


async def record_budget_pushes(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    """Daily budgets a platform accepted: (tenant, campaign, platform, account, campaign ref,
    day, currency, budget micros)."""
    await conn.executemany(
        """INSERT INTO platform_budget_pushes AS p (tenant_id, campaign_id, platform,
               account_id, campaign_ref, day, currency, max_budget_micros, last_budget_micros)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
           ON CONFLICT (tenant_id, platform, account_id, campaign_ref, day) DO UPDATE SET
               max_budget_micros = GREATEST(p.max_budget_micros, EXCLUDED.max_budget_micros),
               last_budget_micros = EXCLUDED.last_budget_micros,
               pushes = p.pushes + 1, updated_at = now()""",
        [(UUID(r[0]), *r[1:]) for r in rows],
    )


async def paused_ad_groups(
    conn: asyncpg.Connection, tenant_id: str | None = None
) -> set[tuple[str, str, str]]:
    """(platform, account, ad group) the bid loop paused at their platform (a shard's start)."""
    rows = await conn.fetch(
        """SELECT platform, account_id, ad_group_ref FROM platform_paused_ad_groups
           WHERE $1::uuid IS NULL OR tenant_id = $1""",
        UUID(tenant_id) if tenant_id else None,
    )
    return {(r["platform"], r["account_id"], r["ad_group_ref"]) for r in rows}


async def record_paused(
    conn: asyncpg.Connection, paused: list[tuple], resumed: list[tuple[str, str, str]]
) -> None:
    """Ad groups paused at their platform: (tenant, campaign, platform, account, ad group);
    and those serving again: (platform, account, ad group)."""
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO platform_paused_ad_groups (tenant_id, campaign_id, platform,
                   account_id, ad_group_ref) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT DO NOTHING""",
            [(UUID(r[0]), *r[1:]) for r in paused],
        )
        await conn.executemany(
            """DELETE FROM platform_paused_ad_groups
               WHERE platform = $1 AND account_id = $2 AND ad_group_ref = $3""",
            resumed,
        )


async def charged_on(conn: asyncpg.Connection, day: date) -> list[asyncpg.Record]:
    """Per tenant, campaign and platform: the spend KIKI committed for the platforms' day."""
    return await conn.fetch(
        """SELECT tenant_id::text, campaign_id, platform, sum(spend_micros)::bigint AS micros
           FROM platform_spend_marks WHERE day = $1
           GROUP BY tenant_id, campaign_id, platform""",
        day,
    )


async def budgets_pushed_on(conn: asyncpg.Connection, day: date) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT tenant_id::text, campaign_id, platform, account_id, campaign_ref, currency,
                  max_budget_micros
           FROM platform_budget_pushes WHERE day = $1""",
        day,
    )


async def campaigns_with_refs(conn: asyncpg.Connection) -> list[Campaign]:
    """Every live-market campaign (any status): reconciliation covers stopped ones too."""
    rows = await conn.fetch("SELECT * FROM flow_campaigns WHERE NOT simulation")
    return [_campaign(r) for r in rows]
