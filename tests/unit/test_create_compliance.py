"""Brand compliance: CIEDE2000 against the published reference pairs, WCAG contrast, and the
score on images whose colours, copy and layout are known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiki.create.colour import ciede2000, contrast_ratio, parse_hex, srgb_to_lab
from kiki.create.compliance import (
    WEIGHTS,
    BrandRules,
    contrast_part,
    copy_part,
    dominant_colours,
    palette_part,
    score_creative,
)
from kiki.create.formats import (
    PLACEMENTS,
    Box,
    BrandStyle,
    Copy,
    Layout,
    TextBlock,
    render_creative,
)

# Sharma, Wu & Dalal (2005), Table 1: L1 a1 b1 L2 a2 b2 and the CIEDE2000 difference.
# https://hajim.rochester.edu/ece/sites/gsharma/ciede2000/dataNprograms/ciede2000testdata.txt
SHARMA = """
50.0000 2.6772 -79.7751 50.0000 0.0000 -82.7485 2.0425
50.0000 3.1571 -77.2803 50.0000 0.0000 -82.7485 2.8615
50.0000 2.8361 -74.0200 50.0000 0.0000 -82.7485 3.4412
50.0000 -1.3802 -84.2814 50.0000 0.0000 -82.7485 1.0000
50.0000 -1.1848 -84.8006 50.0000 0.0000 -82.7485 1.0000
50.0000 -0.9009 -85.5211 50.0000 0.0000 -82.7485 1.0000
50.0000 0.0000 0.0000 50.0000 -1.0000 2.0000 2.3669
50.0000 -1.0000 2.0000 50.0000 0.0000 0.0000 2.3669
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0009 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0010 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0011 7.2195
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0012 7.2195
50.0000 -0.0010 2.4900 50.0000 0.0009 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0010 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0011 -2.4900 4.7461
50.0000 2.5000 0.0000 50.0000 0.0000 -2.5000 4.3065
50.0000 2.5000 0.0000 73.0000 25.0000 -18.0000 27.1492
50.0000 2.5000 0.0000 61.0000 -5.0000 29.0000 22.8977
50.0000 2.5000 0.0000 56.0000 -27.0000 -3.0000 31.9030
50.0000 2.5000 0.0000 58.0000 24.0000 15.0000 19.4535
50.0000 2.5000 0.0000 50.0000 3.1736 0.5854 1.0000
50.0000 2.5000 0.0000 50.0000 3.2972 0.0000 1.0000
50.0000 2.5000 0.0000 50.0000 1.8634 0.5757 1.0000
50.0000 2.5000 0.0000 50.0000 3.2592 0.3350 1.0000
60.2574 -34.0099 36.2677 60.4626 -34.1751 39.4387 1.2644
63.0109 -31.0961 -5.8663 62.8187 -29.7946 -4.0864 1.2630
61.2901 3.7196 -5.3901 61.4292 2.2480 -4.9620 1.8731
35.0831 -44.1164 3.7933 35.0232 -40.0716 1.5901 1.8645
22.7233 20.0904 -46.6940 23.0331 14.9730 -42.5619 2.0373
36.4612 47.8580 18.3852 36.2715 50.5065 21.2231 1.4146
90.8027 -2.0831 1.4410 91.1528 -1.6435 0.0447 1.4441
90.9257 -0.5406 -0.9208 88.6381 -0.8985 -0.7239 1.5381
6.7747 -0.2908 -2.4247 5.8714 -0.0985 -2.2286 0.6377
2.0776 0.0795 -1.1350 0.9033 -0.0636 -0.5514 0.9082
"""
BLUE = parse_hex("#3b82f6")
GREEN = (0, 200, 0)


def test_ciede2000_matches_all_34_published_pairs_both_ways() -> None:
    table = np.array([line.split() for line in SHARMA.strip().splitlines()], dtype=float)
    assert table.shape == (34, 7)
    lab1, lab2, expected = table[:, :3], table[:, 3:6], table[:, 6]
    np.testing.assert_allclose(ciede2000(lab1, lab2), expected, atol=5e-5)
    np.testing.assert_allclose(ciede2000(lab2, lab1), expected, atol=5e-5)
    assert ciede2000(lab1, lab1) == pytest.approx(np.zeros(34), abs=1e-12)


def test_srgb_to_cielab_reference_points() -> None:
    np.testing.assert_allclose(srgb_to_lab((255, 255, 255)), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab((0, 0, 0)), [0, 0, 0], atol=1e-9)
    # sRGB red in CIELAB (D65): L 53.24, a 80.09, b 67.20
    np.testing.assert_allclose(srgb_to_lab((255, 0, 0)), [53.24, 80.09, 67.20], atol=0.02)


@pytest.mark.parametrize(
    ("fg", "bg", "ratio"),
    [
        ("#ffffff", "#000000", 21.0),
        ("#000000", "#000000", 1.0),
        ("#777777", "#ffffff", 4.48),  # the classic grey that just fails AA
        ("#767676", "#ffffff", 4.54),  # ... and the one that just passes
        ("#ffffff", "#3b82f6", 3.68),
        ("#0000ff", "#ffffff", 8.59),
    ],
)
def test_wcag_contrast_ratios(fg: str, bg: str, ratio: float) -> None:
    assert contrast_ratio(parse_hex(fg), parse_hex(bg)) == pytest.approx(ratio, abs=0.01)
    assert contrast_ratio(parse_hex(bg), parse_hex(fg)) == pytest.approx(ratio, abs=0.01)


def halves(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (400, 400), bottom)
    image.paste(top, (0, 0, 400, 200))
    return image


def test_dominant_colours_of_a_two_colour_image() -> None:
    found = dominant_colours(halves(BLUE, GREEN))
    assert {c for c, _ in found} == {BLUE, GREEN}
    assert [round(s, 3) for _, s in found] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGB", (300, 300), BLUE), 1.0),
        (Image.new("RGB", (300, 300), (62, 133, 240)), 1.0),  # within 5 of the brand blue
        (halves(BLUE, GREEN), 0.5),
        (Image.new("RGB", (300, 300), GREEN), 0.0),
        (halves(BLUE, (255, 255, 255)), 1.0),  # white is a neutral
    ],
)
def test_palette_adherence_on_known_colours(image: Image.Image, expected: float) -> None:
    credit, detail = palette_part(image, BrandRules((BLUE,)))
    assert credit == pytest.approx(expected, abs=0.01)
    assert detail["on_palette_share"] == pytest.approx(expected, abs=0.01)


def test_neutrals_count_only_when_the_brand_allows_them() -> None:
    image = halves(BLUE, (255, 255, 255))
    assert palette_part(image, BrandRules((BLUE,), allow_neutrals=False))[0] == pytest.approx(0.5)


def test_palette_credit_falls_linearly_between_delta_e_5_and_20() -> None:
    # A blue about 12.5 from the brand blue earns about half.
    brand = srgb_to_lab(np.array(BLUE))
    for rgb in [(59, 130, 246 - d) for d in range(0, 200, 5)]:
        d = float(ciede2000(srgb_to_lab(np.array(rgb)), brand))
        if 11 < d < 14:
            credit, _ = palette_part(Image.new("RGB", (64, 64), rgb), BrandRules((BLUE,)))
            assert credit == pytest.approx((20 - d) / 15, abs=0.01)
            return
    pytest.fail("no test colour at the middle distance")


def block(fg: str, bg: str, size: int = 30) -> tuple[Image.Image, Layout]:
    image = Image.new("RGB", (200, 100), bg)
    image.paste(parse_hex(fg), (40, 40, 160, 60))  # the "ink"
    box = Box(x0=0, y0=0, x1=200, y1=100)
    ink = Box(x0=40, y0=40, x1=160, y1=60)
    b = TextBlock(
        role="headline", text="x", box=box, text_box=ink, font_px=size, colour=fg, background=bg
    )
    return image, Layout(placement="meta_1_1", safe_box=box, blocks=[b])


def test_contrast_is_measured_on_the_pixels_behind_the_text() -> None:
    credit, detail = contrast_part(*block("#ffffff", "#000000"))
    assert credit == 1.0 and detail["blocks"][0]["ratio"] == 21.0
    assert detail["blocks"][0]["measured_background"] == "#000000"
    # White on the brand blue: 3.68, AA for large text (30 px bold) but not for small.
    large, _ = contrast_part(*block("#ffffff", "#3b82f6", size=30))
    small, detail = contrast_part(*block("#ffffff", "#3b82f6", size=12))
    assert large == 1.0
    assert small == pytest.approx((3.68 - 1) / 3.5, abs=0.01)
    assert detail["blocks"][0]["passes_aa"] is False


def test_banned_words_and_missing_disclaimers_each_halve_the_copy_score() -> None:
    rules = BrandRules(
        (BLUE,), banned_words=("cheap", "best ever"), required_disclaimers=("Terms apply.",)
    )
    assert copy_part(["Sync for teams", "Terms apply."], rules)[0] == 1.0
    credit, detail = copy_part(["The BEST-ever sync", "Learn more"], rules)
    assert credit == 0.25
    assert detail == {"banned_words_found": ["best ever"], "missing_disclaimers": ["Terms apply."]}
    # Whole words only: "cheaper" is not "cheap".
    assert copy_part(["Cheaper sync", "terms apply"], rules)[0] == 1.0


def rendered(rules: BrandRules, copy: Copy, size: tuple[int, int] | None = None):
    p = PLACEMENTS["meta_1_1"]
    base = Image.new("RGB", (p.width, p.height), BLUE)
    image, layout = render_creative(base, p, copy, BrandStyle(rules.colours), rules.logo)
    if size:
        image = image.resize(size)
    return score_creative(image, p, layout, copy.texts(), rules)


def test_an_on_brand_creative_scores_100_with_every_part_shown() -> None:
    logo = Image.new("RGBA", (200, 100), (255, 255, 255, 255))
    rules = BrandRules((BLUE,), required_disclaimers=("Terms apply.",), logo=logo)
    report = rendered(rules, Copy("CloudSync Pro", "Learn more", ("Terms apply.",)))
    assert set(report.breakdown) == set(WEIGHTS)
    scores = {k: p.score for k, p in report.breakdown.items()}
    # Anti-aliased glyph edges blend blue and black: the only colours off the palette.
    assert scores.pop("palette") >= 98
    assert scores == dict.fromkeys(scores, 100)
    assert report.score >= 99
    assert report.breakdown["logo"].detail["checks"]["visible"]


def test_the_score_is_the_weighted_mean_of_the_parts() -> None:
    rules = BrandRules((BLUE,), banned_words=("sync",))
    report = rendered(rules, Copy("CloudSync Pro: real-time sync", "Learn more"))
    assert "logo" not in report.breakdown  # no logo given: its weight is left out
    parts = report.breakdown
    assert parts["copy"].score == 50 and parts["palette"].score >= 98
    weighted = sum(p.score * p.weight for p in parts.values()) / sum(
        p.weight for p in parts.values()
    )
    assert report.score == round(weighted)
    assert 88 <= report.score <= 89  # (30 x 100 + 25 x 100 + 20 x 50 + 15 x 100) / 90 = 88.9


def test_a_creative_of_the_wrong_size_fails_format_conformance() -> None:
    report = rendered(BrandRules((BLUE,)), Copy("Hi", "Go"), size=(1000, 1000))
    assert report.breakdown["format"].score == 0
    assert report.breakdown["format"].detail["checks"]["exact_size"] is False


def test_a_logo_that_is_not_where_the_layout_says_fails_visibility() -> None:
    p = PLACEMENTS["meta_1_1"]
    logo = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    rules = BrandRules((BLUE,), logo=logo)
    copy = Copy("CloudSync Pro", "Learn more")
    image, layout = render_creative(
        Image.new("RGB", (1080, 1080), BLUE), p, copy, BrandStyle((BLUE,)), logo
    )
    assert score_creative(image, p, layout, copy.texts(), rules).breakdown["logo"].score == 100
    plain, _ = render_creative(Image.new("RGB", (1080, 1080), BLUE), p, copy, BrandStyle((BLUE,)))
    part = score_creative(plain, p, layout, copy.texts(), rules).breakdown["logo"]
    assert part.score == 75 and part.detail["checks"]["visible"] is False
