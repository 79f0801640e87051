"""`kiki bench create`: creatives per second and request latency through SyncCreate on Serve
(HTTP ingress -> generator replica -> PNGs on disk + rows in PostgreSQL), next to the same
`Studio.make` called directly in this process: the pipeline, fitting, copy, compliance and
PNG encoding with no Serve, no HTTP and no storage.

The model is whatever KIKI_CREATIVE_MODEL names, else the built-in placeholder (64 px).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks.common import Result, percentiles
from benchmarks.serving import BENCH_ENV, local_serve
from kiki.auth import create_api_key
from kiki.config import Settings, load_settings

PRODUCT = {"name": "CloudSync Pro", "features": ["Real-time sync", "Encryption"]}
BRAND = {"name": "TechCorp", "primary_colors": ["#3b82f6"]}


@dataclass(frozen=True)
class Load:
    placement: str
    variants: int
    steps: int
    requests: int
    concurrency: int
    threads: int  # torch threads, in this process and in the replica alike

    def body(self, seed: int) -> dict:
        return {
            "product": PRODUCT,
            "brand": BRAND,
            "variants": self.variants,
            "platform": self.placement,
            "steps": self.steps,
            "seed": seed,
        }


def _result(name: str, load: Load, latencies_ms: list[float], seconds: float, note: str) -> Result:
    p50, p99 = percentiles(latencies_ms)
    return Result(name, len(latencies_ms) * load.variants, seconds, p50, p99, note)


def direct(settings: Settings, load: Load) -> tuple[Result, str]:
    """`Studio.make` in this process, one request at a time; returns the result and a line
    describing the model."""
    import torch
    from threadpoolctl import threadpool_limits

    from kiki.create.brief import GenerateRequest, plan_variants
    from kiki.create.studio import Job, Studio

    # The replica runs with OMP_NUM_THREADS (torch, OpenBLAS) at load.threads: match it here,
    # or the baseline's extra threads fight over the same cores.
    torch.set_num_threads(load.threads)
    threadpool_limits(load.threads)
    studio = Studio.load(settings)
    latencies, generate_ms, finish_ms = [], [], []

    def once(seed: int) -> None:
        request = GenerateRequest.model_validate(load.body(seed))
        briefs = plan_variants(request)
        job = Job(
            request.placement,
            briefs,
            [seed + b.variant for b in briefs],
            request.brand.rules(),
            load.steps,
        )
        started = time.perf_counter()
        batch = studio.make(job)
        latencies.append((time.perf_counter() - started) * 1000)
        generate_ms.append(batch.generate_s * 1000)
        finish_ms.append(batch.finish_s * 1000)

    once(0)  # warm-up: first-call allocations and font loading
    for kept in (latencies, generate_ms, finish_ms):
        kept.clear()
    began = time.perf_counter()
    for i in range(load.requests):
        once(1000 + i * load.variants)
    elapsed = time.perf_counter() - began
    info = studio.pipeline.info
    model = (
        f"{info.pipeline_class} from {info.source} on {info.device} ({info.dtype}), "
        f"native {info.native_size} px" + (", placeholder weights" if info.placeholder else "")
    )
    note = (
        f"per request: generate {statistics.median(generate_ms):.0f} ms, fit + copy + "
        f"compliance + PNG {statistics.median(finish_ms):.0f} ms (medians)"
    )
    return _result("baseline: Studio.make in-process", load, latencies, elapsed, note), model


async def _http_load(url: str, key: str, load: Load) -> tuple[list[float], float]:
    latencies: list[float] = []
    seeds = iter(range(1000, 1000 + load.requests * load.variants, load.variants))
    async with httpx.AsyncClient(base_url=url, timeout=600, headers={"X-API-Key": key}) as client:
        warm = await client.post("/create/api/v1/generate", json=load.body(0))
        warm.raise_for_status()

        async def worker() -> None:
            for seed in seeds:
                started = time.perf_counter()
                resp = await client.post("/create/api/v1/generate", json=load.body(seed))
                resp.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        return latencies, time.perf_counter() - began


async def _new_key(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return (await create_api_key(conn, "bench-create"))[1]
    finally:
        await conn.close()


@contextmanager
def create_app(url: str, home: Path, ingress: str, threads: int) -> Iterator[str]:
    """The create app (ingress + one warm generator replica) on a local Serve."""
    from ray import serve

    from deployments.create.app import CreateIngress, CreativeGenerator

    env = {**BENCH_ENV, "KIKI_DATABASE_URL": url, "KIKI_HOME": str(home)}
    env["OMP_NUM_THREADS"] = str(threads)  # torch's thread count in the replica
    env |= {k: v for k, v in os.environ.items() if k.startswith(("KIKI_CREATIVE", "KIKI_IMAGE"))}
    options = {"num_cpus": 0.1, "runtime_env": {"env_vars": env}}
    with local_serve(ingress) as served:
        app = CreateIngress.options(ray_actor_options=options).bind(
            CreativeGenerator.options(
                ray_actor_options=options,
                autoscaling_config={"min_replicas": 1, "max_replicas": 1},
            ).bind()
        )
        serve.run(app, name="create", route_prefix="/create")
        yield served["http"]


def run(url: str, load: Load, ingress: str) -> tuple[Result, Result, str]:
    """(baseline, Serve, model description); the placeholder is built once and shared."""
    home = Path(tempfile.mkdtemp(prefix="kiki-bench-create-"))
    try:
        settings = load_settings().model_copy(update={"home": home})
        baseline, model = direct(settings, load)
        key = asyncio.run(_new_key(url))
        with create_app(url, home, ingress, load.threads) as served:
            latencies, elapsed = asyncio.run(_http_load(served, key, load))
        serve_result = _result(
            f"Serve: POST /create/api/v1/generate, {load.concurrency} client(s)",
            load,
            latencies,
            elapsed,
            "adds the text safety check, HTTP, the handle call, PNG files and PostgreSQL rows",
        )
        return baseline, serve_result, model
    finally:
        shutil.rmtree(home, ignore_errors=True)
