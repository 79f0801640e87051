"""SyncValue's scoring routes: predictions for one customer or many, and the purchases they
are computed from."""

from __future__ import annotations

from fastapi import APIRouter

from deployments._serve import Connection, DecimalJSONRoute, Reader, Suppressing, Writer
from deployments.value.context import Context
from deployments.value.schemas import (
    CustomerBatch,
    Predictions,
    TransactionBatch,
    TransactionsLoaded,
)
from kiki.errors import NotFound
from kiki.value import transactions
from kiki.value.service import Customer, Prediction, PredictionError

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


@router.post("/predict", response_model=Prediction | Predictions, tags=["predictions"])
async def predict(
    body: Customer | CustomerBatch, tenant: Reader, ctx: Context
) -> Prediction | Predictions:
    """Value one customer (`{"customer_id": ...}`) or many (`{"customers": [...]}`)."""
    customers = body.customers if isinstance(body, CustomerBatch) else [body]
    answers = await ctx.value.predict(tenant.id, customers)
    if isinstance(body, CustomerBatch):
        return Predictions(predictions=answers)
    (answer,) = answers
    if isinstance(answer, PredictionError):
        raise NotFound(answer.error["message"])
    return answer


@router.post("/transactions", response_model=TransactionsLoaded, status_code=201, tags=["data"])
async def post_transactions(
    body: TransactionBatch, tenant: Writer, conn: Connection, suppressions: Suppressing
) -> TransactionsLoaded:
    """Load purchases; an order_id already loaded is skipped, so retries are safe. Purchases
    of a customer erased at their request are dropped and counted in `suppressed`."""
    rows = [transactions.Transaction.of(t) for t in body.transactions]
    async with conn.transaction():
        loaded = await transactions.insert(conn, tenant.id, rows, suppressions)
    return TransactionsLoaded(
        received=len(rows),
        inserted=loaded.inserted,
        duplicates=len(rows) - loaded.inserted - loaded.suppressed,
        suppressed=loaded.suppressed,
    )
