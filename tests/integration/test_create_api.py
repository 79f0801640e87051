"""SyncCreate over HTTP through Serve with the built-in placeholder pipeline (64 px, 2 steps):
generate, reproduce by seed, fetch creatives and images, refuse unsafe text, A/B results,
and the metrics in both Prometheus exports."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # read at collection, before Ray starts the replicas

import base64
import hashlib
import io
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from kiki.db.pool import connect
from tests.integration.conftest import RunningPlatform, new_key, run

SEED_BODY = {
    "product": {"name": "CloudSync Pro", "features": ["Real-time sync", "Encryption"]},
    "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
    "variants": 3,
    "platform": "tiktok_9_16",
}
TINY = {"steps": 2}


@pytest.fixture(scope="module")
def create(platform: RunningPlatform) -> Iterator[httpx.Client]:
    key = run(new_key(platform.database_url, "create-api"))
    # The generator scales to zero: the first call waits for a replica to load the pipeline.
    with httpx.Client(
        base_url=f"{platform.base_url}/create", timeout=120, headers={"X-API-Key": key}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def generated(create: httpx.Client) -> dict:
    resp = create.post("/api/v1/generate", json={**SEED_BODY, **TINY, "seed": 1234})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_the_seed_request_gives_three_placeholder_variants_at_the_exact_spec(
    create: httpx.Client, generated: dict
) -> None:
    body = generated
    assert body["model"]["placeholder"] is True
    assert "KIKI_CREATIVE_MODEL" in body["model"]["notice"]
    assert body["placement"]["name"] == "tiktok_9_16"
    assert (body["placement"]["width"], body["placement"]["height"]) == (1080, 1920)
    assert body["placement"]["fit"] == "cover-crop" and body["steps"] == 2
    assert body["safety"]["text"] == "passed" and body["withheld"] == []
    assert "variants[0].prompt" in body["safety"]["checked_fields"]
    variants = body["variants"]
    assert [v["variant"] for v in variants] == [0, 1, 2]
    assert [v["seed"] for v in variants] == [1234, 1235, 1236]
    assert len({v["headline"] for v in variants}) == 3
    for v in variants:
        assert (v["width"], v["height"]) == (1080, 1920)
        assert v["fit"]["method"] == "cover-crop" and v["fit"]["source"] == [48, 88]
        report = v["compliance"]
        assert 0 <= report["score"] <= 100
        assert set(report["breakdown"]) == {"palette", "contrast", "copy", "format"}
        assert report["breakdown"]["format"]["score"] == 100
        assert report["breakdown"]["contrast"]["score"] == 100
        assert v["safety"] == {
            "checked": False,
            "safe": True,
            "classifier": None,
            "unsafe_probability": None,
            "reason": "no image-safety model configured (set KIKI_IMAGE_SAFETY_MODEL)",
        }

        image = create.get(v["image_url"].removeprefix("/create"))
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert hashlib.sha256(image.content).hexdigest() == v["sha256"]
        assert Image.open(io.BytesIO(image.content)).size == (1080, 1920)

        meta = create.get(f"/api/v1/creatives/{v['creative_id']}")
        assert meta.status_code == 200, meta.text
        assert meta.json()["sha256"] == v["sha256"] and meta.json()["seed"] == v["seed"]
        assert meta.json()["layout"]["placement"] == "tiktok_9_16"


def test_the_same_seed_reproduces_the_same_images(create: httpx.Client, generated: dict) -> None:
    again = create.post("/api/v1/generate", json={**SEED_BODY, **TINY, "seed": 1234})
    assert again.status_code == 201, again.text
    assert again.json()["experiment_id"] != generated["experiment_id"]
    assert [v["sha256"] for v in again.json()["variants"]] == [
        v["sha256"] for v in generated["variants"]
    ]


def test_other_placements_and_a_logo(create: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (120, 60), (255, 255, 255, 255)).save(buffer, format="PNG")
    brand = {
        **SEED_BODY["brand"],
        "secondary_colors": ["#facc15"],
        "banned_words": ["encryption"],
        "required_disclaimers": ["Terms apply."],
        "logo_png_base64": base64.b64encode(buffer.getvalue()).decode(),
    }
    resp = create.post(
        "/api/v1/generate",
        json={**SEED_BODY, **TINY, "brand": brand, "variants": 2, "platform": "linkedin_1_91_1"},
    )
    assert resp.status_code == 201, resp.text
    first, second = resp.json()["variants"]
    assert (first["width"], first["height"]) == (1200, 627)
    assert first["disclaimers"] == ["Terms apply."]
    assert first["compliance"]["breakdown"]["logo"]["score"] == 100
    assert first["compliance"]["breakdown"]["copy"]["score"] == 100
    # Variant 1's headline names the banned feature: its copy score halves.
    assert second["headline"] == "CloudSync Pro: Encryption"
    assert second["compliance"]["breakdown"]["copy"]["detail"]["banned_words_found"] == [
        "encryption"
    ]


def test_the_seeds_minimal_call_works_and_names_the_defaults_it_used(
    create: httpx.Client,
) -> None:
    """The seed's call exactly as written: no brand, no placement, no steps."""
    resp = create.post(
        "/api/v1/generate", json={"product": {"name": "Test Product"}, "variants": 1}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body["defaults"]) == {"brand", "platform"}
    assert "'Test Product' in #3b82f6" in body["defaults"]["brand"]
    assert body["defaults"]["platform"].startswith("none given: meta_1_1")
    assert body["placement"]["name"] == "meta_1_1"
    [variant] = body["variants"]
    assert (variant["width"], variant["height"]) == (1080, 1080)
    assert variant["headline"] == "Meet Test Product"
    assert create.post("/api/v1/generate", json={"variants": 1}).json()["error"]["message"] == (
        "product: Field required (see the API docs at <prefix>/docs)"
    )


def test_unsafe_or_malformed_requests_are_refused_with_reasons(create: httpx.Client) -> None:
    rude = create.post("/api/v1/generate", json={**SEED_BODY, "headline": "This shit syncs"})
    assert rude.status_code == 400
    error = rude.json()["error"]
    assert error["code"] == "unsafe_content"
    assert "headline: profanity or abuse" in error["message"]
    assert "Rewrite those fields" in error["message"]

    product = {"name": "CloudSync Vape", "features": ["Lose weight fast"]}
    blocked = create.post("/api/v1/generate", json={**SEED_BODY, "product": product})
    assert blocked.status_code == 400
    message = blocked.json()["error"]["message"]
    assert "product.name: 'vape' is not allowed in tiktok ads" in message
    assert "product.features[0]: 'lose weight fast' is not allowed in tiktok ads" in message

    unknown = create.post("/api/v1/generate", json={**SEED_BODY, "platform": "myspace"})
    assert unknown.status_code == 422
    assert "unknown placement 'myspace'" in unknown.json()["error"]["message"]
    colour = create.post(
        "/api/v1/generate",
        json={**SEED_BODY, "brand": {"name": "T", "primary_colors": ["blue"]}},
    )
    assert colour.status_code == 422 and "six hex digits" in colour.text


def test_ab_results_are_recorded_once_per_key_and_summed(
    create: httpx.Client, generated: dict, platform: RunningPlatform
) -> None:
    experiment = generated["experiment_id"]
    a, b, c = (v["creative_id"] for v in generated["variants"])
    report = {
        "source": "syncflow",
        "results": [
            {"creative_id": a, "impressions": 1000, "clicks": 20, "conversions": 2},
            {"creative_id": b, "impressions": 1000, "clicks": 60, "conversions": 9},
        ],
    }
    path = f"/api/v1/experiments/{experiment}/results"
    first = create.post(path, json=report, headers={"Idempotency-Key": "flow-tick-1"})
    assert first.status_code == 200, first.text
    assert first.json()["replayed"] is False
    retry = create.post(path, json=report, headers={"Idempotency-Key": "flow-tick-1"})
    assert retry.json()["replayed"] is True
    more = {"results": [{"creative_id": b, "impressions": 500, "clicks": 10, "conversions": 1}]}
    assert create.post(path, json={**more, "idempotency_key": "flow-tick-2"}).status_code == 200

    view = create.get(f"/api/v1/experiments/{experiment}").json()
    totals = {
        v["creative_id"]: (v["impressions"], v["clicks"], v["conversions"])
        for v in view["variants"]
    }
    assert totals == {a: (1000, 20, 2), b: (1500, 70, 10), c: (0, 0, 0)}
    by_id = {v["creative_id"]: v for v in view["variants"]}
    assert by_id[b]["ctr"] == pytest.approx(70 / 1500)
    assert by_id[c]["ctr"] is None and by_id[c]["p_best_ctr"] is None
    assert view["leader"] == b and by_id[b]["p_best_ctr"] > 0.9
    assert by_id[a]["p_best_ctr"] + by_id[b]["p_best_ctr"] == pytest.approx(1.0, abs=1e-3)

    stranger = {
        "results": [
            {
                "creative_id": generated["experiment_id"],
                "impressions": 1,
                "clicks": 0,
                "conversions": 0,
            }
        ]
    }
    assert create.post(path, json=stranger).status_code == 400
    bad = {"results": [{"creative_id": a, "impressions": 1, "clicks": 5, "conversions": 0}]}
    assert "cannot exceed impressions" in create.post(path, json=bad).text

    other_key = run(new_key(platform.database_url, "create-other"))
    headers = {"X-API-Key": other_key}
    assert create.get(f"/api/v1/experiments/{experiment}", headers=headers).status_code == 404
    assert create.get(f"/api/v1/creatives/{a}", headers=headers).status_code == 404
    assert create.get(f"/api/v1/creatives/{a}/image", headers=headers).status_code == 404


def test_generation_metrics_in_both_prometheus_exports(
    create: httpx.Client, generated: dict, platform: RunningPlatform
) -> None:
    text = httpx.get(f"{platform.base_url}/create/metrics", timeout=10).text  # no key needed
    assert "kiki_create_generation_seconds_bucket" in text
    assert "kiki_create_queue_depth 0.0" in text
    generated_lines = [
        ln
        for ln in text.splitlines()
        if ln.startswith("kiki_create_images_generated_total{")
        and 'placement="tiktok_9_16"' in ln
        and 'placeholder="true"' in ln
    ]
    assert generated_lines and float(generated_lines[0].split()[-1]) >= 3, text

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ray_text = httpx.get(platform.metrics_url, timeout=5).text
        if "ray_kiki_create_images_generated" in ray_text and (
            "ray_kiki_create_generation_seconds_bucket" in ray_text
        ):
            break
        time.sleep(1)
    else:
        pytest.fail("ray_kiki_create_* never reached Ray's Prometheus export")
    model = create.get("/api/v1/model").json()
    assert model["placeholder"] is True and model["configured"] is None


async def creatives_billed(url: str, tenant_id: str) -> int:
    conn = await connect(url)
    try:
        total = await conn.fetchval(
            """SELECT coalesce(sum((properties->>'quantity')::numeric), 0) FROM billing_events
               WHERE metric_code = 'creatives_generated' AND customer_id = $1""",
            tenant_id,
        )
    finally:
        await conn.close()
    return int(total)


def test_creatives_generated_are_metered_for_billing(
    create: httpx.Client, generated: dict, platform: RunningPlatform
) -> None:
    tenant = create.get("/api/v1/whoami").json()["tenant_id"]
    made = len(generated["variants"])
    deadline = time.monotonic() + 30  # replicas report every 5 s
    billed = 0
    while time.monotonic() < deadline and billed < made:
        time.sleep(1)
        billed = run(creatives_billed(platform.database_url, tenant))
    assert billed >= made
