"""Fakes of the five ad platforms' APIs: what they share.

These are FAKES, not the vendors. Each platform's fake (fake_google_ads, fake_meta, fake_tiktok,
fake_linkedin, fake_amazon_ads) is a small FastAPI app that checks what the real API checks
(auth headers, API version, payload shape and JSON types, money precision) and answers with
the vendor's own error bodies, keeps state a test can seed and read (bids, budgets, delivery
rows), and pages reports as the vendor does. A connector under test talks to one through
`httpx.ASGITransport`, so no socket is opened.

Shared here: the log of every request as sent, scripted failures (`fail_next`) that each
fake renders in its vendor's shape, for circuit-breaker and throttle tests, an OAuth 2.0
token endpoint (`serve_oauth`) for the platforms that issue refresh tokens, and access tokens
that expire on the fake's clock (`issue_token`, `token_live`; set `now` to a test's clock).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

Failure = Literal["unavailable", "throttle"]


@dataclass(frozen=True)
class Recorded:
    """One request exactly as the fake received it."""

    method: str
    path: str
    query: str  # raw, still percent-encoded
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class FakeApi:
    """Base of the fakes: the app, the request log and the failure script."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._failures: list[tuple[Failure, int]] = []
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.tokens_issued = 0
        self._token_expiry: dict[str, datetime] = {}
        self.app = FastAPI()
        self.app.middleware("http")(self._intercept)
        self.add_routes(self.app)

    def add_routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        """The vendor's own answer for an outage or a throttle."""
        raise NotImplementedError

    def fail_next(self, failure: Failure, *, times: int = 1, retry_after_s: int = 30) -> None:
        """Answer the next `times` requests with a failure instead of serving them."""
        self._failures += [(failure, retry_after_s)] * times

    def serve_oauth(
        self,
        path: str,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        expires_in: int = 3600,
        rotate: bool = False,
    ) -> None:
        """Answer a refresh-token grant (RFC 6749 section 6) at `path` as the vendor's token
        endpoint does: form body, client credentials in it, `invalid_client` /
        `invalid_grant` as 400/401 JSON errors. Each grant issues a new access token and
        makes it the only one the API accepts (`access_token`); `rotate` also replaces the
        refresh token, as LinkedIn may. `tokens_issued` counts the grants."""
        self.refresh_token = refresh_token
        self.tokens_issued = 0

        @self.app.post(path)
        async def token(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if form.get("grant_type") != "refresh_token":
                return reply(400, {"error": "unsupported_grant_type"})
            if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
                return reply(401, {"error": "invalid_client", "error_description": "bad client"})
            if form.get("refresh_token") != self.refresh_token:
                return reply(
                    400, {"error": "invalid_grant", "error_description": "Token has been revoked."}
                )
            self.tokens_issued += 1
            self.access_token = f"access-{self.tokens_issued}-{uuid.uuid4().hex[:8]}"
            body: dict[str, Any] = {
                "access_token": self.access_token,
                "token_type": "Bearer",
                "expires_in": expires_in,
            }
            if rotate:
                self.refresh_token = body["refresh_token"] = f"refresh-{uuid.uuid4().hex[:8]}"
            return reply(200, body)

    def issue_token(self, lifetime_s: float, prefix: str = "access-") -> str:
        """A new access token the API accepts until `lifetime_s` from now on `now`."""
        self.tokens_issued += 1
        token = f"{prefix}{self.tokens_issued}-{uuid.uuid4().hex[:8]}"
        self._token_expiry[token] = self.now() + timedelta(seconds=lifetime_s)
        return token

    def token_live(self, request: Request) -> bool:
        """Whether the request's Bearer token was issued here and has not expired."""
        expiry = self._token_expiry.get(bearer(request) or "")
        return expiry is not None and self.now() < expiry

    def client(self, base_url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=base_url)

    async def _intercept(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        body = await request.body()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if self._failures:
            return self.failure_response(*self._failures.pop(0))
        return await call_next(request)


def bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme == "Bearer" else None


def parse_json(body: bytes) -> Any:
    """A request body as the vendors read it: numbers keep their digits."""
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError:
        return None


def is_number(value: Any) -> bool:
    """A JSON number (not a string, not a boolean)."""
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def decimals(value: Decimal | int) -> int:
    """Digits after the decimal point."""
    exponent = Decimal(value).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def request_id() -> str:
    return uuid.uuid4().hex


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class BudgetedDelivery:
    """What a platform's auction delivers to a campaign on a day, held to the campaign's daily
    budget as the platform's terms allow (`day_factor`: Google delivers up to 2x an average
    daily budget on a day, Meta up to 1.75x). A test says how much the auction *would*
    deliver; the fake delivers as much of it as the budget in force leaves room for."""

    day_factor: Fraction
    spent: dict[tuple[str, date], int] = field(default_factory=dict)  # (campaign, day) -> micros

    def allow(self, campaign: str, day: date, budget_micros: int | None, want_micros: int) -> int:
        """How much of `want_micros` the campaign may still spend on `day` (no budget: all)."""
        spent = self.spent.get((campaign, day), 0)
        room = want_micros
        if budget_micros is not None:
            most = budget_micros * self.day_factor.numerator // self.day_factor.denominator
            room = max(0, min(want_micros, most - spent))
        self.spent[(campaign, day)] = spent + room
        return room


def running_row(rows: list[dict[str, Any]], **key: Any) -> dict[str, Any]:
    """The report row whose fields equal `key` (one per object and day, as the platforms
    report running totals), added when there is none yet."""
    for row in rows:
        if all(row.get(name) == value for name, value in key.items()):
            return row
    rows.append(dict(key))
    return rows[-1]
