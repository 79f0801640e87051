"""The text-to-image pipeline: the placeholder is built in code, saved, and loaded back through
`from_pretrained` with nothing downloaded; generation is reproducible by seed."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers and transformers read it

import hashlib
from pathlib import Path

import pytest

from kiki.config import Settings
from kiki.create.model import PLACEHOLDER_NOTICE
from kiki.create.pipeline import (
    PLACEHOLDER_FOLDER,
    PLACEHOLDER_SHAPE,
    CreativePipeline,
    build_random_pipeline,
    byte_level_tokenizer,
    ensure_placeholder_pipeline,
)
from kiki.errors import ConfigError


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("create-home")


@pytest.fixture(scope="module")
def pipeline(home: Path) -> CreativePipeline:
    return CreativePipeline.load(Settings(home=home, creative_steps=2))


def _digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_the_tokenizer_made_in_code_has_the_whole_byte_alphabet() -> None:
    tokenizer = byte_level_tokenizer()
    assert len(tokenizer) == 514
    ids = tokenizer("CloudSync Pro").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == len("CloudSync Pro") - 1 + 2  # one token per character, no space token
    assert tokenizer.unk_token_id not in ids[1:-1]


def test_without_a_model_the_placeholder_is_saved_and_loaded_back(
    home: Path, pipeline: CreativePipeline
) -> None:
    folder = home / "models" / PLACEHOLDER_FOLDER
    assert (folder / "model_index.json").is_file()
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= {
        p.name for p in folder.iterdir()
    }
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 10_000_000
    info = pipeline.info
    assert info.placeholder and info.notice == PLACEHOLDER_NOTICE
    assert "KIKI_CREATIVE_MODEL" in PLACEHOLDER_NOTICE
    assert info.source == str(folder.resolve())
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert info.native_size == 64 and info.steps == 2
    # A second call finds the saved copy instead of building another.
    mtime = (folder / "model_index.json").stat().st_mtime
    assert ensure_placeholder_pipeline(home) == folder.resolve()
    assert (folder / "model_index.json").stat().st_mtime == mtime


def test_generation_sizes_keep_the_placement_aspect_in_multiples_of_eight(
    pipeline: CreativePipeline,
) -> None:
    assert pipeline.generation_size(1.0) == (64, 64)
    for aspect in (9 / 16, 4 / 5, 1200 / 628):
        width, height = pipeline.generation_size(aspect)
        assert width % 8 == 0 and height % 8 == 0
        assert abs(width / height - aspect) / aspect < 0.2
        assert 0.5 < width * height / 64**2 < 1.5


def test_the_same_prompts_and_seeds_give_the_same_pixels(pipeline: CreativePipeline) -> None:
    prompts = ["blue ad for CloudSync Pro", "green ad for CloudSync Pro"]
    first = pipeline.generate(prompts, [11, 12], (64, 64))
    again = pipeline.generate(prompts, [11, 12], (64, 64))
    other = pipeline.generate(prompts, [13, 12], (64, 64))
    assert [g.image.size for g in first] == [(64, 64), (64, 64)]
    assert [_digest(g.image) for g in first] == [_digest(g.image) for g in again]
    assert _digest(other[0].image) != _digest(first[0].image)
    assert [g.seed for g in first] == [11, 12]
    assert not any(g.flagged_by_pipeline for g in first)


def test_a_configured_folder_loads_as_a_real_model(tmp_path: Path) -> None:
    build_random_pipeline(PLACEHOLDER_SHAPE, seed=3).save_pretrained(tmp_path / "sd")
    loaded = CreativePipeline.load(
        Settings(home=tmp_path, creative_model=tmp_path / "sd", creative_resolution=96)
    )
    assert not loaded.info.placeholder and loaded.info.notice is None
    assert loaded.info.pipeline_class == "StableDiffusionPipeline"
    assert loaded.info.native_size == 96
    assert not (tmp_path / "models").exists()  # no placeholder built


def test_a_folder_that_is_not_a_pipeline_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no model_index\.json"):
        CreativePipeline.load(Settings(home=tmp_path, creative_model=tmp_path))
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ConfigError, match="cannot load"):
        CreativePipeline.load(Settings(home=tmp_path, creative_model=tmp_path))


def test_empty_model_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIKI_CREATIVE_MODEL", "")
    monkeypatch.setenv("KIKI_IMAGE_SAFETY_MODEL", "")
    settings = Settings()
    assert settings.creative_model is None and settings.image_safety_model is None
