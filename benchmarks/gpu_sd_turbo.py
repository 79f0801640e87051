"""A prepared GPU check, for a machine with a CUDA GPU: an SD-Turbo-shaped pipeline (the SD 2.1
UNet, VAE and a 23-layer OpenCLIP-H-sized text encoder) with random weights, timed at 512x512
for 1 to 4 steps in fp16. Random weights cost the same arithmetic as trained ones, so the
latencies are SD-Turbo's; the images are noise.

    python3 -m benchmarks.gpu_sd_turbo --json /tmp/sd_turbo.json

Needs torch, diffusers and transformers only (not pydantic or Ray). On this project's lent
device machines torch and transformers are installed but diffusers is not: carry its wheel
(and importlib_metadata's) as /work/.library/device/README.md describes for Python packages.
Without CUDA it refuses to run; the construction and timing code is unit-tested on a CPU at a
tiny size (tests/unit/test_create_gpu_script.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kiki.create.pipeline import PipelineShape, build_random_pipeline

# stabilityai/sd-turbo: the SD 2.1 (512) architecture, Euler with trailing timesteps.
SD_TURBO_SHAPE = PipelineShape(
    unet_channels=(320, 640, 1280, 1280),
    unet_heads=(5, 10, 20, 20),  # diffusers' legacy `attention_head_dim`: heads of 64 dims
    unet_layers=2,
    cross_attention_dim=1024,
    sample_size=64,
    vae_channels=(128, 256, 512, 512),
    vae_layers=2,
    text_hidden=1024,
    text_layers=23,
    text_heads=16,
    text_intermediate=4096,
    text_vocab=49408,
    linear_projection=True,
)
PROMPT = "studio product shot of a laptop on a desk, soft light, advertisement"


def build(shape: PipelineShape, device: str, dtype: torch.dtype) -> Any:
    """The pipeline with random weights, created directly on `device` (fast on a GPU)."""
    pipe = build_random_pipeline(shape, device=device).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe: Any) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "text_encoder")
    }


@dataclass(frozen=True)
class Timing:
    steps: int
    batch: int
    size: int
    p50_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pipeline(
    pipe: Any,
    device: str,
    steps: list[int],
    size: int,
    batch: int,
    repeats: int,
    warmup: int,
) -> list[Timing]:
    """Wall time of whole calls (text encoder, UNet steps, VAE decode, PIL), per step count,
    after `warmup` untimed calls; guidance 0 as SD-Turbo is meant to run."""
    results = []
    for n in steps:
        generator = torch.Generator("cpu").manual_seed(0)
        samples = []
        for i in range(warmup + repeats):
            _sync(device)
            started = time.perf_counter()
            pipe(
                prompt=[PROMPT] * batch,
                width=size,
                height=size,
                num_inference_steps=n,
                guidance_scale=0.0,
                generator=generator,
                output_type="pil",
            )
            _sync(device)
            if i >= warmup:
                samples.append((time.perf_counter() - started) * 1000)
        p50 = statistics.median(samples)
        results.append(
            Timing(
                steps=n,
                batch=batch,
                size=size,
                p50_ms=round(p50, 2),
                min_ms=round(min(samples), 2),
                max_ms=round(max(samples), 2),
                images_per_s=round(batch * 1000 / p50, 2),
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,2,3,4", help="step counts, comma-separated")
    parser.add_argument("--batch", default="1,4", help="images per call, comma-separated")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this check times fp16 on a GPU; run it on a GPU machine")
        return 2
    device, dtype = "cuda", torch.float16
    started = time.perf_counter()
    pipe = build(SD_TURBO_SHAPE, device, dtype)
    build_s = time.perf_counter() - started
    counts = parameter_counts(pipe)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, fp16")
    print(
        f"built in {build_s:.1f}s; parameters: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    timings = []
    for batch in (int(b) for b in args.batch.split(",")):
        torch.cuda.reset_peak_memory_stats()
        found = time_pipeline(
            pipe,
            device,
            [int(s) for s in args.steps.split(",")],
            args.size,
            batch,
            args.repeats,
            args.warmup,
        )
        peak = torch.cuda.max_memory_allocated() / 2**30
        for t in found:
            print(
                f"{t.size}x{t.size} batch {t.batch} steps {t.steps}: p50 {t.p50_ms:8.1f} ms "
                f"(min {t.min_ms:.1f}, max {t.max_ms:.1f}), {t.images_per_s:6.2f} images/s, "
                f"peak {peak:.1f} GiB"
            )
        timings += found
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(
                {
                    "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "parameters": counts,
                    "build_s": round(build_s, 1),
                    "timings": [asdict(t) for t in timings],
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
