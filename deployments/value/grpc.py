"""SyncValue's gRPC face (`pb.LTVService`): requests to the use cases' models and back, and
domain errors to gRPC status codes. The methods themselves live on `ValueIngress`, where
Serve's gRPC proxy calls them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import TypeVar

from ray.serve.grpc_util import RayServegRPCContext

from deployments._serve import ServiceRuntime, status_for
from kiki.auth import Scope, Tenant
from kiki.errors import InvalidInput, KikiError, NotFound
from kiki.value.service import Customer, Prediction, PredictionError, ValueService
from protos import kiki_pb2
from protos.lenient import Undecodable

M = TypeVar("M")
R = TypeVar("R")


async def answer(
    runtime: ServiceRuntime, context: RayServegRPCContext, work: Callable[[Tenant], Awaitable[R]]
) -> R | None:
    """`work` for the caller's tenant (`x-api-key` metadata, `read` scope: every method reads);
    on a domain error or a bad request, None with the gRPC status and details set."""
    try:
        metadata = dict(context.invocation_metadata())
        grant = await runtime.grant(metadata.get("x-api-key"))
        return await work(grant.require(Scope.READ))
    except KikiError as exc:
        context.set_code(status_for(exc)[1])
        context.set_details(exc.message)
        return None
    except ValueError as exc:
        context.set_code(status_for(InvalidInput(""))[1])
        context.set_details(f"invalid request: {exc}")
        return None


def decoded(request: M | Undecodable) -> M:
    """The request, or InvalidInput when its bytes were not a valid message (protos.lenient)."""
    if isinstance(request, Undecodable):
        raise InvalidInput(
            f"the request is not a valid {request.message} ({request.reason}); send one "
            "serialized as protos/kiki.proto defines it"
        )
    return request


async def predict_ltv(
    value: ValueService, tenant: Tenant, request: kiki_pb2.PredictLTVRequest
) -> kiki_pb2.PredictLTVResponse:
    (found,) = await value.predict(tenant.id, [_customer(request)])
    if isinstance(found, PredictionError):
        raise NotFound(found.error["message"])
    return _response(found)


async def predict_ltv_batch(
    value: ValueService, tenant: Tenant, request: kiki_pb2.PredictLTVBatchRequest
) -> kiki_pb2.PredictLTVBatchResponse:
    if not 1 <= len(request.customers) <= 10_000:
        raise InvalidInput("send between 1 and 10,000 customers")
    customers = [_customer(c) for c in request.customers]
    answers = await value.predict(tenant.id, customers)
    return kiki_pb2.PredictLTVBatchResponse(
        predictions=[
            _response(a)
            if isinstance(a, Prediction)
            else kiki_pb2.PredictLTVResponse(customer_id=a.customer_id, error=a.error["message"])
            for a in answers
        ]
    )


def _customer(request: kiki_pb2.PredictLTVRequest) -> Customer:
    if not request.customer_id:
        raise InvalidInput("customer_id is required")
    as_of = date.fromisoformat(request.as_of) if request.as_of else None
    # The legacy request sends spend as a double; its shortest repr is what the caller typed.
    spend = Decimal(repr(request.spend)) if request.spend else None
    return Customer(
        customer_id=request.customer_id,
        spend=spend,
        as_of=as_of,
        engagement_score=request.engagement_score or None,
    )


def _response(p: Prediction) -> kiki_pb2.PredictLTVResponse:
    return kiki_pb2.PredictLTVResponse(
        customer_id=p.customer_id,
        ltv=p.ltv,
        ltv_micros=p.ltv_micros,
        p_purchase=p.p_purchase,
        ltv_p10=p.quantiles.p10,
        ltv_p50=p.quantiles.p50,
        ltv_p90=p.quantiles.p90,
        horizon_days=p.horizon_days,
        currency=p.currency,
        model_version=str(p.model_version),
    )
