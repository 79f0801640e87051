"""The text-to-image pipeline behind SyncCreate, loaded only from local folders.

A configured `KIKI_CREATIVE_MODEL` is any diffusers text-to-image folder (SD 1.5, SD-Turbo,
SDXL-Turbo) saved by `save_pretrained`. Without one, a small pipeline with random weights is
built in code (UNet, VAE, CLIP text model and a byte-level tokenizer), saved under KIKI_HOME
and loaded back through the same `from_pretrained` path, so the whole service runs offline on
a CPU; its images are noise-like placeholders and every answer says so.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoPipelineForText2Image,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from kiki.create.model import PipelineInfo
from kiki.errors import ConfigError

if TYPE_CHECKING:  # only a type here: the GPU benchmark imports this module without pydantic
    from kiki.config import Settings

logger = logging.getLogger("kiki.create")

# Bump when the built-in pipeline's shape changes, so an old saved copy is not reused.
PLACEHOLDER_FOLDER = "creative-placeholder-v1"


@dataclass(frozen=True)
class PipelineShape:
    """The sizes of a Stable-Diffusion-style pipeline built from configs."""

    unet_channels: tuple[int, ...]
    unet_heads: tuple[int, ...]
    unet_layers: int
    cross_attention_dim: int
    sample_size: int  # latent side; pixels = sample_size * 2 ** (len(vae_channels) - 1)
    vae_channels: tuple[int, ...]
    vae_layers: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    text_vocab: int  # at least the tokenizer's 514 byte-level tokens
    linear_projection: bool = False


# NOTES.md: about 6.5 MB on disk, 64x64 in a fraction of a second on a CPU.
PLACEHOLDER_SHAPE = PipelineShape(
    unet_channels=(32, 64),
    unet_heads=(2, 4),
    unet_layers=1,
    cross_attention_dim=32,
    sample_size=32,
    vae_channels=(32, 64),
    vae_layers=1,
    text_hidden=32,
    text_layers=2,
    text_heads=4,
    text_intermediate=37,
    text_vocab=514,
)


def byte_level_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """CLIP's byte-level alphabet with no merges: every character is a token.

    transformers 5 keeps a vocabulary given as a dict; one given as files silently ends up
    with two tokens (NOTES.md), so the dict is built here."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    alphabet = [chr(c) for c in cs]
    tokens = alphabet + [a + "</w>" for a in alphabet]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_random_pipeline(
    shape: PipelineShape, seed: int = 0, device: str = "cpu"
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline of `shape` with random weights, reproducible by `seed` on
    a CPU (the global CPU RNG is left as it was). The weights are created on `device`: a GPU
    initialises a full-size UNet in a moment, `meta` allocates nothing. Its scheduler is
    SD-Turbo's: Euler, trailing timesteps."""
    tokenizer = byte_level_tokenizer()
    if shape.text_vocab < len(tokenizer):
        raise ConfigError(f"text_vocab must be at least {len(tokenizer)} for the tokenizer")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        down = ["CrossAttnDownBlock2D"] * (len(shape.unet_channels) - 1) + ["DownBlock2D"]
        up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (len(shape.unet_channels) - 1)
        unet = UNet2DConditionModel(
            sample_size=shape.sample_size,
            block_out_channels=shape.unet_channels,
            layers_per_block=shape.unet_layers,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            cross_attention_dim=shape.cross_attention_dim,
            attention_head_dim=shape.unet_heads,
            use_linear_projection=shape.linear_projection,
            norm_num_groups=min(32, shape.unet_channels[0]),
        )
        vae = AutoencoderKL(
            block_out_channels=shape.vae_channels,
            down_block_types=("DownEncoderBlock2D",) * len(shape.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(shape.vae_channels),
            layers_per_block=shape.vae_layers,
            latent_channels=4,
            norm_num_groups=min(32, shape.vae_channels[0]),
            sample_size=shape.sample_size * 2 ** (len(shape.vae_channels) - 1),
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=shape.text_vocab,
                hidden_size=shape.text_hidden,
                num_hidden_layers=shape.text_layers,
                num_attention_heads=shape.text_heads,
                intermediate_size=shape.text_intermediate,
                projection_dim=shape.cross_attention_dim,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ensure_placeholder_pipeline(home: Path) -> Path:
    """The built-in pipeline's folder under KIKI_HOME, built and saved on first use.

    Written to a temporary folder and renamed, so replicas starting together never load a
    half-written copy."""
    folder = Path(home).resolve() / "models" / PLACEHOLDER_FOLDER
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        build_random_pipeline(PLACEHOLDER_SHAPE).save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: use its copy
            if not (folder / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class Generated:
    """One image, and whether the pipeline's own safety checker (SD 1.5 folders) flagged it."""

    image: Image.Image
    seed: int
    flagged_by_pipeline: bool


class CreativePipeline:
    """A loaded text-to-image pipeline: fp16 on CUDA, fp32 on a CPU."""

    def __init__(self, pipe: Any, info: PipelineInfo) -> None:
        self.pipe = pipe
        self.info = info

    @classmethod
    def load(cls, settings: Settings) -> CreativePipeline:
        """KIKI_CREATIVE_MODEL when set, else the built-in placeholder; never a hub download."""
        # Per-request warnings (the placeholder's character tokenizer truncates every prompt)
        # and progress bars would flood the replica's log.
        for library in (diffusers_logging, transformers_logging):
            library.set_verbosity_error()
            library.disable_progress_bar()
        placeholder = settings.creative_model is None
        if settings.creative_model is None:
            folder = ensure_placeholder_pipeline(settings.home)
        else:
            folder = Path(settings.creative_model).expanduser().resolve()
        return cls.from_folder(
            folder,
            placeholder=placeholder,
            steps=settings.creative_steps,
            guidance=settings.creative_guidance,
            resolution=settings.creative_resolution,
        )

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        *,
        placeholder: bool = False,
        steps: int = 4,
        guidance: float = 0.0,
        resolution: int | None = None,
    ) -> CreativePipeline:
        index = folder / "model_index.json"
        if not index.is_file():
            raise ConfigError(
                f"KIKI_CREATIVE_MODEL={folder} is not a diffusers pipeline folder (no "
                "model_index.json): save one with pipeline.save_pretrained(FOLDER) and point "
                "KIKI_CREATIVE_MODEL at it, or unset it for the built-in placeholder"
            )
        cuda = torch.cuda.is_available()
        dtype = torch.float16 if cuda else torch.float32
        started = time.perf_counter()
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                folder, dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the text-to-image pipeline in {folder}: {exc}. It must be a "
                "complete folder written by save_pretrained (nothing is downloaded)"
            ) from None
        device = "cuda" if cuda else "cpu"
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        vae_factor = int(pipe.vae_scale_factor)
        unet_factor = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        # Pipelines check that sides divide by 8; the UNet's own downsampling may need more.
        info = PipelineInfo(
            source=str(folder),
            pipeline_class=json.loads(index.read_text()).get("_class_name", type(pipe).__name__),
            placeholder=placeholder,
            device=device,
            dtype=str(dtype).removeprefix("torch."),
            native_size=resolution or int(pipe.unet.config.sample_size) * vae_factor,
            size_multiple=max(8, vae_factor * unet_factor),
            steps=steps,
            guidance=guidance,
        )
        logger.info(
            "creative pipeline loaded",
            extra={"source": info.source, "seconds": round(time.perf_counter() - started, 2)},
        )
        return cls(pipe, info)

    def generation_size(self, aspect: float) -> tuple[int, int]:
        """Width and height near the model's native pixel count with the placement's aspect
        ratio, each a multiple the UNet and VAE accept, so fitting crops as little as can be."""
        m, side = self.info.size_multiple, self.info.native_size
        width = max(m, round(side * aspect**0.5 / m) * m)
        height = max(m, round(side / aspect**0.5 / m) * m)
        return width, height

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        size: tuple[int, int],
        *,
        negative_prompt: str | None = None,
        steps: int | None = None,
    ) -> list[Generated]:
        """One image per (prompt, seed), in one batch. Noise is drawn from a CPU generator per
        seed, so an image depends on its prompt and seed alone, on any device."""
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        extra: dict[str, Any] = {}
        if negative_prompt and self.info.guidance > 1:
            extra["negative_prompt"] = [negative_prompt] * len(prompts)
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompts,
                width=size[0],
                height=size[1],
                num_inference_steps=steps or self.info.steps,
                guidance_scale=self.info.guidance,
                generator=generators,
                output_type="pil",
                **extra,
            )
        flags = getattr(out, "nsfw_content_detected", None) or [False] * len(out.images)
        return [
            Generated(image=img.convert("RGB"), seed=seed, flagged_by_pipeline=bool(flag))
            for img, seed, flag in zip(out.images, seeds, flags, strict=True)
        ]
