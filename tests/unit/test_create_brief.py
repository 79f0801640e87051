"""The generate request at the boundary, and the variant briefs planned from it."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from pydantic import ValidationError

from kiki.create.brief import GenerateRequest, colour_name, decode_logo, plan_variants

SEED_BODY = {
    "product": {"name": "CloudSync Pro", "features": ["Real-time sync", "Encryption"]},
    "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
    "variants": 3,
    "platform": "tiktok_9_16",
}


def with_(**changes: object) -> dict:
    body = {**SEED_BODY, **changes}
    return body


def png_base64(size: tuple[int, int] = (40, 20), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (255, 0, 0, 255)).convert("RGB" if fmt == "JPEG" else "RGBA").save(
        buffer, format=fmt
    )
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_seed_body_plans_three_different_variants() -> None:
    request = GenerateRequest.model_validate(SEED_BODY)
    briefs = plan_variants(request)
    assert [b.variant for b in briefs] == [0, 1, 2]
    assert len({b.prompt for b in briefs}) == 3 and len({b.angle for b in briefs}) == 3
    assert [b.copy.headline for b in briefs] == [
        "CloudSync Pro: Real-time sync",
        "CloudSync Pro: Encryption",
        "Real-time sync with CloudSync Pro",
    ]
    for b in briefs:
        assert "CloudSync Pro" in b.prompt and "blue brand colour palette" in b.prompt
        assert "vertical composition" in b.prompt
        assert b.copy.call_to_action == "Learn more" and b.copy.disclaimers == ()


def test_fixed_copy_and_disclaimers_are_used_in_every_variant() -> None:
    brand = {**SEED_BODY["brand"], "required_disclaimers": ["Terms apply."]}
    request = GenerateRequest.model_validate(
        with_(brand=brand, headline="Sync it all", call_to_action="Try free", style="pastel")
    )
    for b in plan_variants(request):
        assert (b.copy.headline, b.copy.call_to_action) == ("Sync it all", "Try free")
        assert b.copy.disclaimers == ("Terms apply.",) and b.prompt.endswith("pastel")


@pytest.mark.parametrize(
    ("rgb", "name"), [((59, 130, 246), "blue"), ((250, 204, 21), "yellow"), ((5, 5, 5), "black")]
)
def test_brand_colours_are_named_by_the_nearest_colour(rgb: tuple, name: str) -> None:
    assert colour_name(rgb) == name


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (with_(platform="instagram"), "unknown placement 'instagram'; use one of tiktok_9_16"),
        (with_(variants=9), "less than or equal to 8"),
        (with_(variants=0), "greater than or equal to 1"),
        (with_(brand={"name": "T", "primary_colors": ["blue"]}), "use six hex digits"),
        (with_(brand={"name": "T", "primary_colors": []}), "at least 1 item"),
        (with_(colour="red"), "Extra inputs are not permitted"),
        (with_(seed=-1), "greater than or equal to 0"),
        (with_(steps=51), "less than or equal to 50"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(body)
    assert message in str(info.value)


def test_the_minimal_request_gets_a_default_brand_and_placement_and_says_so() -> None:
    request = GenerateRequest.model_validate({"product": {"name": "Test Product"}, "variants": 1})
    assert request.brand.name == "Test Product" and request.brand.primary_colors == ["#3b82f6"]
    assert request.placement.name == "meta_1_1"
    said = request.defaults()
    assert set(said) == {"brand", "platform"}
    assert "'Test Product' in #3b82f6" in said["brand"] and "send `brand`" in said["brand"]
    assert said["platform"].startswith("none given: meta_1_1 (1080x1080)")
    assert GenerateRequest.model_validate(SEED_BODY).defaults() == {}
    # No product: the product is the error named, not the brand made from it.
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"variants": 1})
    assert [e["loc"] for e in info.value.errors() if e["type"] == "missing"] == [("product",)]


def test_colours_are_normalised() -> None:
    request = GenerateRequest.model_validate(
        with_(brand={"name": "T", "primary_colors": ["3B82F6"], "secondary_colors": ["#FACC15"]})
    )
    assert request.brand.primary_colors == ["#3b82f6"]
    assert request.brand.colours == ((59, 130, 246), (250, 204, 21))


def test_a_logo_must_be_a_small_png() -> None:
    logo = decode_logo(png_base64())
    assert logo.size == (40, 20) and logo.mode == "RGBA"
    brand = {**SEED_BODY["brand"], "logo_png_base64": png_base64()}
    assert GenerateRequest.model_validate(with_(brand=brand)).brand.rules().logo is not None
    for value, message in [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"hello").decode(), "not a readable image"),
        (png_base64(fmt="JPEG"), "send a PNG"),
        (png_base64(size=(5000, 10)), "8 to 4096 pixels"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode_logo(value)
