"""Malformed requests beyond what schemathesis draws, and gRPC calls no stub would send.

HTTP: for every operation that takes a JSON body, its body oversized, nested 100,000 deep,
in bytes that are not UTF-8, under the wrong or no content type, and with its numbers made
huge (1e400, 5,000 digits), NaN, Infinity or negative; for every operation with path
parameters, each parameter very long, with a percent-encoded slash, a NUL, or a byte that is
not UTF-8. Each must be refused with a clean 4xx (413 for the oversized body). The bodies
start from one the operation accepted while fuzzing (else the first it was sent), so what
is refused is the malformed part and not a missing field.

gRPC (`pb.LTVService/PredictLTV`): bytes that are not a protobuf, a message past the server's
largest, fields of the wrong wire type, NaN, infinite, huge and negative values, a bad date,
no API key: each answered with its status, never UNKNOWN or INTERNAL, and then a good call
is still answered.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel

from protos import kiki_pb2

DEEP = 100_000
LONG_PARAM = 4096
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_MONEY = re.compile(r"amount|budget|bid|price|spend|credit|cap|micros|minor", re.IGNORECASE)


@dataclass(frozen=True)
class Malformed:
    """One malformed request: what it is, its body and content type (None: no header), the
    statuses that are right for it, and a shell command that writes its body for curl."""

    name: str
    body: bytes | None
    content_type: str | None
    expected: range
    body_shell: str | None = None


CLEAN_4XX = range(400, 500)


def ansi_c(data: bytes) -> str:
    """`data` as a bash $'...' string: every byte outside printable ASCII as \\xNN."""
    out = []
    for b in data:
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in "\\'" else f"\\x{b:02x}")
    return "$'" + "".join(out) + "'"


def body_cases(example: Any, max_body_bytes: int) -> Iterator[Malformed]:
    """The malformed bodies for an operation whose accepted JSON body was `example`."""
    text = json.dumps(example, default=str).encode()
    pad = max_body_bytes + 1 - len(b'{"pad": ""}')
    pad_shell = f"(printf '{{\"pad\": \"'; head -c {pad} /dev/zero | tr '\\0' a; printf '\"}}')"
    yield Malformed(f"a body of {max_body_bytes + 1:,} bytes", b'{"pad": "' + b"a" * pad + b'"}',
                    "application/json", range(413, 414), pad_shell)  # fmt: skip
    deep_shell = f'python3 -c \'print("[" * {DEEP} + "]" * {DEEP}, end="")\''
    yield Malformed(f"JSON nested {DEEP:,} deep", b"[" * DEEP + b"]" * DEEP,
                    "application/json", CLEAN_4XX, deep_shell)  # fmt: skip
    yield Malformed(
        "bytes that are not UTF-8", b'{"name": "\xff\xfe"}', "application/json", CLEAN_4XX
    )
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        yield Malformed(
            f"JSON sent as {content_type or 'no content type'}", text, content_type, CLEAN_4XX
        )
    if not _numbers(example):
        return  # nothing numeric to spoil: the body would be the accepted one again
    for name, literal in (("1e400", "1e400"), ("a 5,000-digit integer", "9" * 5000),
                          ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
                          ("negated (negative money)", None)):  # fmt: skip
        yield Malformed(f"every number {name}", _spoiled(example, literal), "application/json",
                        CLEAN_4XX)  # fmt: skip


def path_values() -> Iterator[tuple[str, str]]:
    """Odd path parameter values, percent-encoded as they go on the wire."""
    yield f"a {LONG_PARAM:,}-character parameter", "a" * LONG_PARAM
    yield "a percent-encoded slash", "a%2Fb"
    yield "a NUL", "a%00b"
    yield "a byte that is not UTF-8", "a%FFb"


def path_with(template: str, params: dict[str, Any], odd: str, value: str) -> str:
    """`template` with `odd` set to the raw (already encoded) `value` and every other
    parameter as the accepted case had it."""
    path = template
    for name, given in params.items():
        path = path.replace(f"{{{name}}}", value if name == odd else quote(str(given), safe=""))
    return path


def _is_number(value: Any, key: str) -> bool:
    """A JSON number, or a numeric string under a money field's name (amounts are sent as
    strings too); a numeric string elsewhere is an identifier, which "-1" may well be."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        return True
    return isinstance(value, str) and bool(_NUMBER.match(value)) and bool(_MONEY.search(key))


def _numbers(value: Any, key: str = "") -> bool:
    if isinstance(value, dict):
        return any(_numbers(v, k) for k, v in value.items())
    if isinstance(value, list):
        return any(_numbers(v, key) for v in value)
    return _is_number(value, key)


_MARK = "\u0000kiki-fuzz-number\u0000"


def _spoiled(example: Any, literal: str | None) -> bytes:
    """The example as JSON with every number (and numeric string, as money is sent) replaced:
    by `literal` as raw JSON text, or negated when `literal` is None."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if _is_number(value, key):
            if literal is not None:
                return _MARK
            if isinstance(value, str):
                return "-" + value.lstrip("-") if value.strip("-0.") else "-1"
            return -(abs(value) or 1)
        return value

    text = json.dumps(walk(example), default=str)
    return text.replace(json.dumps(_MARK), literal or "").encode()


class GrpcResult(BaseModel):
    name: str
    expected: list[str]
    code: str
    details: str

    @property
    def ok(self) -> bool:
        return self.code in self.expected


def grpc_probes(target: str, api_key: str, max_message_bytes: int) -> list[GrpcResult]:
    """Every malformed call, then a health check (SERVING) and a good PredictLTV (answered
    OK, or FAILED_PRECONDITION / NOT_FOUND for a tenant without a model or that customer)."""
    auth = [("application", "value"), ("x-api-key", api_key)]
    invalid = ["INVALID_ARGUMENT"]

    def message(**fields: Any) -> bytes:
        return kiki_pb2.PredictLTVRequest(**fields).SerializeToString()

    cases: list[tuple[str, bytes, list[tuple[str, str]], list[str]]] = [
        ("bytes that are not a protobuf", b"\x0a\xff\xff", auth, invalid),
        (f"a message over {max_message_bytes:,} bytes",
         message(customer_id="a" * (max_message_bytes + 1)), auth, ["RESOURCE_EXHAUSTED"]),
        ("customer_id as a varint, spend as bytes", b"\x08\x01\x12\x03abc", auth, invalid),
        ("spend NaN", message(customer_id="fuzz", spend=math.nan), auth, invalid),
        ("spend Infinity", message(customer_id="fuzz", spend=math.inf), auth, invalid),
        ("spend 1e308", message(customer_id="fuzz", spend=1e308), auth, invalid),
        ("spend negative", message(customer_id="fuzz", spend=-5.0), auth, invalid),
        ("engagement_score NaN", message(customer_id="fuzz", engagement_score=math.nan), auth,
         invalid),
        ("as_of not a date", message(customer_id="fuzz", as_of="2026-13-45"), auth, invalid),
        ("customer_id with a NUL", message(customer_id="a\x00b"), auth, invalid),
        ("no x-api-key", message(customer_id="fuzz"), auth[:1], ["UNAUTHENTICATED"]),
        ("afterwards: a good PredictLTV", message(customer_id="fuzz", spend=12.5), auth,
         ["OK", "FAILED_PRECONDITION", "NOT_FOUND"]),
    ]  # fmt: skip
    results = []
    with grpc.insecure_channel(target) as channel:
        predict = channel.unary_unary("/pb.LTVService/PredictLTV")
        for name, payload, metadata, expected in cases:
            try:
                predict(payload, metadata=metadata, timeout=30)
                code, details = "OK", ""
            except grpc.RpcError as exc:
                code, details = exc.code().name, (exc.details() or "")[:200]
            results.append(GrpcResult(name=name, expected=expected, code=code, details=details))
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), metadata=auth[:1], timeout=30
            )
            code = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            code = exc.code().name
        results.append(GrpcResult(name="afterwards: health Check", expected=["SERVING"],
                                  code=code, details=""))  # fmt: skip
    return results
