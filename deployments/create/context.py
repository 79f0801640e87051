"""What a SyncCreate replica works with: its options, the generator deployment's handle, the
creatives' files, and the generation metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import asyncpg
from fastapi import Depends
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import field_validator
from ray.serve.handle import DeploymentHandle
from ray.util import metrics

from actors.resilience import within
from deployments._serve import AppArgs, UsageMeter, context_of
from kiki.config import Settings
from kiki.create import store
from kiki.create.studio import Batch, Job

GENERATION_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


def _setting(name: str) -> Any:
    """The KIKI_* setting's field (default, bounds, description): one definition for both."""
    return copy(Settings.model_fields[name])


class CreateArgs(AppArgs):
    """SyncCreate's options (serve_config.yaml `args:`); a local run takes them from the
    KIKI_* settings of the same names."""

    settings_fields: ClassVar[dict[str, str]] = {
        name: name
        for name in (
            "creative_model",
            "creative_steps",
            "creative_guidance",
            "creative_resolution",
            "image_safety_model",
            "image_safety_threshold",
            "creative_timeout_s",
        )
    }

    creative_model: Path | None = _setting("creative_model")
    creative_steps: int = _setting("creative_steps")
    creative_guidance: float = _setting("creative_guidance")
    creative_resolution: int | None = _setting("creative_resolution")
    image_safety_model: Path | None = _setting("image_safety_model")
    image_safety_threshold: float = _setting("image_safety_threshold")
    creative_timeout_s: float = _setting("creative_timeout_s")

    @field_validator("creative_model", "image_safety_model", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class CreateMetrics:
    """Generation latency, queue depth and images generated, recorded twice: in this
    replica's own prometheus_client registry (served at /create/metrics) and through Ray's
    metrics agent (`ray_kiki_create_*` on Ray's Prometheus port, summed over replicas)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "kiki_create_generation_seconds",
            "time from handing a request to the generator to its answer",
            ["placement"],
            buckets=GENERATION_BUCKETS_S,
            registry=self.registry,
        )
        self.queue = Gauge(
            "kiki_create_queue_depth",
            "generate requests waiting for or running on the generator",
            registry=self.registry,
        )
        self.images = Counter(
            "kiki_create_images_generated",
            "creatives generated and returned",
            ["placement", "placeholder"],
            registry=self.registry,
        )
        self.withheld = Counter(
            "kiki_create_images_withheld",
            "generated images withheld by the image-safety check",
            ["placement"],
            registry=self.registry,
        )
        self.ray_latency = metrics.Histogram(
            "kiki_create_generation_seconds",
            description="time from handing a request to the generator to its answer",
            boundaries=list(GENERATION_BUCKETS_S),
            tag_keys=("placement",),
        )
        self.ray_queue = metrics.Gauge(
            "kiki_create_queue_depth",
            description="generate requests waiting for or running on the generator",
        )
        self.ray_images = metrics.Counter(
            "kiki_create_images_generated",
            description="creatives generated and returned",
            tag_keys=("placement", "placeholder"),
        )
        self.ray_withheld = metrics.Counter(
            "kiki_create_images_withheld",
            description="generated images withheld by the image-safety check",
            tag_keys=("placement",),
        )
        self._in_flight = 0

    @contextmanager
    def generating(self, placement: str) -> Iterator[None]:
        self._in_flight += 1
        self.queue.set(self._in_flight)
        self.ray_queue.set(self._in_flight)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._in_flight -= 1
            self.queue.set(self._in_flight)
            self.ray_queue.set(self._in_flight)
            elapsed = time.perf_counter() - started
            self.latency.labels(placement).observe(elapsed)
            self.ray_latency.observe(elapsed, tags={"placement": placement})

    def count(self, batch: Batch, placement: str) -> None:
        placeholder = str(batch.model.placeholder).lower()
        if batch.creatives:
            self.images.labels(placement, placeholder).inc(len(batch.creatives))
            self.ray_images.inc(
                len(batch.creatives), tags={"placement": placement, "placeholder": placeholder}
            )
        if batch.withheld:
            self.withheld.labels(placement).inc(len(batch.withheld))
            self.ray_withheld.inc(len(batch.withheld), tags={"placement": placement})


@dataclass(frozen=True)
class CreateContext:
    """Made by CreateIngress around the generator's handle: there is no generator without
    Serve."""

    args: CreateArgs
    generator: DeploymentHandle
    files: store.CreativeFiles
    metrics: CreateMetrics
    pool: Callable[[], Awaitable[asyncpg.Pool]]
    creatives_generated: UsageMeter  # billable, reported to Billing

    async def generate(self, job: Job) -> Batch:
        """One batch on the generator, within the deadline, timed and counted."""
        placement = job.placement.name
        with self.metrics.generating(placement):
            batch: Batch = await within(
                self.generator.make.remote(job),
                self.args.creative_timeout_s,
                "the creative generator",
            )
        self.metrics.count(batch, placement)
        return batch


# The routes' dependency: one function, so a test can stand in for it.
create_context = context_of(CreateContext)
Context = Annotated[CreateContext, Depends(create_context)]
