"""Safety checks, all offline: text before generation, images after.

- Text (prompt and copy): `alt-profanity-check`, a linear model over word n-grams that ships
  inside its wheel (no download, ~17 ms per 1,000 texts), plus blocked terms per ad
  platform. A request with any finding is refused with every reason, before a GPU is used.
- Images: a pluggable classifier. `TransformersImageSafety` loads any local
  image-classification folder (`KIKI_IMAGE_SAFETY_MODEL`) whose labels name unsafe classes;
  an image at or above the threshold is withheld, never stored or returned. Pipelines that
  carry their own safety checker (SD 1.5 folders) are honoured too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from PIL import Image
from pydantic import BaseModel

from kiki.errors import ConfigError

# The classifier's own cut is 0.5; at 0.8 everyday ad idioms ("kill the competition",
# "damn good coffee") pass while profanity and slurs (0.99+) do not.
PROFANITY_THRESHOLD = 0.8

# Terms each platform's published ad policies refuse, matched as whole words, any case.
# A starting list to extend per deployment, not a substitute for the platforms' review.
BLOCKED_TERMS: dict[str, tuple[str, ...]] = {
    "all": (
        "get rich quick",
        "guaranteed income",
        "guaranteed results",
        "miracle cure",
        "risk-free returns",
        "buy followers",
        "fake id",
        "counterfeit",
    ),
    "tiktok": (
        "lose weight fast",
        "diet pills",
        "weight loss pills",
        "vape",
        "e-cigarette",
        "tobacco",
        "firearm",
        "casino",
    ),
    "meta": (
        "before and after",
        "are you overweight",
        "are you depressed",
        "lose weight fast",
        "tobacco",
        "firearm",
        "payday loan",
    ),
    "google_ads": ("click here", "tobacco", "firearm", "recreational drugs", "spyware"),
    "linkedin": ("pyramid scheme", "multi-level marketing", "payday loan", "casino", "dating"),
}


class Finding(BaseModel):
    field: str
    reason: str


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[\s\-_]+", " ", text.lower()).split())


def blocked_terms(text: str, platform: str) -> list[str]:
    normal = _normalise(text)
    terms = (*BLOCKED_TERMS["all"], *BLOCKED_TERMS.get(platform, ()))
    return [
        t
        for t in dict.fromkeys(terms)
        if re.search(rf"(?<!\w){re.escape(_normalise(t))}(?!\w)", normal)
    ]


def check_texts(fields: dict[str, str], platform: str) -> list[Finding]:
    """Every finding in the named texts (field name -> text) for an ad on `platform`."""
    from profanity_check import predict_prob  # loads its model; kept off import time

    names = [name for name, text in fields.items() if text.strip()]
    if not names:
        return []
    findings: list[Finding] = []
    scores = predict_prob([fields[n] for n in names])
    for name, score in zip(names, scores, strict=True):
        if score >= PROFANITY_THRESHOLD:
            findings.append(Finding(field=name, reason=f"profanity or abuse (p={score:.2f})"))
        for term in blocked_terms(fields[name], platform):
            findings.append(
                Finding(field=name, reason=f"'{term}' is not allowed in {platform} ads")
            )
    return findings


def describe(findings: list[Finding]) -> str:
    return "; ".join(f"{f.field}: {f.reason}" for f in findings)


class ImageVerdict(BaseModel):
    checked: bool
    safe: bool
    classifier: str | None = None
    unsafe_probability: float | None = None
    reason: str | None = None


class ImageSafetyClassifier(Protocol):
    """Anything that gives each image a probability of being unsafe."""

    name: str

    def unsafe_probability(self, images: list[Image.Image]) -> list[float]: ...


UNSAFE_LABEL_WORDS = ("nsfw", "unsafe", "porn", "hentai", "sexy", "explicit", "gore", "violence")


class TransformersImageSafety:
    """A transformers image-classification model from a local folder; the probability of an
    image being unsafe is the summed softmax of the labels that name unsafe content."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"KIKI_IMAGE_SAFETY_MODEL={folder} has no config.json: point it at a folder "
                "saved by a transformers image-classification model's save_pretrained"
            )
        # A local folder only (local_files_only): nothing is downloaded, so no revision to pin.
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)  # nosec B615
        self.model = AutoModelForImageClassification.from_pretrained(  # nosec B615
            folder, local_files_only=True
        ).eval()
        labels = self.model.config.id2label
        self.unsafe = [
            int(i)
            for i, label in labels.items()
            if any(w in label.lower() for w in UNSAFE_LABEL_WORDS)
        ]
        if not self.unsafe:
            raise ConfigError(
                f"KIKI_IMAGE_SAFETY_MODEL={folder}: none of its labels "
                f"({', '.join(labels.values())}) names unsafe content; expected a label "
                f"containing one of {', '.join(UNSAFE_LABEL_WORDS)}"
            )
        self.name = f"{folder.name} ({', '.join(labels[i] for i in self.unsafe)})"
        self._torch = torch

    def unsafe_probability(self, images: list[Image.Image]) -> list[float]:
        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        with self._torch.inference_mode():
            probs = self.model(**inputs).logits.softmax(-1)
        return probs[:, self.unsafe].sum(-1).tolist()


def load_image_classifier(folder: Path | None) -> ImageSafetyClassifier | None:
    return TransformersImageSafety(Path(folder).expanduser().resolve()) if folder else None


NOT_CONFIGURED = "no image-safety model configured (set KIKI_IMAGE_SAFETY_MODEL)"


def judge_images(
    classifier: ImageSafetyClassifier | None,
    images: list[Image.Image],
    threshold: float,
    flagged_by_pipeline: list[bool],
) -> list[ImageVerdict]:
    """One verdict per image. The pipeline's own checker, when it flags, decides alone."""
    scores = classifier.unsafe_probability(images) if classifier else [None] * len(images)
    verdicts = []
    for score, flagged in zip(scores, flagged_by_pipeline, strict=True):
        if flagged:
            verdicts.append(
                ImageVerdict(
                    checked=True,
                    safe=False,
                    classifier="the pipeline's safety checker",
                    reason="flagged by the pipeline's own safety checker",
                )
            )
        elif score is None:
            verdicts.append(ImageVerdict(checked=False, safe=True, reason=NOT_CONFIGURED))
        else:
            unsafe = score >= threshold
            verdicts.append(
                ImageVerdict(
                    checked=True,
                    safe=not unsafe,
                    classifier=classifier.name if classifier else None,
                    unsafe_probability=round(score, 4),
                    reason=f"unsafe probability {score:.2f} >= {threshold}" if unsafe else None,
                )
            )
    return verdicts
