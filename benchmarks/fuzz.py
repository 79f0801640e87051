"""Fuzz a running platform with requests schemathesis generates from each app's OpenAPI.

For every operation of every app, Hypothesis draws cases from schemathesis's strategies (valid
requests and requests that break the schema), each sent with a fuzz tenant's `X-API-Key`.
The report counts answers per app and status class and lists every answer >= 500 and every
request that got no answer in time, each with a curl command that repeats it: issue 16's
promise is that no request, however malformed, gets a 5xx or hangs.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.strategies import SearchStrategy
from pydantic import BaseModel, Field
from schemathesis import Case, GenerationMode

from kiki.auth import create_api_key
from kiki.db.pool import connect

BODY_EXCERPT = 300
# Past this many hangs an app is wedged (issue 16): its other requests would only add a timeout
# each, so they are not sent and the operations are listed as abandoned.
MAX_HANGS_PER_APP = 2
_KEY_PLACEHOLDER = "KIKI_API_KEY"
_CLIENT_HEADERS = re.compile(r" -H '(User-Agent|Accept-Encoding|Accept|Connection): [^']*'")
# Shield routes that change state shared by every tenant: opening, resetting or feeding an ad
# platform's circuit breaker, or spending its rate budget, would fail or throttle the bid loop
# of every tenant (and the tests that run after a bounded fuzz on the same platform).
PLATFORM_WIDE: frozenset[tuple[str, str, str]] = frozenset(
    ("shield", "POST", f"/api/v1/platforms/{{platform}}/{action}")
    for action in ("open", "reset", "outcomes", "admit")
)


class AppCounts(BaseModel):
    app: str
    operations: int
    requests: int = 0
    by_class: dict[str, int] = Field(default_factory=dict, description="'2xx' ... '5xx'")


class Failure(BaseModel):
    """A request answered >= 500, or not answered within the request timeout (status None)."""

    app: str
    method: str
    path: str
    status: int | None
    seconds: float
    body: str = Field(description="the start of the answer, or why there was none")
    curl: str


class Slowest(BaseModel):
    app: str
    method: str
    path: str
    status: int | None
    seconds: float
    curl: str


class FuzzReport(BaseModel):
    base_url: str
    examples: int = Field(description="Hypothesis examples per operation and generation mode")
    seed: int | None
    apps: list[AppCounts]
    server_errors: list[Failure]
    timeouts: list[Failure]
    not_sent: int = Field(description="cases the HTTP client refused to send (e.g. bad headers)")
    excluded: list[str] = Field(description="operations left out, as 'app METHOD path'")
    abandoned: list[str] = Field(description="operations not sent: their app hung before")
    slowest: Slowest | None
    campaigns_stopped: int = Field(description="flow campaigns the fuzz left running, stopped")
    cleanup_error: str | None = Field(None, description="why the campaigns could not be stopped")
    seconds: float

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.apps)

    def count(self, status_class: str) -> int:
        return sum(a.by_class.get(status_class, 0) for a in self.apps)

    def table(self) -> str:
        """Counts per app and status class, then every failure with its reproducer."""
        classes = ("2xx", "3xx", "4xx", "5xx")
        head = f"{'app':<10} {'operations':>10} {'requests':>9} " + " ".join(
            f"{c:>6}" for c in classes
        )
        lines = [head]
        for a in [*self.apps, self._total()]:
            counts = " ".join(f"{a.by_class.get(c, 0):>6}" for c in classes)
            lines.append(f"{a.app:<10} {a.operations:>10} {a.requests:>9} {counts}")
        lines.append(
            f"\n{self.examples} examples per operation and mode (valid and invalid), "
            f"{self.seconds:.0f}s, {self.not_sent} cases not sendable, "
            f"{self.campaigns_stopped} campaigns stopped afterwards"
        )
        if self.slowest:
            s = self.slowest
            lines.append(f"slowest: {s.seconds:.2f}s  {s.app} {s.method} {s.path} -> {s.status}")
        if self.abandoned:
            lines.append(f"abandoned after {MAX_HANGS_PER_APP} hangs: {', '.join(self.abandoned)}")
        if self.cleanup_error:
            lines.append(f"campaigns not stopped: {self.cleanup_error}")
        for title, found in (("answers >= 500", self.server_errors), ("timeouts", self.timeouts)):
            lines.append(f"\n{title}: {len(found)}")
            for f in found:
                lines.append(f"  {f.app} {f.method} {f.path} -> {f.status} ({f.seconds:.2f}s)")
                lines.append(f"    {f.body}")
                lines.append(f"    {f.curl}")
        return "\n".join(lines)

    def _total(self) -> AppCounts:
        total: Counter[str] = Counter()
        for a in self.apps:
            total.update(a.by_class)
        return AppCounts(
            app="total",
            operations=sum(a.operations for a in self.apps),
            requests=self.requests,
            by_class=dict(total),
        )


class _Recorder:
    """Sends each case and keeps the figures; never raises, so Hypothesis runs every example."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self.base_url, self.timeout_s = base_url, timeout_s
        self.headers = {"X-API-Key": api_key}
        self.session = requests.Session()
        self.server_errors: list[Failure] = []
        self.timeouts: list[Failure] = []
        self.not_sent = 0
        self.slowest: Slowest | None = None

    def hung(self, app: str) -> bool:
        return sum(f.app == app for f in self.timeouts) >= MAX_HANGS_PER_APP

    def send(self, app: str, counts: AppCounts, case: Case) -> None:
        if self.hung(app):
            return
        url = f"{self.base_url}/{app}"
        curl = reproducer(case, url)
        started = time.perf_counter()
        try:
            response = case.call(
                base_url=url, session=self.session, headers=self.headers, timeout=self.timeout_s
            )
        except requests.Timeout:
            elapsed = time.perf_counter() - started
            self.timeouts.append(
                Failure(app=app, method=case.method, path=case.path, status=None,
                        seconds=round(elapsed, 3), body=f"no answer in {self.timeout_s:g}s",
                        curl=curl)
            )  # fmt: skip
            self._time(app, case, None, elapsed, curl)
            return
        except (requests.RequestException, ValueError):  # e.g. a header value with a newline
            self.not_sent += 1
            return
        elapsed = time.perf_counter() - started
        status = response.status_code
        counts.requests += 1
        counts.by_class[f"{status // 100}xx"] = counts.by_class.get(f"{status // 100}xx", 0) + 1
        if status >= 500:
            body = response.content[:BODY_EXCERPT].decode("utf-8", "replace")
            self.server_errors.append(
                Failure(app=app, method=case.method, path=case.path, status=status,
                        seconds=round(elapsed, 3), body=body, curl=curl)
            )  # fmt: skip
        self._time(app, case, status, elapsed, curl)

    def _time(self, app: str, case: Case, status: int | None, elapsed: float, curl: str) -> None:
        if self.slowest is None or elapsed > self.slowest.seconds:
            self.slowest = Slowest(app=app, method=case.method, path=case.path, status=status,
                                   seconds=round(elapsed, 3), curl=curl)  # fmt: skip


async def fuzz_tenant_key(database_url: str) -> tuple[str, str]:
    """A new tenant `fuzz-<hex>` and its key: each run starts from an empty tenant, and what
    it leaves behind never mixes with real tenants' data."""
    conn = await connect(database_url)
    try:
        tenant, key = await create_api_key(conn, f"fuzz-{uuid.uuid4().hex[:8]}", "kiki bench fuzz")
    finally:
        await conn.close()
    return tenant.name, key


def reproducer(case: Case, base_url: str) -> str:
    """The case as a curl command that takes the key from $KIKI_API_KEY (the fuzz tenant's
    key is never printed), without the HTTP client's own default headers."""
    command = case.as_curl_command(headers={"X-API-Key": _KEY_PLACEHOLDER}, base_url=base_url)
    command = _CLIENT_HEADERS.sub("", command)
    return command.replace(f"'X-API-Key: {_KEY_PLACEHOLDER}'", '"X-API-Key: $KIKI_API_KEY"')


def _label(app: str, method: str, path: str) -> str:
    return f"{app} {method} {path}"


def run_fuzz(
    base_url: str,
    api_key: str,
    apps: Iterable[str],
    *,
    examples: int,
    include_platform_wide: bool = False,
    timeout_s: float = 60.0,
    seed_value: int | None = None,
) -> FuzzReport:
    """Fuzz every operation of `apps` on the platform at `base_url` as the tenant of `api_key`
    (never the dev key: the fuzz leaves data behind), then stop the flow campaigns it left
    running, so the bid loop does not keep spending the fuzz tenant's budgets."""
    started = time.perf_counter()
    recorder = _Recorder(base_url, api_key, timeout_s)
    counted, excluded, abandoned = [], [], []
    for app in apps:
        schema = schemathesis.openapi.from_url(f"{base_url}/{app}/openapi.json")
        # Reproducers must repeat the very request: sanitizing would blank idempotency keys.
        schema.config.output.sanitization.update(enabled=False)
        operations = [r.ok() for r in schema.get_all_operations()]
        chosen = []
        for op in operations:
            if not include_platform_wide and (app, op.method.upper(), op.path) in PLATFORM_WIDE:
                excluded.append(_label(app, op.method.upper(), op.path))
            else:
                chosen.append(op)
        counts = AppCounts(app=app, operations=len(chosen))
        for op in chosen:
            if recorder.hung(app):
                abandoned.append(_label(app, op.method.upper(), op.path))
                continue
            strategy = op.as_strategy(GenerationMode.POSITIVE, headers=recorder.headers) | (
                op.as_strategy(GenerationMode.NEGATIVE, headers=recorder.headers)
            )
            _run_examples(strategy, partial(recorder.send, app, counts), examples, seed_value)
        counted.append(counts)
    stopped, cleanup_error = 0, None
    if "flow" in apps:
        try:
            stopped = stop_running_campaigns(base_url, api_key, timeout_s)
        except httpx.HTTPError as exc:  # e.g. flow wedged by the fuzz: the report says so
            cleanup_error = f"{exc.__class__.__name__}: {exc}"
    return FuzzReport(
        base_url=base_url,
        examples=examples,
        seed=seed_value,
        apps=counted,
        server_errors=recorder.server_errors,
        timeouts=recorder.timeouts,
        not_sent=recorder.not_sent,
        excluded=excluded,
        abandoned=abandoned,
        slowest=recorder.slowest,
        campaigns_stopped=stopped,
        cleanup_error=cleanup_error,
        seconds=round(time.perf_counter() - started, 1),
    )


def _run_examples(
    strategy: SearchStrategy[Case],
    send: Callable[[Case], None],
    examples: int,
    seed_value: int | None,
) -> None:
    """Hypothesis draws `examples` cases (twice: valid and invalid ones are one strategy) with
    no shrinking: a failure is recorded with its reproducer, not minimised."""

    @settings(
        max_examples=2 * examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(strategy)
    def draw(case: Case) -> None:
        send(case)

    if seed_value is not None:
        draw = seed(seed_value)(draw)
    draw()


def stop_running_campaigns(base_url: str, api_key: str, timeout_s: float) -> int:
    """Stop every campaign of the key's tenant that is running or paused; how many."""
    stopped = 0
    with httpx.Client(base_url=f"{base_url}/flow", headers={"X-API-Key": api_key}) as client:
        for status in ("running", "paused"):
            params: dict[str, str | int] = {"status": status, "limit": 500}
            while True:
                page = client.get("/api/v1/campaigns", params=params, timeout=timeout_s)
                page.raise_for_status()
                found = page.json()
                for campaign in found["campaigns"]:
                    path = f"/api/v1/campaigns/{campaign['campaign_id']}/stop"
                    client.post(path, timeout=timeout_s).raise_for_status()
                    stopped += 1
                if not found["next_after"]:
                    break
                params["after"] = found["next_after"]
    return stopped
