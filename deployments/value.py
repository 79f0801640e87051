"""SyncValue: customer lifetime value over HTTP (`/value`) and gRPC (`pb.LTVService`)."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from deployments.common import ServiceIngress, create_service_api, status_for
from kiki.errors import FailedPrecondition, KikiError
from protos import kiki_pb2

api = create_service_api(
    "value",
    "SyncValue",
    "Customer lifetime value: predicted spend, purchase probability and quantiles.",
)

NO_MODEL = "no LTV model is registered yet: train one with `kiki train ltv`"


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ValueIngress(ServiceIngress):
    service = "value"
    api = api

    async def _grpc_tenant(self, context: RayServegRPCContext):
        metadata = dict(context.invocation_metadata())
        return await self.runtime.tenant(metadata.get("x-api-key"))

    async def PredictLTV(
        self, request: kiki_pb2.PredictLTVRequest, grpc_context: RayServegRPCContext
    ) -> kiki_pb2.PredictLTVResponse:
        try:
            await self._grpc_tenant(grpc_context)
            raise FailedPrecondition(NO_MODEL)
        except KikiError as exc:
            grpc_context.set_code(status_for(exc)[1])
            grpc_context.set_details(exc.message)
            return kiki_pb2.PredictLTVResponse()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: RayServegRPCContext
    ) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1.Health/Check: SERVING when every health check passes."""
        report = await self.runtime.health()
        status = health_pb2.HealthCheckResponse.SERVING
        if report.status != "ok":
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


app = ValueIngress.bind()
