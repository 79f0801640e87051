"""Placements at their exact specs, cover-crop fitting without distortion, and the copy
overlay inside the safe zones in readable brand colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kiki.create.colour import contrast_ratio, parse_hex
from kiki.create.formats import (
    PLACEMENTS,
    BrandStyle,
    Copy,
    fit_cover,
    font,
    render_creative,
)

SPECS = {
    "tiktok_9_16": (1080, 1920),
    "meta_1_1": (1080, 1080),
    "meta_4_5": (1080, 1350),
    "meta_9_16": (1080, 1920),
    "google_1_91_1": (1200, 628),
    "google_1_1": (1200, 1200),
    "linkedin_1_91_1": (1200, 627),
}
BLUE = parse_hex("#3b82f6")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_every_placement_has_its_exact_spec_and_a_safe_zone_inside_it() -> None:
    assert {name: (p.width, p.height) for name, p in PLACEMENTS.items()} == SPECS
    for p in PLACEMENTS.values():
        safe = p.safe_box
        assert 0 < safe.x0 < safe.x1 < p.width and 0 < safe.y0 < safe.y1 < p.height
        assert safe.width * safe.height > 0.4 * p.width * p.height
        assert p.platform in {"tiktok", "meta", "google_ads", "linkedin"} and p.why
    tiktok = PLACEMENTS["tiktok_9_16"].safe
    assert (tiktok.top, tiktok.right, tiktok.bottom, tiktok.left) == (150, 150, 440, 60)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("source", [(64, 64), (48, 88), (88, 48)])
def test_fitting_gives_the_exact_size_with_one_scale(name: str, source: tuple[int, int]) -> None:
    p = PLACEMENTS[name]
    fitted, report = fit_cover(noise(*source), p.width, p.height)
    assert fitted.size == SPECS[name]
    assert report.method == "cover-crop" and report.source == source
    assert report.scale == pytest.approx(max(p.width / source[0], p.height / source[1]), rel=1e-5)
    assert 0 <= report.cropped_fraction < 1


def test_a_circle_stays_round_after_fitting() -> None:
    """Distortion would turn the circle into an ellipse; a cover-crop only cuts the edges."""
    source = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(source).ellipse((22, 22, 42, 42), fill="black")
    for name in SPECS:
        p = PLACEMENTS[name]
        fitted, report = fit_cover(source, p.width, p.height)
        dark = np.argwhere(np.asarray(fitted.convert("L")) < 128)
        height = dark[:, 0].max() - dark[:, 0].min() + 1
        width = dark[:, 1].max() - dark[:, 1].min() + 1
        assert abs(width - height) <= 2, (name, width, height)
        assert width == pytest.approx(21 * report.scale, abs=3)


def test_fitting_at_the_placement_aspect_crops_little() -> None:
    p = PLACEMENTS["tiktok_9_16"]
    _, report = fit_cover(noise(48, 88), p.width, p.height)
    assert report.cropped_fraction < 0.05


@pytest.mark.parametrize("name", list(SPECS))
def test_copy_is_drawn_inside_the_safe_zone_readably(name: str) -> None:
    p = PLACEMENTS[name]
    copy = Copy(
        "CloudSync Pro: Real-time sync for every team, everywhere, all the time",
        "Start free",
        ("Terms apply. See site for details.",),
    )
    logo = Image.new("RGBA", (300, 100), (220, 38, 38, 255))
    image, layout = render_creative(
        noise(p.width, p.height), p, copy, BrandStyle((BLUE, (250, 204, 21))), logo
    )
    assert image.size == SPECS[name] and image.mode == "RGB"
    assert [b.role for b in layout.blocks] == ["headline", "call_to_action", "disclaimer"]
    assert layout.logo_box is not None and layout.logo_box.inside(p.safe_box)
    for block in layout.blocks:
        assert block.box.inside(p.safe_box), block
        assert block.text_box.inside(block.box), block
        assert not block.box.overlaps(layout.logo_box)
        ratio = contrast_ratio(parse_hex(block.colour), parse_hex(block.background))
        assert ratio >= (3.0 if block.font_px >= 19 else 4.5), block
    headline, cta, _ = layout.blocks
    assert headline.background == "#3b82f6" and cta.background == "#facc15"
    for a, b in zip(layout.blocks, layout.blocks[1:], strict=False):
        assert not a.box.overlaps(b.box)


def test_a_brand_colour_is_used_for_text_when_it_is_readable() -> None:
    p = PLACEMENTS["meta_1_1"]
    navy = (30, 41, 99)
    _, layout = render_creative(
        noise(p.width, p.height), p, Copy("Hello", "Go"), BrandStyle((navy, (250, 250, 250)))
    )
    assert layout.blocks[0].colour == "#fafafa"  # the second brand colour, 13:1 on navy


def test_an_image_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="placement needs"):
        render_creative(noise(64, 64), PLACEMENTS["meta_1_1"], Copy("a", "b"), BrandStyle((BLUE,)))


def test_the_font_is_scalable_and_available_offline() -> None:
    assert font(40).getbbox("Hg")[3] > font(20).getbbox("Hg")[3]
