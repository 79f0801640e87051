"""The FastAPI layer every app shares, exercised in-process (no Ray, no database)."""

import asyncio
from decimal import Decimal
from uuid import uuid4

import grpc
from fastapi.testclient import TestClient
from pydantic import BaseModel

from deployments._serve import ServiceRuntime, create_service_api, status_for
from kiki.auth import TENANT_ADMIN, Grant, Tenant, generate_api_key, hash_api_key, key_prefix
from kiki.config import Settings
from kiki.errors import (
    Conflict,
    FailedPrecondition,
    InvalidInput,
    KikiError,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from kiki.money import DecimalAmount


class Echo(BaseModel):
    amount: DecimalAmount


def make_client() -> TestClient:
    api = create_service_api("test", "Test", "test app")

    @api.post("/echo")
    async def echo(body: Echo) -> dict:
        return {"amount": format(body.amount, "f"), "type": type(body.amount).__name__}

    @api.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise {
            "invalid": InvalidInput("bad"),
            "limited": RateLimited("slow down", retry_after_s=2.4),
            "crash": RuntimeError("secret detail"),
        }[kind]

    return TestClient(api, raise_server_exceptions=False)


def test_json_numbers_reach_the_model_as_exact_decimals() -> None:
    client = make_client()
    # As a float this would be 1234567.1234560000...; Decimal keeps the digits as sent.
    resp = client.post("/echo", content=b'{"amount": 1234567.123456}',
                       headers={"content-type": "application/json"})  # fmt: skip
    assert resp.json() == {"amount": "1234567.123456", "type": "Decimal"}
    assert Decimal(resp.json()["amount"]) * 1_000_000 == 1234567123456


def test_errors_have_one_shape_and_the_right_status() -> None:
    client = make_client()
    resp = client.get("/boom/invalid")
    assert resp.status_code == 400
    assert resp.json() == {"error": {"code": "invalid_input", "message": "bad"}}
    resp = client.get("/boom/limited")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    resp = client.get("/boom/crash")
    assert resp.status_code == 500
    assert "secret detail" not in resp.text and resp.json()["error"]["code"] == "internal"
    resp = client.post("/echo", json={"amount": "twelve"})
    message = resp.json()["error"]["message"]  # refused by the model, the field named
    assert resp.status_code == 422 and "amount" in message and "not a decimal number" in message
    resp = client.post("/echo", json={})
    assert resp.status_code == 422 and "amount" in resp.json()["error"]["message"]
    resp = client.get("/nowhere")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_every_domain_error_maps_to_http_and_grpc() -> None:
    expected = {
        InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
        Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
        NotFound: (404, grpc.StatusCode.NOT_FOUND),
        Conflict: (409, grpc.StatusCode.ABORTED),
        FailedPrecondition: (409, grpc.StatusCode.FAILED_PRECONDITION),
        Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
        KikiError: (500, grpc.StatusCode.INTERNAL),
    }
    for cls, statuses in expected.items():
        assert status_for(cls("x")) == statuses
    assert status_for(RateLimited("x", retry_after_s=1))[0] == 429


def test_each_api_key_has_its_own_token_bucket_its_sessions_share() -> None:
    # Outside Ray each replica limits on its own (tests/integration/test_key_rates.py shows the
    # cluster-wide limit).
    runtime = ServiceRuntime("test", Settings(api_rate_per_s=1, api_burst=2))
    tenant = Tenant(id=uuid4(), name="acme")
    busy, calm = generate_api_key()[0], generate_api_key()[0]
    for key in (busy, calm):
        grant = Grant(tenant=tenant, key_id=uuid4(), prefix=key_prefix(key),
                      scopes=TENANT_ADMIN, expires_at=None)  # fmt: skip
        runtime._keys.put(hash_api_key(key), grant)  # known keys: no database round trip

    async def calls() -> None:
        assert (await runtime.grant(busy)).tenant == tenant
        assert (await runtime.grant(busy)).tenant == tenant
        try:
            await runtime.grant(busy)
        except RateLimited as exc:
            assert 0 < exc.retry_after_s <= 1
        else:
            raise AssertionError("the third call within a second should be limited")
        assert (await runtime.grant(calm)).tenant == tenant  # other keys are unaffected
        # A console session of the busy key draws on the key's bucket: no fresh burst.
        runtime._keys.put(hash_api_key("session-token"), runtime._keys.get(hash_api_key(busy)))
        try:
            await runtime.grant(None, "session-token")
        except RateLimited:
            pass
        else:
            raise AssertionError("a new session of a limited key should be limited too")

    asyncio.run(calls())


def test_malformed_json_is_a_422_that_says_why() -> None:
    client = make_client()
    json_type = {"content-type": "application/json"}
    cases = {
        b'{"amount": NaN}': "NaN is not a JSON number",
        b'{"amount": -Infinity}': "-Infinity is not a JSON number",
        b'{"amount": ' + b"9" * 5000 + b"}": "more than 4,300 digits",
        b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
        b'{"amount": "\xff\xfe"}': "at character 12: not UTF-8",
        b'{"amount": 1e400}': "is too large",  # parsed exactly, refused by the type
    }
    for body, reason in cases.items():
        resp = client.post("/echo", content=body, headers=json_type)
        assert resp.status_code == 422, (body[:40], resp.text)
        assert reason in resp.json()["error"]["message"], (body[:40], resp.text)


def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed() -> None:
    api = create_service_api("test", "Test", "test app")
    api.state.runtime = ServiceRuntime("test", Settings(max_body_bytes=1024))

    @api.post("/echo")
    async def echo(body: Echo) -> dict:
        return {"amount": format(body.amount, "f")}

    client = TestClient(api, raise_server_exceptions=False)
    padded = b'{"amount": 1' + b" " * 1100 + b"}"
    declared = client.post("/echo", content=padded, headers={"content-type": "application/json"})

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield padded[:600]
        yield padded[600:]

    streamed = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    for resp in (declared, streamed):
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "body_too_large"
        assert "1,024 bytes (KIKI_MAX_BODY_BYTES)" in resp.json()["error"]["message"]
    small = client.post("/echo", json={"amount": "1.5"})
    assert small.status_code == 200 and small.json() == {"amount": "1.5"}


def test_a_path_with_a_nul_or_bytes_that_are_not_utf8_is_a_400() -> None:
    client = make_client()
    for path, reason in (("/boom/a%00b", "NUL"), ("/boom/a%FFb", "not UTF-8")):
        resp = client.get(path)
        assert resp.status_code == 400 and reason in resp.json()["error"]["message"], resp.text
    assert client.get("/nowhere/caf%C3%A9").status_code == 404  # UTF-8 passes on to routing
