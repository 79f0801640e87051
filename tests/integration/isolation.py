"""The machinery of the tenant-isolation walk (test_tenant_isolation.py, issue 19): request
templates with tenant A's ids in them, the kinds of isolation case, and the checks each kind
makes when tenant B calls a route.

A template names ids as `<name>` (`params={"campaign_id": "<budget>"}`, the same in bodies
and queries). Rendered with A's ids it is B reaching for A's things; rendered with ids nobody
has (`Walk.unused`) it asks for something that does not exist. Isolation means the two
answers cannot be told apart (A's things are invisible, not forbidden), B's lists do not
change when A makes things, and nothing B does changes what A sees.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

_PLACEHOLDER = re.compile(r"<([a-z_]+)>")
# Fields that differ between two otherwise equal answers (new rows, clocks, keys).
VOLATILE = frozenset(
    {"message_id", "inbox_id", "created_at", "updated_at", "idempotency_key", "last_used_at"}
)


def render(template: Any, ids: dict[str, str]) -> Any:
    """The template with every `<name>` replaced by ids[name] (a KeyError names a missing id)."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: ids[m.group(1)], template)
    if isinstance(template, dict):
        return {render(k, ids): render(v, ids) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [render(v, ids) for v in template]
    return template


@dataclass(frozen=True)
class Request:
    """One call to an app: `path` with the route's `{param}`s filled by `params` templates."""

    app: str
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    query: dict[str, Any] | None = None

    def send(self, http: httpx.Client, ids: dict[str, str]) -> Sent:
        values = {name: render(t, ids) for name, t in self.params.items()}
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.path)
        body, query = render(self.json, ids), render(self.query, ids)
        response = http.request(self.method, f"/{self.app}{path}", json=body, params=query)
        return Sent(f"{self.method} {response.request.url} {json.dumps(body)}", response)


@dataclass(frozen=True)
class Sent:
    """A response, with the request as text (what B sent is no leak when it is echoed)."""

    request: str
    response: httpx.Response

    @property
    def status(self) -> int:
        return self.response.status_code

    def view(self, swap: dict[str, str] | None = None) -> Any:
        """What must match between two answers: the status, the error code of an error and
        the body of a success, without VOLATILE fields; `swap` renames ids first."""
        if self.status >= 400:
            return self.status, self._json().get("error", {}).get("code")
        text = self.response.text
        for old, new in (swap or {}).items():
            text = text.replace(old, new)
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return self.status, _without_volatile(body)

    def _json(self) -> dict[str, Any]:
        try:
            found = self.response.json()
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def leaked(self, markers: set[str]) -> list[str]:
        """A's markers in the answer that B did not send itself."""
        text = self.response.text
        return sorted(m for m in markers if m in text and m not in self.request)


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


@dataclass
class Walk:
    """Tenants A and B over HTTP, A's world (`ids`, `unused`, `markers`), A's view of its
    things (`snapshots`, read by `reads`), and B's answers before A existed (`baseline`)."""

    a: httpx.Client
    b: httpx.Client
    ids: dict[str, str]
    unused: dict[str, str]
    markers: set[str]
    reads: dict[str, Request]
    snapshots: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)

    def read_as_a(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        chosen = self.reads if names is None else {n: self.reads[n] for n in names}
        return {name: r.send(self.a, self.ids).view() for name, r in chosen.items()}

    def changed_for_a(self, names: tuple[str, ...] | None = None) -> list[str]:
        """The snapshots of A's things that no longer read as they did."""
        now = self.read_as_a(names)
        return [
            f"A's {n} changed: {self.snapshots[n]} -> {v}"
            for n, v in now.items()
            if v != self.snapshots[n]
        ]


Key = str  # "app METHOD path", the path as in the app's OpenAPI


@dataclass(frozen=True)
class Case:
    """How one route keeps A's things from B. `params`, `json` and `query` are templates;
    `watch` names the snapshots of A's things the route could touch (re-read after it; all of
    them are re-read at the end of the walk anyway)."""

    kind: ClassVar[str]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    query: dict[str, Any] | None = None
    expect: tuple[int, ...] = (200,)
    watch: tuple[str, ...] = ()

    def request(self, key: Key) -> Request:
        app, method, path = key.split(" ")
        return Request(app, method, path, self.params, self.json, self.query)

    def send(self, key: Key, walk: Walk) -> Sent:
        """B's call with A's ids."""
        return self.request(key).send(walk.b, walk.ids)

    def check(self, key: Key, walk: Walk) -> list[str]:
        """What is wrong (nothing when B is kept out)."""
        sent = self.send(key, walk)
        problems = self.judge(key, sent, walk)
        if sent.status == 422:
            problems.append(
                f"the case's request is invalid, so it proves nothing: {sent.response.text[:300]}"
            )
        elif sent.status not in self.expect:
            problems.append(
                f"answered {sent.status}, expected {sorted(self.expect)}: "
                f"{sent.response.text[:300]}"
            )
        if leaked := sent.leaked(walk.markers):
            problems.append(f"A's {leaked} in the answer: {sent.response.text[:300]}")
        if self.watch:
            problems += walk.changed_for_a(self.watch)
        return problems

    def judge(self, key: Key, sent: Sent, walk: Walk) -> list[str]:
        return []


@dataclass(frozen=True)
class Reach(Case):
    """B names A's things by id (in the path, the body or the query): the answer is the one
    for an id nobody has (404 by default, or B's own empty view where `expect` says so),
    never a 403, 409 or 422 that would tell B the id exists."""

    kind: ClassVar[str] = "reach"
    expect: tuple[int, ...] = (404,)

    def judge(self, key: Key, sent: Sent, walk: Walk) -> list[str]:
        stranger = self.request(key).send(walk.b, walk.unused)
        swap = {walk.ids[n]: walk.unused[n] for n in walk.ids if walk.ids[n] != walk.unused[n]}
        if sent.view(swap) != stranger.view():
            return [f"A's ids answer {sent.view(swap)}, ids nobody has {stranger.view()}"]
        return []


@dataclass(frozen=True)
class Browse(Case):
    """B lists, searches or aggregates (A's ids may be in the query): B's answer is the one
    it got before A created anything."""

    kind: ClassVar[str] = "browse"

    def judge(self, key: Key, sent: Sent, walk: Walk) -> list[str]:
        before = walk.baseline[key]
        return (
            [] if sent.view() == before else [f"was {before} before A existed, now {sent.view()}"]
        )


@dataclass(frozen=True)
class Reuse(Case):
    """B creates something with A's client-chosen id or name: B gets its own (never a 409
    that tells B A's exists) and A's stays as it was. `expect_json` is what B's answer must
    hold (e.g. nothing counted as a duplicate of A's)."""

    kind: ClassVar[str] = "reuse"
    expect: tuple[int, ...] = (200, 201, 204)
    expect_json: dict[str, Any] = field(default_factory=dict)

    def judge(self, key: Key, sent: Sent, walk: Walk) -> list[str]:
        body = sent.response.json() if self.expect_json and sent.status < 300 else {}
        wrong = {k: body.get(k) for k, v in self.expect_json.items() if body.get(k) != v}
        return [f"expected {self.expect_json} in the answer, got {wrong}"] if wrong else []


@dataclass(frozen=True)
class Own(Case):
    """The route answers about the caller only, or about nothing tenant-owned (whoami, the
    catalogue of placements, B's own period close): no trace of A in it."""

    kind: ClassVar[str] = "own"
    expect: tuple[int, ...] = (200, 201)


@dataclass(frozen=True)
class Public(Case):
    """No API key (health, Prometheus text, Stripe's signed events): nothing of A's in it."""

    kind: ClassVar[str] = "public"

    def send(self, key: Key, walk: Walk) -> Sent:
        with httpx.Client(base_url=walk.b.base_url, timeout=walk.b.timeout) as anonymous:
            return self.request(key).send(anonymous, walk.ids)


@dataclass(frozen=True)
class Operator(Case):
    """Platform-wide state (the ad platforms' shared breakers, the bid-loop shards): shared by
    every tenant, for the platform's operator only; a tenant's key gets 403."""

    kind: ClassVar[str] = "operator"
    expect: tuple[int, ...] = (403,)
