"""What a caller asks SyncCreate for, and how one request becomes N variant briefs: a prompt
(product, features, brand colours, the placement's composition, a visual angle per variant)
and the copy drawn on the image (headline, call to action, the brand's disclaimers)."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import AfterValidator, BaseModel, Field, field_validator

from kiki.create.colour import RGB, ciede2000, parse_hex, srgb_to_lab, to_hex
from kiki.create.compliance import BrandRules
from kiki.create.formats import PLACEMENTS, Copy, Placement
from kiki.db.values import PgText

MAX_VARIANTS = 8
MAX_LOGO_BYTES = 2_000_000
MAX_SEED = 2**63 - 1  # a PostgreSQL bigint


def _hex(value: str) -> str:
    return to_hex(parse_hex(value))


HexColour = Annotated[str, AfterValidator(_hex), Field(examples=["#3b82f6"])]
Text = Annotated[PgText, Field(min_length=1, max_length=120)]


class Product(BaseModel):
    model_config = {"extra": "forbid"}

    name: Text
    features: list[Text] = Field(default_factory=list, max_length=10)
    description: PgText | None = Field(None, max_length=500)


class Brand(BaseModel):
    model_config = {"extra": "forbid"}

    name: Text
    primary_colors: list[HexColour] = Field(min_length=1, max_length=6)
    secondary_colors: list[HexColour] = Field(default_factory=list, max_length=6)
    banned_words: list[Text] = Field(default_factory=list, max_length=200)
    required_disclaimers: list[Annotated[PgText, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=5
    )
    allow_neutrals: bool = Field(True, description="greys, black and white count as on-brand")
    logo_png_base64: str | None = Field(
        None, description="the logo as a base64 PNG (transparency kept), at most 2 MB"
    )

    @field_validator("logo_png_base64")
    @classmethod
    def _logo_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_logo(value)
        return value

    @property
    def colours(self) -> tuple[RGB, ...]:
        return tuple(parse_hex(c) for c in [*self.primary_colors, *self.secondary_colors])

    def rules(self) -> BrandRules:
        return BrandRules(
            colours=self.colours,
            banned_words=tuple(self.banned_words),
            required_disclaimers=tuple(self.required_disclaimers),
            allow_neutrals=self.allow_neutrals,
            logo=decode_logo(self.logo_png_base64) if self.logo_png_base64 else None,
        )


def decode_logo(value: str) -> Image.Image:
    """The logo image; ValueError (a 422 at the edge) says what is wrong with it."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("logo_png_base64 is not valid base64") from None
    if len(raw) > MAX_LOGO_BYTES:
        raise ValueError(f"the logo is {len(raw):,} bytes; send a PNG of at most 2 MB")
    try:
        logo = Image.open(io.BytesIO(raw))
        logo.load()
    except (UnidentifiedImageError, OSError):
        raise ValueError("logo_png_base64 is not a readable image; send a PNG") from None
    if logo.format != "PNG":
        raise ValueError(f"the logo is {logo.format}; send a PNG")
    if max(logo.size) > 4096 or min(logo.size) < 8:
        raise ValueError(f"the logo is {logo.width}x{logo.height}; send 8 to 4096 pixels a side")
    return logo.convert("RGBA")


DEFAULT_PLACEMENT = "meta_1_1"  # square: the one shape every network's feed takes
DEFAULT_BRAND_COLOUR = "#3b82f6"


def default_brand(data: dict[str, Any]) -> Brand:
    """The brand of a request that names none (the seed's minimal call): the product is its
    own brand, in one blue, neutrals allowed, no banned words or disclaimers."""
    # Pydantic calls this only once `product` is valid (otherwise the request is a 422).
    return Brand(name=data["product"].name, primary_colors=[DEFAULT_BRAND_COLOUR])


class GenerateRequest(BaseModel):
    """POST /create/api/v1/generate. Only `product` is required: a request without `brand`
    or `platform` gets `default_brand` and DEFAULT_PLACEMENT, and the answer says so."""

    model_config = {"extra": "forbid"}

    product: Product
    brand: Brand = Field(
        default_factory=default_brand,
        description=f"default: the product's name as the brand, colour {DEFAULT_BRAND_COLOUR}",
    )
    variants: int = Field(3, ge=1, le=MAX_VARIANTS)
    platform: str = Field(
        DEFAULT_PLACEMENT,
        description=f"placement (default {DEFAULT_PLACEMENT}): " + ", ".join(PLACEMENTS),
    )
    headline: PgText | None = Field(None, min_length=1, max_length=90, description="else written")
    call_to_action: PgText | None = Field(None, min_length=1, max_length=30)
    style: PgText | None = Field(None, max_length=200, description="added to every prompt")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED - MAX_VARIANTS, description="variant i uses seed + i"
    )
    steps: int | None = Field(None, ge=1, le=50, description="denoising steps; else the default")

    @field_validator("platform")
    @classmethod
    def _known_placement(cls, value: str) -> str:
        if value not in PLACEMENTS:
            raise ValueError(f"unknown placement {value!r}; use one of {', '.join(PLACEMENTS)}")
        return value

    @property
    def placement(self) -> Placement:
        return PLACEMENTS[self.platform]

    def defaults(self) -> dict[str, str]:
        """What the request left out and what stood in for it, for the answer."""
        said: dict[str, str] = {}
        if "brand" not in self.model_fields_set:
            said["brand"] = (
                f"none given: the product's name {self.brand.name!r} in "
                f"{', '.join(self.brand.primary_colors)}, neutrals allowed; send `brand` "
                "(name, primary_colors) for yours"
            )
        if "platform" not in self.model_fields_set:
            said["platform"] = (
                f"none given: {self.platform} ({self.placement.width}x{self.placement.height}); "
                f"send `platform`, one of {', '.join(PLACEMENTS)}"
            )
        return said


# Visual angles: variant i takes angle i, so the variants of an experiment differ on purpose.
ANGLES = (
    "clean studio product shot, soft light",
    "lifestyle scene of people using it at work",
    "bold minimal graphic composition",
    "close-up detail shot, shallow depth of field",
    "bright outdoor editorial photo",
    "flat vector illustration",
    "isometric 3D render",
    "dramatic high-contrast lighting",
)
NEGATIVE_PROMPT = "text, letters, watermark, logo, blurry, distorted, low quality"

# For prompts: the nearest of these names (by CIEDE2000) describes a brand colour.
COLOUR_NAMES: dict[str, RGB] = {
    "red": (220, 38, 38),
    "orange": (234, 88, 12),
    "yellow": (234, 179, 8),
    "green": (22, 163, 74),
    "teal": (13, 148, 136),
    "blue": (37, 99, 235),
    "navy": (30, 41, 99),
    "purple": (147, 51, 234),
    "pink": (219, 39, 119),
    "brown": (120, 72, 40),
    "black": (10, 10, 10),
    "white": (250, 250, 250),
    "grey": (128, 128, 128),
}
_NAME_LAB = srgb_to_lab(np.array(list(COLOUR_NAMES.values())))


def colour_name(rgb: RGB) -> str:
    distances = ciede2000(srgb_to_lab(np.array(rgb))[None, :], _NAME_LAB)
    return list(COLOUR_NAMES)[int(np.argmin(distances))]


def _composition(placement: Placement) -> str:
    if placement.aspect < 0.9:
        return "vertical composition, subject in the middle third, calm space at top and bottom"
    if placement.aspect > 1.2:
        return "wide composition, subject off-centre, calm space at the top"
    return "square composition, subject centred"


@dataclass(frozen=True)
class VariantBrief:
    variant: int
    angle: str
    prompt: str
    copy: Copy


def headline_for(request: GenerateRequest, variant: int) -> str:
    if request.headline:
        return request.headline
    name, features = request.product.name, request.product.features
    if not features:
        return (f"Meet {name}", f"{name}, made for you", f"Try {name} today")[variant % 3]
    feature = features[variant % len(features)]
    return (f"{name}: {feature}", f"{feature} with {name}", f"{feature}. {name}.")[
        (variant // len(features)) % 3
    ]


def plan_variants(request: GenerateRequest) -> list[VariantBrief]:
    """One brief per variant: the same product and brand, a different visual angle and,
    unless the caller fixed it, a different headline."""
    product, brand = request.product, request.brand
    colours = sorted({colour_name(c) for c in brand.colours})
    subject = f"{product.name}" + (f", {product.description}" if product.description else "")
    features = f", highlighting {', '.join(product.features)}" if product.features else ""
    briefs = []
    for i in range(request.variants):
        angle = ANGLES[i % len(ANGLES)]
        parts = [
            f"{angle}, advertisement for {subject}{features}",
            f"{' and '.join(colours)} brand colour palette",
            _composition(request.placement),
            "high quality, no text",
        ]
        if request.style:
            parts.append(request.style)
        briefs.append(
            VariantBrief(
                variant=i,
                angle=angle,
                prompt=", ".join(parts),
                copy=Copy(
                    headline=headline_for(request, i),
                    call_to_action=request.call_to_action or "Learn more",
                    disclaimers=tuple(brand.required_disclaimers),
                ),
            )
        )
    return briefs
