"""The prepared GPU check (benchmarks/gpu_sd_turbo.py), exercised on a CPU: the full SD-Turbo
shape is checked on the meta device (no memory), and the build and timing code at a tiny size."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers and transformers read it

from dataclasses import replace

import pytest
import torch

from benchmarks import gpu_sd_turbo
from kiki.create.pipeline import PLACEHOLDER_SHAPE, build_random_pipeline


def test_the_shape_is_sd_turbos_parameter_for_parameter() -> None:
    pipe = build_random_pipeline(gpu_sd_turbo.SD_TURBO_SHAPE, device="meta")
    # The SD 2.1 UNet, the SD VAE, and OpenCLIP ViT-H's text tower cut to 23 layers.
    assert gpu_sd_turbo.parameter_counts(pipe) == {
        "unet": 865_910_724,
        "vae": 83_653_863,
        "text_encoder": 340_387_840,
    }
    assert pipe.scheduler.config.timestep_spacing == "trailing"


def test_build_and_timing_at_a_tiny_size() -> None:
    # The placeholder's sizes in SD-Turbo's layout: four blocks, linear projections.
    tiny = replace(
        PLACEHOLDER_SHAPE,
        unet_channels=(32, 32, 64, 64),
        unet_heads=(2, 2, 4, 4),
        sample_size=8,
        vae_channels=(32, 32, 32, 32),
        linear_projection=True,
    )
    pipe = gpu_sd_turbo.build(tiny, "cpu", torch.float32)
    assert pipe.unet.dtype == torch.float32 and pipe.unet.config.use_linear_projection
    timings = gpu_sd_turbo.time_pipeline(
        pipe, "cpu", steps=[1, 2], size=64, batch=2, repeats=1, warmup=0
    )
    assert [(t.steps, t.batch, t.size) for t in timings] == [(1, 2, 64), (2, 2, 64)]
    assert all(t.p50_ms > 0 and t.images_per_s > 0 for t in timings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_refuses_to_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_sd_turbo.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out
