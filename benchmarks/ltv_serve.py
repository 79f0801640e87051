"""`kiki bench ltv-serve`: LTV predictions over HTTP (single, batches of 1,000) and gRPC from
the value app on Ray Serve, next to the same FastAPI app and model on plain uvicorn.

Data: the CDNOW log in a scratch database; model: a small ZILN fit on it (quality is not the
point here, `kiki bench ltv` measures that); requests ask for CDNOW customers as of
1997-09-30, so each one reads that customer's history and computes features, as in
production.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from benchmarks.common import Result, percentiles
from benchmarks.http import Load
from benchmarks.serving import BENCH_ENV, actor_nodes, local_serve, on_worker, uvicorn_app
from kiki.artifacts import ArtifactStore
from kiki.auth import create_api_key
from kiki.gdpr import Suppressions
from kiki.value import drift, registry, transactions
from kiki.value.cdnow import load_cdnow
from kiki.value.features import FEATURE_NAMES
from kiki.value.training import examples
from kiki.value.ziln import ZILNConfig, train_ziln
from protos import kiki_pb2, kiki_pb2_grpc

AS_OF = date(1997, 9, 30)
CUSTOMERS = 23_570
ITEM = '{"customer_id":"%05d","as_of":"1997-09-30"}'
LOADS = (
    Load("HTTP single", "/api/v1/predict", ITEM, 1, CUSTOMERS),
    Load(
        "HTTP batch of 1,000",
        "/api/v1/predict",
        ITEM,
        1,
        CUSTOMERS,
        per_request=1000,
        wrapper="customers",
    ),
)


# The benchmark's tenant is new: nobody was erased, whatever the key.
NOBODY_ERASED = Suppressions(bytes(32))


async def prepare(url: str, folder: Path) -> str:
    """Load CDNOW, fit a small model, register and promote it; returns an API key."""
    frame = load_cdnow()
    rows = transactions.from_frame(frame, "cdnow-")
    fit = examples(frame, date(1997, 6, 30), 90)
    model = train_ziln(fit.features, fit.labels, ZILNConfig(hidden=(32,), max_epochs=5), seed=0)
    store = ArtifactStore(url=folder.parent.as_uri(), cache_dir=folder.parent / "cache")
    artifact_url = store.put_folder(model.save(folder), "ltv")
    reference = drift.profile(fit.features, model.predict(fit.features)["expected"])
    conn = await asyncpg.connect(url)
    try:
        tenant, key = await create_api_key(conn, "bench-value")
        async with conn.transaction():
            await transactions.insert(conn, tenant.id, rows, NOBODY_ERASED)
        record = await registry.register(
            conn,
            tenant.id,
            metrics={},
            feature_schema=list(FEATURE_NAMES),
            config={"currency": "USD"},
            calibration_end=date(1997, 6, 30),
            horizon_days=90,
            data_window={},
            artifact_url=artifact_url,
            reference={k: v.model_dump() for k, v in reference.items()},
        )
        await registry.promote(conn, tenant.id, record.version)
    finally:
        await conn.close()
    return key


@contextmanager
def value_servers(url: str, ingress: str, nodes: int = 1) -> Iterator[dict[str, Any]]:
    """The value app (ingress + batched scorer) on Serve, and on plain uvicorn. With `nodes`
    3: on the local 3-node cluster instead, the ingress on worker a and the scorer on worker
    b, so every prediction's scoring call crosses nodes (and no uvicorn: its baseline is the
    1-node run's). The model goes to a file:// artifact store every local node reads."""
    from ray import serve

    from deployments.value.app import LTVScorer, ValueIngress

    env = {**BENCH_ENV, "KIKI_DATABASE_URL": url}
    servicers = ["protos.lenient.add_LTVServiceServicer_to_server"]
    folder = Path(tempfile.mkdtemp(prefix="kiki-bench-model-"))
    with local_serve(ingress, servicers, nodes) as served:
        options = {"num_cpus": 0.1, "runtime_env": {"env_vars": env}}
        pinned = nodes > 1
        app = ValueIngress.options(
            max_ongoing_requests=256,
            ray_actor_options={**options, **(on_worker("a") if pinned else {})},
        ).bind(
            LTVScorer.options(
                max_ongoing_requests=256,
                ray_actor_options={**options, **(on_worker("b") if pinned else {})},
            ).bind()
        )
        serve.run(app, name="value", route_prefix="/value")
        key = asyncio.run(prepare(url, folder / "model"))
        servers = {
            "serve": served["http"],
            "grpc": served["grpc"],
            "key": key,
            "ingress": served["ingress"],
            "placement": {},
        }
        if pinned:
            where = actor_nodes("serve")
            servers["placement"] = {
                deployment: served["nodes"].get(node, node)
                for name, (node, _) in where.items()
                for deployment in ("ValueIngress", "LTVScorer")
                if f"#{deployment}#" in name
            }
            yield servers
        else:
            with uvicorn_app("deployments.value.app:api", env) as plain:
                yield {**servers, "plain": plain}


def grpc_load(target: str, key: str, seconds: float, concurrency: int = 32) -> Result:
    """PredictLTV calls from `concurrency` concurrent asyncio clients."""

    async def run() -> Result:
        latencies: list[float] = []
        metadata = (("application", "value"), ("x-api-key", key))
        deadline = time.perf_counter() + seconds
        async with grpc.aio.insecure_channel(target) as channel:
            stub = kiki_pb2_grpc.LTVServiceStub(channel)

            async def worker(seed: int) -> None:
                # A seeded simulation, not a secret: the standard generator is right.
                rng = random.Random(seed)  # nosec B311
                while time.perf_counter() < deadline:
                    request = kiki_pb2.PredictLTVRequest(
                        customer_id=f"{rng.randint(1, CUSTOMERS):05d}", as_of=AS_OF.isoformat()
                    )
                    started = time.perf_counter()
                    await stub.PredictLTV(request, metadata=metadata, timeout=30)
                    latencies.append((time.perf_counter() - started) * 1000)

            began = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            elapsed = time.perf_counter() - began
        p50, p99 = percentiles(latencies)
        return Result(
            f"gRPC PredictLTV, {concurrency} clients: Serve",
            len(latencies),
            elapsed,
            p50,
            p99,
            "one customer per call; the client is Python asyncio",
        )

    return asyncio.run(run())
