"""Brand compliance of a finished creative: a 0-100 score and the breakdown behind it.

Five parts, each scored 0-100 and weighted (logo only when the brand gave one; the weights of
the parts that apply are renormalised):

- palette (30): the image's dominant colours (median cut) against the brand's colours by
  CIEDE2000 in CIELAB; a colour within 5 of a brand colour counts fully, beyond 20 not at
  all, linearly between; near-neutral colours (chroma under 10) count as on-palette unless
  the brand turns neutrals off.
- contrast (25): WCAG 2 contrast of each text block on the pixels behind it; the weakest
  block decides. Full marks at AA (4.5, or 3 for large text: bold 19 px and up).
- copy (20): banned words absent and every required disclaimer present; each violation
  halves what is left.
- format (15): exact pixel size, RGB, every block and logo inside the safe zone, no text
  spilling out of its panel.
- logo (10): inside the safe zone, clear of the text panels, 5-35 % of the width, and
  actually visible where the layout says it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pydantic import BaseModel

from kiki.create.colour import (
    RGB,
    chroma,
    ciede2000,
    contrast_ratio,
    parse_hex,
    srgb_to_lab,
    to_hex,
)
from kiki.create.formats import Box, Layout, Placement

WEIGHTS = {"palette": 30, "contrast": 25, "copy": 20, "format": 15, "logo": 10}
ON_PALETTE_DE = 5.0
OFF_PALETTE_DE = 20.0
NEUTRAL_CHROMA = 10.0
DOMINANT_COLOURS = 8
LARGE_TEXT_PX = 19  # WCAG large text: 14 pt bold = 18.66 px; our face is bold


@dataclass(frozen=True)
class BrandRules:
    colours: tuple[RGB, ...]
    banned_words: tuple[str, ...] = ()
    required_disclaimers: tuple[str, ...] = ()
    allow_neutrals: bool = True
    logo: Image.Image | None = field(default=None, compare=False)


class Part(BaseModel):
    score: int
    weight: int
    detail: dict


class ComplianceReport(BaseModel):
    score: int
    breakdown: dict[str, Part]


def dominant_colours(image: Image.Image, k: int = DOMINANT_COLOURS) -> list[tuple[RGB, float]]:
    """Up to k colours by median cut with their share of the pixels, largest first."""
    small = image.convert("RGB")
    small.thumbnail((256, 256), Image.Resampling.BOX)
    quantised = small.quantize(colors=k, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = quantised.getcolors() or []
    total = sum(c for c, _ in counts)
    found = [
        ((palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]), count / total)
        for count, i in counts
    ]
    return sorted(found, key=lambda item: -item[1])


def _closeness(delta_e: float) -> float:
    return float(np.clip((OFF_PALETTE_DE - delta_e) / (OFF_PALETTE_DE - ON_PALETTE_DE), 0, 1))


def palette_part(image: Image.Image, rules: BrandRules) -> tuple[float, dict]:
    colours = dominant_colours(image)
    brand_lab = srgb_to_lab(np.array(rules.colours))
    rows, total = [], 0.0
    for rgb, share in colours:
        lab = srgb_to_lab(np.array(rgb))
        distances = ciede2000(lab[None, :], brand_lab)
        nearest = int(np.argmin(distances))
        delta_e = float(distances[nearest])
        neutral = rules.allow_neutrals and float(chroma(lab)) < NEUTRAL_CHROMA
        credit = 1.0 if neutral else _closeness(delta_e)
        total += share * credit
        rows.append(
            {
                "colour": to_hex(rgb),
                "share": round(share, 4),
                "nearest_brand_colour": to_hex(rules.colours[nearest]),
                "delta_e2000": round(delta_e, 2),
                "neutral": neutral,
                "credit": round(credit, 3),
            }
        )
    return total, {"dominant_colours": rows, "on_palette_share": round(total, 4)}


def _background_behind(pixels: np.ndarray, text: RGB) -> RGB:
    """The median of the panel's pixels that are not the text's colour (CIEDE2000 > 10),
    from every third pixel each way: plenty for a median, a ninth of the work."""
    flat = pixels[::3, ::3].reshape(-1, 3)
    far = ciede2000(srgb_to_lab(flat), srgb_to_lab(np.array(text))) > 10
    rest = flat[far] if far.any() else flat
    return tuple(int(v) for v in np.median(rest, axis=0))  # type: ignore[return-value]


def contrast_part(image: Image.Image, layout: Layout) -> tuple[float, dict]:
    if not layout.blocks:
        return 1.0, {"blocks": []}
    pixels = np.asarray(image.convert("RGB"))
    rows, worst = [], 1.0
    for block in layout.blocks:
        b = block.box
        text = parse_hex(block.colour)
        background = _background_behind(pixels[b.y0 : b.y1, b.x0 : b.x1], text)
        ratio = contrast_ratio(text, background)
        needed = 3.0 if block.font_px >= LARGE_TEXT_PX else 4.5
        credit = float(np.clip((ratio - 1) / (needed - 1), 0, 1))
        worst = min(worst, credit)
        rows.append(
            {
                "role": block.role,
                "text_colour": block.colour,
                "measured_background": to_hex(background),
                "ratio": round(ratio, 2),
                "wcag_aa_needs": needed,
                "passes_aa": ratio >= needed,
            }
        )
    return worst, {"blocks": rows}


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w%$€£]+", " ", text.lower()).split())


def _contains(haystack: str, phrase: str) -> bool:
    needle = _normalise(phrase)
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def copy_part(texts: list[str], rules: BrandRules) -> tuple[float, dict]:
    copy = _normalise(" ".join(texts))
    banned = [w for w in rules.banned_words if _contains(copy, w)]
    missing = [d for d in rules.required_disclaimers if not _contains(copy, d)]
    violations = len(banned) + len(missing)
    return 0.5**violations, {"banned_words_found": banned, "missing_disclaimers": missing}


def format_part(image: Image.Image, placement: Placement, layout: Layout) -> tuple[float, dict]:
    safe = placement.safe_box
    checks = {
        "exact_size": image.size == (placement.width, placement.height),
        "rgb": image.mode == "RGB",
        "copy_in_safe_zone": all(b.box.inside(safe) for b in layout.blocks),
        "text_within_panels": all(b.text_box.inside(b.box) for b in layout.blocks),
        "logo_in_safe_zone": layout.logo_box is None or layout.logo_box.inside(safe),
    }
    score = 0.0 if not checks["exact_size"] else sum(checks.values()) / len(checks)
    return score, {
        "checks": checks,
        "expected": [placement.width, placement.height],
        "actual": list(image.size),
        "safe_zone": safe.model_dump(),
    }


def _logo_visible(image: Image.Image, logo: Image.Image, box: Box) -> float:
    """Mean absolute difference (0-255) between the canvas and the logo over its opaque
    pixels, the logo scaled to the box as the renderer does."""
    scaled = logo.convert("RGBA").resize((box.width, box.height), Image.Resampling.LANCZOS)
    rgba = np.asarray(scaled, dtype=np.float64)
    opaque = rgba[..., 3] > 200
    if not opaque.any():
        return 0.0
    region = np.asarray(image.convert("RGB").crop(box.as_tuple()), dtype=np.float64)
    return float(np.abs(region[opaque] - rgba[..., :3][opaque]).mean())


def logo_part(
    image: Image.Image, placement: Placement, layout: Layout, logo: Image.Image
) -> tuple[float, dict]:
    box = layout.logo_box
    if box is None:
        return 0.0, {"placed": False}
    difference = _logo_visible(image, logo, box)
    checks = {
        "in_safe_zone": box.inside(placement.safe_box),
        "clear_of_text": not any(box.overlaps(b.box) for b in layout.blocks),
        "size_5_to_35_percent_of_width": 0.05 <= box.width / placement.width <= 0.35,
        "visible": difference < 12,
    }
    return sum(checks.values()) / len(checks), {
        "placed": True,
        "box": box.model_dump(),
        "checks": checks,
        "mean_pixel_difference": round(difference, 2),
    }


def score_creative(
    image: Image.Image, placement: Placement, layout: Layout, texts: list[str], rules: BrandRules
) -> ComplianceReport:
    """The weighted score and every part's evidence."""
    parts = {
        "palette": palette_part(image, rules),
        "contrast": contrast_part(image, layout),
        "copy": copy_part(texts, rules),
        "format": format_part(image, placement, layout),
    }
    if rules.logo is not None:
        parts["logo"] = logo_part(image, placement, layout, rules.logo)
    breakdown = {
        name: Part(score=round(100 * credit), weight=WEIGHTS[name], detail=detail)
        for name, (credit, detail) in parts.items()
    }
    # From the rounded parts, so anyone can redo the sum from the breakdown.
    total = sum(p.weight * p.score for p in breakdown.values()) / sum(
        p.weight for p in breakdown.values()
    )
    return ComplianceReport(score=round(total), breakdown=breakdown)
