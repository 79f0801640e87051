"""SyncShield's budget and reservation routes: each one command (or one batch) for the
budget shards that hold the campaigns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from deployments._serve import Admin, DecimalJSONRoute, MoneyOut, Reader, Writer, context_of
from deployments.shield.context import ShieldContext
from deployments.shield.schemas import (
    AllocateRequest,
    BatchItemError,
    BatchReserveRequest,
    BatchReserveResponse,
    BudgetUpdate,
    BudgetView,
    CampaignId,
    CheckRequest,
    CheckResponse,
    CommitRequest,
    Denial,
    KeyHeader,
    ReleaseRequest,
    ReserveRequest,
    ReserveResponse,
    SettleResponse,
    micros_or_none,
)
from kiki.errors import NotFound
from kiki.money import decimal_to_micros
from kiki.shield.book import BudgetOp, OpResult

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)
Context = Annotated[ShieldContext, Depends(context_of(ShieldContext))]


def _key(body_key: str | None, header_key: str | None, suffix: str = "") -> str | None:
    key = body_key or header_key
    return f"{key}{suffix}" if key else None


async def _one(ctx: ShieldContext, op: BudgetOp) -> OpResult:
    (result,) = await ctx.budgets.execute([op])
    result.raise_for_error()
    return result


def _reserve_view(result: OpResult) -> ReserveResponse:
    cur = result.currency or "USD"
    denial = Denial(rule=result.rule, message=result.message or "") if result.rule else None
    return ReserveResponse(
        campaign_id=result.campaign_id,
        status=result.outcome,
        reservation_id=result.reservation_id,
        granted=MoneyOut.of(result.amount_micros, cur),
        requested=MoneyOut.of(result.requested_micros, cur),
        denial=denial,
        replayed=result.replayed,
    )


def _reserve_op(tenant_id: str, body: ReserveRequest, key: str | None) -> BudgetOp:
    return BudgetOp(
        "reserve",
        tenant_id,
        body.campaign_id,
        key,
        amount_micros=decimal_to_micros(body.amount),
        platform=body.platform,
        bid_micros=micros_or_none(body.bid),
        allow_partial=body.allow_partial,
    )


def _settled(result: OpResult) -> SettleResponse:
    cur = result.currency or "USD"
    return SettleResponse(
        campaign_id=result.campaign_id,
        reservation_id=result.reservation_id or "",
        status=result.outcome,
        amount=MoneyOut.of(result.amount_micros, cur),
        over_delivered=MoneyOut.of(result.over_delivered_micros, cur),
        replayed=result.replayed,
    )


@router.post("/allocate", response_model=BudgetView, tags=["budgets"])
async def allocate(
    body: AllocateRequest, tenant: Admin, ctx: Context, idem: KeyHeader = None
) -> BudgetView:
    """Create a campaign's budget, or set its total budget (raise or lower). Lowering below
    what is already committed and reserved is refused (409)."""
    caps, policy = body.patches(body.budget)
    op = BudgetOp(
        "allocate",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        currency=body.currency.upper(),
        caps_patch=caps,
        policy_patch=policy,
    )
    return BudgetView.of((await _one(ctx, op)).snapshot or {})


@router.patch("/budget/{campaign_id}", response_model=BudgetView, tags=["budgets"])
async def update_budget(
    campaign_id: CampaignId,
    body: BudgetUpdate,
    tenant: Admin,
    ctx: Context,
    idem: KeyHeader = None,
) -> BudgetView:
    """Raise or lower caps, change schedule, platforms, bid range or status."""
    caps, policy = body.patches(body.budget)
    op = BudgetOp(
        "policy",
        str(tenant.id),
        campaign_id,
        _key(body.idempotency_key, idem),
        caps_patch=caps,
        policy_patch=policy,
    )
    return BudgetView.of((await _one(ctx, op)).snapshot or {})


@router.get("/budget/{campaign_id}", response_model=BudgetView, tags=["budgets"])
async def get_budget(campaign_id: CampaignId, tenant: Reader, ctx: Context) -> BudgetView:
    """Caps, committed and reserved spend, today's and each platform's use."""
    result = await _one(ctx, BudgetOp("status", str(tenant.id), campaign_id))
    return BudgetView.of(result.snapshot or {})


@router.get("/budgets", response_model=list[BudgetView], tags=["budgets"])
async def get_budgets(
    tenant: Reader,
    ctx: Context,
    campaign_id: Annotated[list[CampaignId], Query(min_length=1, max_length=200)],
) -> list[BudgetView]:
    """Several campaigns' budgets in one call (repeat `campaign_id`, up to 200), in the
    order asked; a campaign SyncShield does not hold is left out."""
    ops = [BudgetOp("status", str(tenant.id), c) for c in dict.fromkeys(campaign_id)]
    views = []
    for result in await ctx.budgets.execute(ops):
        try:
            result.raise_for_error()
        except NotFound:
            continue
        views.append(BudgetView.of(result.snapshot or {}))
    return views


@router.post("/budget/{campaign_id}/unblock", response_model=BudgetView, tags=["budgets"])
async def unblock(
    campaign_id: CampaignId, tenant: Admin, ctx: Context, idem: KeyHeader = None
) -> BudgetView:
    """Lift the block an over-delivery put on a campaign, once it has been reviewed."""
    result = await _one(ctx, BudgetOp("unblock", str(tenant.id), campaign_id, idem))
    return BudgetView.of(result.snapshot or {})


@router.post("/check", response_model=CheckResponse, tags=["budgets"])
async def check(body: CheckRequest, tenant: Reader, ctx: Context) -> CheckResponse:
    """Would this bid be allowed now? Every compliance rule and cap it breaks, none held."""
    op = BudgetOp(
        "check",
        str(tenant.id),
        body.campaign_id,
        platform=body.platform,
        bid_micros=decimal_to_micros(body.bid_amount),
    )
    result = await _one(ctx, op)
    cur = result.currency or "USD"
    return CheckResponse(
        campaign_id=body.campaign_id,
        platform=body.platform,
        allowed=not result.denials,
        bid=MoneyOut.of(decimal_to_micros(body.bid_amount), cur),
        headroom=MoneyOut.of(result.amount_micros, cur),
        denials=[Denial(rule=r, message=m) for r, m in result.denials],
    )


@router.post("/reserve", response_model=ReserveResponse, tags=["reservations"])
async def reserve(
    body: ReserveRequest, tenant: Writer, ctx: Context, idem: KeyHeader = None
) -> ReserveResponse:
    """Hold spend against every cap. Granted in full, partially (what is left), or denied
    with the rule that refused it; the same idempotency key always gets the first answer."""
    op = _reserve_op(str(tenant.id), body, _key(body.idempotency_key, idem))
    return _reserve_view(await _one(ctx, op))


@router.post("/reserve/batch", response_model=BatchReserveResponse, tags=["reservations"])
async def reserve_batch(
    body: BatchReserveRequest, tenant: Writer, ctx: Context, idem: KeyHeader = None
) -> BatchReserveResponse:
    """Many reservations in one call (one actor call per shard). With an Idempotency-Key
    header, item i without its own key uses `<header>:<i>`."""
    ops = [
        _reserve_op(str(tenant.id), r, _key(r.idempotency_key, idem, f":{i}"))
        for i, r in enumerate(body.reservations)
    ]
    results: list[ReserveResponse | BatchItemError] = []
    for result in await ctx.budgets.execute(ops):
        if result.outcome == "error":
            error = {"code": result.error_code or "error", "message": result.message or ""}
            results.append(BatchItemError(campaign_id=result.campaign_id, error=error))
        else:
            results.append(_reserve_view(result))
    return BatchReserveResponse(results=results)


@router.post("/commit", response_model=SettleResponse, tags=["reservations"])
async def commit(
    body: CommitRequest, tenant: Writer, ctx: Context, idem: KeyHeader = None
) -> SettleResponse:
    """Settle a reservation with the spend the platform reported. More than was reserved is
    recorded as over-delivery and blocks the campaign until it is unblocked."""
    op = BudgetOp(
        "commit",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        reservation_id=body.reservation_id,
        amount_micros=decimal_to_micros(body.actual_spend),
    )
    return _settled(await _one(ctx, op))


@router.post("/release", response_model=SettleResponse, tags=["reservations"])
async def release(
    body: ReleaseRequest, tenant: Writer, ctx: Context, idem: KeyHeader = None
) -> SettleResponse:
    """Give a reservation back unspent."""
    op = BudgetOp(
        "release",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        reservation_id=body.reservation_id,
    )
    return _settled(await _one(ctx, op))
