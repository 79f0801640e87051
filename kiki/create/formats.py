"""Ad placements at their exact pixel specs, fitting a generated image to one, and the copy
overlay (headline, call to action, disclaimers, logo) drawn inside the placement's safe zone.

Fitting is a **cover-crop**: one uniform scale so the image covers the placement, then a
centred crop of the overflow. Nothing is stretched, and because the image is generated at
the placement's aspect ratio (within the model's size multiple) the crop is a few percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel

from kiki.create.colour import RGB, readable_on, to_hex


@dataclass(frozen=True)
class SafeZone:
    """Insets in pixels that platform UI (or cropping) may cover: keep copy and logos out."""

    top: int
    right: int
    bottom: int
    left: int


@dataclass(frozen=True)
class Placement:
    name: str
    platform: str  # the ad platform, as SyncFlow names it
    width: int
    height: int
    safe: SafeZone
    why: str  # where the safe-zone insets come from

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def safe_box(self) -> Box:
        s = self.safe
        return Box(x0=s.left, y0=s.top, x1=self.width - s.right, y1=self.height - s.bottom)


def _margin(width: int, height: int, share: float = 0.05) -> SafeZone:
    x, y = round(width * share), round(height * share)
    return SafeZone(top=y, right=x, bottom=y, left=x)


_MARGIN = "no platform UI over the image; a 5% design margin on every side"
PLACEMENTS: dict[str, Placement] = {
    p.name: p
    for p in (
        Placement(
            "tiktok_9_16",
            "tiktok",
            1080,
            1920,
            SafeZone(top=150, right=150, bottom=440, left=60),
            "TikTok in-feed UI: profile and navigation on top, caption, music and CTA at the "
            "bottom, the action rail on the right",
        ),
        Placement("meta_1_1", "meta", 1080, 1080, _margin(1080, 1080), f"Meta feed: {_MARGIN}"),
        Placement("meta_4_5", "meta", 1080, 1350, _margin(1080, 1350), f"Meta feed: {_MARGIN}"),
        Placement(
            "meta_9_16",
            "meta",
            1080,
            1920,
            SafeZone(top=270, right=65, bottom=670, left=65),
            "Meta Stories and Reels: the top 14% (profile) and the bottom 35% (Reels caption "
            "and CTA) kept clear",
        ),
        Placement(
            "google_1_91_1",
            "google_ads",
            1200,
            628,
            _margin(1200, 628),
            "Google responsive display ads may crop up to 5% of each edge",
        ),
        Placement(
            "google_1_1",
            "google_ads",
            1200,
            1200,
            _margin(1200, 1200),
            "Google responsive display ads may crop up to 5% of each edge",
        ),
        Placement(
            "linkedin_1_91_1",
            "linkedin",
            1200,
            627,
            _margin(1200, 627),
            f"LinkedIn single-image ads: {_MARGIN}",
        ),
    )
}


class Box(BaseModel):
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def inside(self, other: Box) -> bool:
        return (
            self.x0 >= other.x0
            and self.y0 >= other.y0
            and self.x1 <= other.x1
            and self.y1 <= other.y1
        )

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1


class FitReport(BaseModel):
    method: str = "cover-crop"
    source: tuple[int, int]
    scale: float
    cropped_fraction: float  # share of the scaled image's area cut off


def fit_cover(image: Image.Image, width: int, height: int) -> tuple[Image.Image, FitReport]:
    """Scale uniformly until the image covers width x height, then crop the centre."""
    scale = max(width / image.width, height / image.height)
    scaled_w = max(width, math.ceil(image.width * scale - 1e-9))
    scaled_h = max(height, math.ceil(image.height * scale - 1e-9))
    resized = image.resize((scaled_w, scaled_h), Image.Resampling.LANCZOS)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    fitted = resized.crop((left, top, left + width, top + height))
    report = FitReport(
        source=(image.width, image.height),
        scale=round(scale, 6),
        cropped_fraction=round(1 - (width * height) / (scaled_w * scaled_h), 4),
    )
    return fitted, report


class TextBlock(BaseModel):
    role: str  # headline, call_to_action, disclaimer
    text: str
    box: Box  # the panel the text sits on
    text_box: Box  # the ink's bounding box
    font_px: int
    colour: str
    background: str


class Layout(BaseModel):
    placement: str
    safe_box: Box
    blocks: list[TextBlock]
    logo_box: Box | None = None


@dataclass(frozen=True)
class Copy:
    headline: str
    call_to_action: str
    disclaimers: tuple[str, ...] = ()

    def texts(self) -> list[str]:
        return [self.headline, self.call_to_action, *self.disclaimers]


@dataclass(frozen=True)
class BrandStyle:
    colours: tuple[RGB, ...]  # primary first

    @property
    def panel(self) -> RGB:
        return self.colours[0]

    @property
    def button(self) -> RGB:
        return self.colours[1] if len(self.colours) > 1 else self.colours[0]


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold when the system has it (Pillow finds it in the usual font folders),
    else the scalable font that ships inside Pillow; both work offline."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _wrap(text: str, size: int, max_width: int) -> list[str]:
    face = font(size)
    lines: list[str] = []
    for word in text.split():
        if lines and face.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fit_text(text: str, start: int, max_width: int, max_lines: int) -> tuple[int, list[str]]:
    """The largest size (from `start` down to 10 px) at which the text wraps into max_lines
    lines no wider than max_width; below that the last lines are joined and may overflow
    the panel, which format conformance then reports."""
    size = start
    while True:
        lines = _wrap(text, size, max_width)
        widest = max((font(size).getlength(line) for line in lines), default=0)
        if (len(lines) <= max_lines and widest <= max_width) or size <= 10:
            return size, lines
        size = max(10, int(size * 0.9))


def _draw_block(
    draw: ImageDraw.ImageDraw,
    role: str,
    text: str,
    lines: list[str],
    size: int,
    panel: Box,
    colour: RGB,
    background: RGB,
    centred: bool,
) -> TextBlock:
    face = font(size)
    line_h = round(size * 1.2)
    draw.rectangle(panel.as_tuple(), fill=background)
    pad_y = (panel.height - line_h * len(lines)) // 2
    ink: list[tuple[int, int, int, int]] = []
    for i, line in enumerate(lines):
        width = face.getlength(line)
        x = panel.x0 + (panel.width - width) / 2 if centred else panel.x0 + size * 0.5
        y = panel.y0 + pad_y + i * line_h
        draw.text((x, y), line, font=face, fill=colour)
        ink.append(tuple(int(v) for v in draw.textbbox((x, y), line, font=face)))
    text_box = Box(
        x0=min(b[0] for b in ink),
        y0=min(b[1] for b in ink),
        x1=max(b[2] for b in ink),
        y1=max(b[3] for b in ink),
    )
    return TextBlock(
        role=role,
        text=text,
        box=panel,
        text_box=text_box,
        font_px=size,
        colour=to_hex(colour),
        background=to_hex(background),
    )


def render_creative(
    image: Image.Image,
    placement: Placement,
    copy: Copy,
    brand: BrandStyle,
    logo: Image.Image | None = None,
) -> tuple[Image.Image, Layout]:
    """Draw the copy on an image already at the placement's size: the headline on a panel in
    the brand's primary colour at the top of the safe zone (below the logo, when there is
    one), the call to action as a button in the brand's second colour at its bottom, and any
    disclaimers just above the button. Text takes a brand colour with AA contrast on its
    panel, else white or near-black."""
    if image.size != (placement.width, placement.height):
        raise ValueError(
            f"image is {image.size}, placement needs {placement.width, placement.height}"
        )
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    safe = placement.safe_box
    unit = min(safe.width, safe.height)
    gap = max(4, unit // 40)
    top = safe.y0
    logo_box = None
    if logo is not None:
        logo_h = max(8, round(unit * 0.12))
        logo_w = min(round(logo.width * logo_h / logo.height), safe.width // 3)
        logo_h = max(1, round(logo.height * logo_w / logo.width))
        fitted_logo = logo.convert("RGBA").resize((logo_w, logo_h), Image.Resampling.LANCZOS)
        canvas.paste(fitted_logo, (safe.x0, safe.y0), fitted_logo)
        logo_box = Box(x0=safe.x0, y0=safe.y0, x1=safe.x0 + logo_w, y1=safe.y0 + logo_h)
        top = logo_box.y1 + gap

    blocks: list[TextBlock] = []
    inner = safe.width - 2 * gap
    size, lines = _fit_text(copy.headline, max(12, round(unit * 0.085)), inner - unit // 10, 3)
    head_h = round(size * 1.2) * len(lines) + 2 * gap
    head = Box(x0=safe.x0, y0=top, x1=safe.x1, y1=top + head_h)
    text_colour = readable_on(brand.panel, list(brand.colours[1:]))
    blocks.append(
        _draw_block(
            draw, "headline", copy.headline, lines, size, head, text_colour, brand.panel, True
        )
    )

    cta_size, cta_lines = _fit_text(copy.call_to_action, max(10, round(size * 0.7)), inner, 1)
    face = font(cta_size)
    cta_w = min(safe.width, round(face.getlength(cta_lines[0]) + cta_size * 2))
    cta_h = round(cta_size * 1.2) + 2 * gap
    cta = Box(
        x0=safe.x0 + (safe.width - cta_w) // 2,
        y0=safe.y1 - cta_h,
        x1=safe.x0 + (safe.width + cta_w) // 2,
        y1=safe.y1,
    )
    cta_colour = readable_on(brand.button, [c for c in brand.colours if c != brand.button])
    blocks.append(
        _draw_block(
            draw,
            "call_to_action",
            copy.call_to_action,
            cta_lines,
            cta_size,
            cta,
            cta_colour,
            brand.button,
            True,
        )
    )

    bottom = cta.y0 - gap
    small = max(10, round(size * 0.4))
    for text in reversed(copy.disclaimers):
        d_size, d_lines = _fit_text(text, small, inner, 3)
        d_h = round(d_size * 1.2) * len(d_lines) + gap
        panel = Box(x0=safe.x0, y0=bottom - d_h, x1=safe.x1, y1=bottom)
        blocks.append(
            _draw_block(
                draw, "disclaimer", text, d_lines, d_size, panel, text_colour, brand.panel, True
            )
        )
        bottom = panel.y0 - gap // 2
    return canvas, Layout(placement=placement.name, safe_box=safe, blocks=blocks, logo_box=logo_box)
