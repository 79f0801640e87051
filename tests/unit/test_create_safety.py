"""Safety: text refused for profanity or a platform's blocked terms, images judged by a
classifier loaded from a local folder, and unsafe images never among the creatives."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers and transformers read it

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from kiki.config import Settings
from kiki.create.brief import GenerateRequest, plan_variants
from kiki.create.safety import (
    NOT_CONFIGURED,
    TransformersImageSafety,
    blocked_terms,
    check_texts,
    judge_images,
    load_image_classifier,
)
from kiki.create.studio import Job, Studio
from kiki.errors import ConfigError


def test_clean_ad_copy_passes() -> None:
    fields = {
        "headline": "CloudSync Pro: Real-time sync",
        "call_to_action": "Learn more",
        "idiom": "Kill the competition",
        "slogan": "Damn good coffee",
        "prompt": "clean studio product shot, advertisement for CloudSync Pro, blue palette",
    }
    assert check_texts(fields, "tiktok") == []


def test_profanity_is_found_in_the_field_that_holds_it() -> None:
    findings = check_texts({"headline": "This shit works", "cta": "Buy now"}, "meta")
    assert [f.field for f in findings] == ["headline"]
    assert findings[0].reason.startswith("profanity or abuse (p=")


@pytest.mark.parametrize(
    ("text", "platform", "found"),
    [
        ("Lose weight FAST with us", "tiktok", ["lose weight fast"]),
        ("Lose weight fast with us", "linkedin", []),
        ("Before-and-after photos", "meta", ["before and after"]),
        ("Click here for a deal", "google_ads", ["click here"]),
        ("Guaranteed results on any platform", "linkedin", ["guaranteed results"]),
        ("Vaporware? Never.", "tiktok", []),  # whole words only
        ("Our new vape", "tiktok", ["vape"]),
    ],
)
def test_blocked_terms_per_platform(text: str, platform: str, found: list[str]) -> None:
    assert blocked_terms(text, platform) == found


def test_every_reason_is_reported_at_once() -> None:
    findings = check_texts({"headline": "Fuck it, our vape", "style": "casino"}, "tiktok")
    reasons = {(f.field, f.reason.split(" (")[0]) for f in findings}
    assert reasons == {
        ("headline", "profanity or abuse"),
        ("headline", "'vape' is not allowed in tiktok ads"),
        ("style", "'casino' is not allowed in tiktok ads"),
    }


def save_classifier(
    folder: Path, unsafe_bias: float, labels: tuple[str, str] = ("normal", "nsfw")
) -> Path:
    """A tiny ViT image classifier saved like any downloaded one; the bias decides it."""
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, unsafe_bias]))
    model.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_an_image_classifier_loads_from_a_local_folder(tmp_path: Path) -> None:
    classifier = load_image_classifier(save_classifier(tmp_path / "nsfw", unsafe_bias=4.0))
    assert isinstance(classifier, TransformersImageSafety)
    assert "nsfw" in classifier.name
    images = [Image.new("RGB", (64, 80), "red"), Image.new("RGB", (50, 50), "blue")]
    scores = classifier.unsafe_probability(images)
    assert scores == pytest.approx([0.982, 0.982], abs=1e-3)  # sigmoid(4)
    verdicts = judge_images(classifier, images, 0.5, [False, False])
    assert [v.safe for v in verdicts] == [False, False]
    assert verdicts[0].checked and "0.98 >= 0.5" in (verdicts[0].reason or "")
    assert load_image_classifier(None) is None


def test_a_classifier_without_unsafe_labels_is_a_config_error(tmp_path: Path) -> None:
    folder = save_classifier(tmp_path / "cats", 0.0, labels=("cat", "dog"))
    with pytest.raises(ConfigError, match=r"none of its labels \(cat, dog\)"):
        TransformersImageSafety(folder)
    with pytest.raises(ConfigError, match=r"no config\.json"):
        TransformersImageSafety(tmp_path)


def test_without_a_classifier_images_are_marked_unchecked() -> None:
    (verdict,) = judge_images(None, [Image.new("RGB", (8, 8))], 0.5, [False])
    assert (verdict.checked, verdict.safe, verdict.reason) == (False, True, NOT_CONFIGURED)
    (flagged,) = judge_images(None, [Image.new("RGB", (8, 8))], 0.5, [True])
    assert not flagged.safe and "pipeline" in (flagged.reason or "")


class EveryOtherUnsafe:
    """A stand-in classifier: the 2nd, 4th ... image of a batch is unsafe."""

    name = "every-other"

    def unsafe_probability(self, images: list[Image.Image]) -> list[float]:
        return [0.9 if i % 2 else 0.1 for i in range(len(images))]


def test_unsafe_images_are_withheld_and_never_become_creatives(tmp_path: Path) -> None:
    studio = Studio.load(Settings(home=tmp_path, creative_steps=1))
    studio.classifier = EveryOtherUnsafe()
    request = GenerateRequest.model_validate(
        {
            "product": {"name": "CloudSync Pro", "features": ["Real-time sync"]},
            "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
            "variants": 3,
            "platform": "google_1_1",
        }
    )
    batch = studio.make(
        Job(request.placement, plan_variants(request), [1, 2, 3], request.brand.rules())
    )
    assert [c.seed for c in batch.creatives] == [1, 3]
    assert [(w.seed, w.safety.safe) for w in batch.withheld] == [(2, False)]
    assert all(c.safety.checked and c.safety.safe for c in batch.creatives)
    assert all((c.width, c.height) == (1200, 1200) for c in batch.creatives)
    assert all(c.png.startswith(b"\x89PNG") for c in batch.creatives)
