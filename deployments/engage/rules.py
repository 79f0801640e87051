"""SyncEngage's retention rules: stored, run by the automation actor on its schedule, or run
now (dry by default)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from deployments._serve import Connection, DecimalJSONRoute, Reader, Writer
from deployments.engage.context import Context
from deployments.engage.schemas import AsOf, RuleCreate, RulePath
from kiki.engage import retention
from kiki.engage.service import today

router = APIRouter(prefix="/api/v1/rules", route_class=DecimalJSONRoute, tags=["retention"])


@router.post("", status_code=201, response_model=retention.Rule)
async def create_rule(body: RuleCreate, tenant: Writer, conn: Connection) -> retention.Rule:
    """Store a retention rule; the engage actor runs the enabled ones on its schedule."""
    rule = retention.RuleIn(**body.model_dump(exclude={"rule_id"}))
    return await retention.create(conn, tenant.id, body.rule_id, rule)


@router.get("", response_model=list[retention.Rule])
async def list_rules(tenant: Reader, conn: Connection) -> list[retention.Rule]:
    return await retention.list_rules(conn, tenant.id)


@router.get("/{rule_id}", response_model=retention.Rule)
async def get_rule(rule_id: RulePath, tenant: Reader, conn: Connection) -> retention.Rule:
    return await retention.get(conn, tenant.id, rule_id)


@router.put("/{rule_id}", response_model=retention.Rule)
async def put_rule(
    rule_id: RulePath, body: retention.RuleIn, tenant: Writer, conn: Connection
) -> retention.Rule:
    return await retention.replace(conn, tenant.id, rule_id, body)


@router.delete("/{rule_id}", status_code=204)
async def delete_rule(rule_id: RulePath, tenant: Writer, conn: Connection) -> None:
    await retention.delete(conn, tenant.id, rule_id)


@router.post("/{rule_id}/run", response_model=retention.RunResult)
async def run_rule(
    rule_id: RulePath,
    tenant: Writer,
    ctx: Context,
    dry_run: Annotated[bool, Query(description="list who would get what; send nothing")] = True,
    as_of: AsOf = None,
) -> retention.RunResult:
    """Run a rule now. A customer gets a rule's message at most once per period, so running
    it again (or the actor running it) sends nothing new within the period."""
    return await ctx.service.run_rule(tenant.id, rule_id, as_of or today(), dry_run=dry_run)
