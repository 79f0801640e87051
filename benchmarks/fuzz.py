"""Fuzz a running platform with requests schemathesis generates from each app's OpenAPI,
then with a corpus of malformed requests (benchmarks.fuzz_corpus), and its gRPC service.

For every operation of every app, Hypothesis draws cases from schemathesis's strategies (valid
requests and requests that break the schema), each sent with a fuzz tenant's `X-API-Key`.
The report counts answers per app and status class and lists, each with a curl command that
repeats it: every answer >= 500 and every request that got no answer in time (issue 16: no
request, however malformed, gets a 5xx or hangs), every answer >= 400 not in the
`{"error": {...}}` shape, every malformed request not refused with a clean 4xx, and every
refused request that wrote to the fuzz tenant's rows (benchmarks.fuzz_checks).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from urllib.parse import urlencode

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.strategies import SearchStrategy
from pydantic import BaseModel, Field
from schemathesis import Case, GenerationMode

from benchmarks.fuzz_checks import (
    BACKGROUND,
    Fingerprint,
    TenantFingerprint,
    changed,
    shape_problem,
)
from benchmarks.fuzz_corpus import (
    CLEAN_4XX,
    GrpcResult,
    Malformed,
    ansi_c,
    body_cases,
    grpc_probes,
    path_values,
    path_with,
)
from kiki.auth import authenticate, create_api_key
from kiki.db.pool import connect

BODY_EXCERPT = 300
# Past this many hangs an app is wedged (issue 16): its other requests would only add a timeout
# each, so they are not sent and the operations are listed as abandoned.
MAX_HANGS_PER_APP = 2
_KEY_PLACEHOLDER = "KIKI_API_KEY"
_CLIENT_HEADERS = re.compile(r" -H '(User-Agent|Accept-Encoding|Accept|Connection): [^']*'")


class AppCounts(BaseModel):
    app: str
    operations: int
    requests: int = 0
    by_class: dict[str, int] = Field(default_factory=dict, description="'2xx' ... '5xx'")


class Failure(BaseModel):
    """A request answered >= 500, or not answered within the request timeout (status None),
    or answered wrongly in another way the report names (`why`)."""

    app: str
    method: str
    path: str
    status: int | None
    seconds: float
    body: str = Field(description="the start of the answer, or why there was none")
    curl: str
    why: str = Field("", description="what is wrong besides the status, if anything")


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
    shape_violations: list[Failure] = Field(description='answers >= 400 not {"error": {...}}')
    refused_writes: list[Failure] = Field(description="answers >= 400 whose request wrote rows")
    malformed_sent: int = Field(description="requests of the malformed corpus sent")
    malformed_accepted: list[Failure] = Field(description="malformed requests not refused 4xx")
    watched_tables: int = Field(description="tables of the fuzz tenant fingerprinted")
    accepted_writes: int = Field(description="accepted requests whose fingerprints differed")
    grpc: list[GrpcResult]
    not_sent: int = Field(description="cases the HTTP client refused to send (e.g. bad headers)")
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

    @property
    def failures(self) -> dict[str, list[Failure]]:
        """Every kind of wrong answer, by title; all empty when the platform passed."""
        return {
            "answers >= 500": self.server_errors,
            "timeouts": self.timeouts,
            'answers >= 400 not in the {"error": {...}} shape': self.shape_violations,
            "refused requests that wrote the tenant's rows": self.refused_writes,
            "malformed requests not refused with a clean 4xx": self.malformed_accepted,
        }

    @property
    def grpc_failures(self) -> list[GrpcResult]:
        return [g for g in self.grpc if not g.ok]

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
            f"\n{self.examples} examples per operation and mode (valid and invalid) and "
            f"{self.malformed_sent} malformed requests, {self.seconds:.0f}s, {self.not_sent} "
            f"cases not sendable, {self.campaigns_stopped} campaigns stopped afterwards; "
            f"{self.watched_tables} tables fingerprinted after every request (left out or "
            f"narrowed for background writers: {', '.join(sorted(BACKGROUND))}), where "
            f"{self.accepted_writes} accepted requests were seen writing"
        )
        if self.slowest:
            s = self.slowest
            lines.append(f"slowest: {s.seconds:.2f}s  {s.app} {s.method} {s.path} -> {s.status}")
        if self.abandoned:
            lines.append(f"abandoned after {MAX_HANGS_PER_APP} hangs: {', '.join(self.abandoned)}")
        if self.cleanup_error:
            lines.append(f"campaigns not stopped: {self.cleanup_error}")
        for title, found in self.failures.items():
            lines.append(f"\n{title}: {len(found)}")
            for f in found:
                lines.append(f"  {f.app} {f.method} {f.path} -> {f.status} ({f.seconds:.2f}s)")
                if f.why:
                    lines.append(f"    {f.why}")
                lines.append(f"    {f.body}")
                lines.append(f"    {f.curl[:2000]}")
        if self.grpc:
            lines.append(f"\ngRPC pb.LTVService/PredictLTV: {len(self.grpc_failures)} wrong")
            for g in self.grpc:
                mark = "ok   " if g.ok else "WRONG"
                lines.append(f"  {mark} {g.name}: {g.code} (expected {' or '.join(g.expected)})")
                if not g.ok and g.details:
                    lines.append(f"        {g.details}")
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


class _WriteWatch:
    """Fingerprints of the fuzz tenant's rows over a direct database connection, taken after
    each request (benchmarks.fuzz_checks)."""

    def __init__(self, database_url: str, api_key: str) -> None:
        self._loop = asyncio.Runner()
        self._conn, self._print = self._loop.run(self._open(database_url, api_key))
        self.last: Fingerprint = {}
        self.take()

    @staticmethod
    async def _open(database_url: str, api_key: str) -> tuple[object, TenantFingerprint]:
        conn = await connect(database_url)
        tenant = (await authenticate(conn, api_key)).tenant
        return conn, await TenantFingerprint.build(conn, tenant.id)

    @property
    def tables(self) -> int:
        return len(self._print.tables)

    def take(self) -> Fingerprint:
        """A fingerprint now, kept as `last`: the one after a request is the one before the
        next, so each request costs one query."""
        self.last = self._loop.run(self._print.take(self._conn))
        return self.last

    def close(self) -> None:
        self._loop.run(self._conn.close())
        self._loop.close()


class _Recorder:
    """Sends each case and keeps the figures; never raises, so Hypothesis runs every example."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, watch: _WriteWatch) -> None:
        self.base_url, self.timeout_s, self.watch = base_url, timeout_s, watch
        self.headers = {"X-API-Key": api_key}
        self.session = requests.Session()
        self.server_errors: list[Failure] = []
        self.timeouts: list[Failure] = []
        self.shape_violations: list[Failure] = []
        self.refused_writes: list[Failure] = []
        self.malformed_accepted: list[Failure] = []
        self.malformed_sent = 0
        self.accepted_writes = 0
        self.not_sent = 0
        self.slowest: Slowest | None = None
        # Per operation, the case the malformed corpus starts from: the first accepted one,
        # else the first sent.
        self.samples: dict[tuple[str, str, str], tuple[Case, bool]] = {}

    def hung(self, app: str) -> bool:
        return sum(f.app == app for f in self.timeouts) >= MAX_HANGS_PER_APP

    def send(self, app: str, counts: AppCounts, case: Case) -> None:
        url = f"{self.base_url}/{app}"
        status = self._exchange(
            app, counts, case.method, case.path, reproducer(case, url),
            lambda: case.call(base_url=url, session=self.session, headers=self.headers,
                              timeout=self.timeout_s),
        )  # fmt: skip
        key = (app, case.method.upper(), case.path)
        if key not in self.samples or (status is not None and status < 300
                                       and not self.samples[key][1]):  # fmt: skip
            self.samples[key] = (case, status is not None and status < 300)

    def send_malformed(
        self, app: str, counts: AppCounts, case: Case, path: str, item: Malformed
    ) -> None:
        """`item` as the body of `case`'s operation at `path` (the template's parameters set)."""
        url = f"{self.base_url}/{app}{path}"
        headers = dict(self.headers)
        if item.content_type:
            headers["Content-Type"] = item.content_type
        curl = _malformed_curl(case.method, url, case.query, item)
        self.malformed_sent += 1
        self._exchange(
            app, counts, case.method, case.path, curl,
            lambda: self.session.request(case.method, url, params=case.query, data=item.body,
                                         headers=headers, timeout=self.timeout_s),
            item,
        )  # fmt: skip

    def _exchange(
        self,
        app: str,
        counts: AppCounts,
        method: str,
        path: str,
        curl: str,
        call: Callable[[], requests.Response],
        malformed: Malformed | None = None,
    ) -> int | None:
        """One request and every check of its answer; its status (None: none came)."""
        if self.hung(app):
            return None
        started = time.perf_counter()
        try:
            response = call()
        except requests.Timeout:
            elapsed = time.perf_counter() - started
            self.timeouts.append(
                Failure(app=app, method=method, path=path, status=None,
                        seconds=round(elapsed, 3), body=f"no answer in {self.timeout_s:g}s",
                        curl=curl)
            )  # fmt: skip
            self._time(app, method, path, None, elapsed, curl)
            return None
        except (requests.RequestException, ValueError):  # e.g. a header value with a newline
            self.not_sent += 1
            return None
        elapsed = time.perf_counter() - started
        status = response.status_code
        counts.requests += 1
        counts.by_class[f"{status // 100}xx"] = counts.by_class.get(f"{status // 100}xx", 0) + 1

        def failure(why: str = "") -> Failure:
            return Failure(
                app=app, method=method, path=path, status=status, seconds=round(elapsed, 3),
                body=response.content[:BODY_EXCERPT].decode("utf-8", "replace"), curl=curl,
                why=why,
            )  # fmt: skip

        if status >= 500:
            self.server_errors.append(failure())
        problem = shape_problem(status, _content_type(response.headers), response.content)
        if problem:
            self.shape_violations.append(failure(problem))
        if malformed is not None and status < 500 and status not in malformed.expected:
            wanted = f"{malformed.expected.start}-{malformed.expected.stop - 1}"
            self.malformed_accepted.append(failure(f"{malformed.name}: wanted {wanted}"))
        before, after = self.watch.last, self.watch.take()
        if wrote := changed(before, after):
            if status >= 400:
                self.refused_writes.append(failure(f"wrote {', '.join(wrote)}"))
            else:  # evidence that the fingerprint sees what requests write
                self.accepted_writes += 1
        self._time(app, method, path, status, elapsed, curl)
        return status

    def _time(
        self, app: str, method: str, path: str, status: int | None, elapsed: float, curl: str
    ) -> None:
        if self.slowest is None or elapsed > self.slowest.seconds:
            self.slowest = Slowest(app=app, method=method, path=path, status=status,
                                   seconds=round(elapsed, 3), curl=curl)  # fmt: skip

    def malformed_corpus(self, app: str, counts: AppCounts, max_body_bytes: int) -> None:
        """The corpus (benchmarks.fuzz_corpus) for every operation of `app` the fuzz sent."""
        for (sample_app, _, template), (case, _) in list(self.samples.items()):
            if sample_app != app:
                continue
            params = dict(case.path_parameters or {})
            path = path_with(template, params, "", "")
            if isinstance(case.body, dict | list):
                for item in body_cases(case.body, max_body_bytes):
                    self.send_malformed(app, counts, case, path, item)
            body = _sample_body(case)
            for name in params:
                for what, value in path_values():
                    item = Malformed(f"path parameter {name}: {what}", body,
                                     "application/json" if body else None, CLEAN_4XX)  # fmt: skip
                    self.send_malformed(
                        app, counts, case, path_with(template, params, name, value), item
                    )


def _content_type(headers: Mapping[str, str | list[str]]) -> str:
    """The Content-Type of an answer: requests gives a header as a string, schemathesis's
    response as a list."""
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value[0] if isinstance(value, list) else value
    return ""


def _sample_body(case: Case) -> bytes | None:
    return json.dumps(case.body).encode() if isinstance(case.body, dict | list) else None


def _malformed_curl(method: str, url: str, query: dict | None, item: Malformed) -> str:
    """A curl command that sends `item`; its body from a shell command when it is large."""
    if query:
        url = f"{url}?{urlencode(query, doseq=True)}"
    parts = [f"curl -X {method.upper()} '{url}'", '-H "X-API-Key: $KIKI_API_KEY"']
    if item.content_type:
        parts.append(f"-H 'Content-Type: {item.content_type}'")
    if item.body is None:
        return " ".join(parts)
    if item.body_shell:
        return f"{item.body_shell} | " + " ".join([*parts, "--data-binary @-"])
    return " ".join([*parts, f"--data-binary {ansi_c(item.body)}"])


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
    database_url: str,
    grpc_target: str,
    max_body_bytes: int,
    timeout_s: float = 60.0,
    seed_value: int | None = None,
) -> FuzzReport:
    """Fuzz every operation of `apps` on the platform at `base_url` as the tenant of `api_key`
    (never the dev key: the fuzz leaves data behind), each app's operations with
    schemathesis's cases and then the malformed corpus, watching the tenant's rows in the
    database at `database_url`; then the gRPC service at `grpc_target` when `value` is
    fuzzed. The flow campaigns the fuzz leaves running are stopped as soon as flow is done, so
    the bid loop does not keep spending the fuzz tenant's budgets (nor writing its rows
    while the other apps are fuzzed)."""
    started = time.perf_counter()
    watch = _WriteWatch(database_url, api_key)
    recorder = _Recorder(base_url, api_key, timeout_s, watch)
    counted, abandoned = [], []
    stopped, cleanup_error = 0, None
    try:
        for app in apps:
            schema = schemathesis.openapi.from_url(f"{base_url}/{app}/openapi.json")
            # Reproducers must repeat the very request: sanitizing would blank idempotency keys.
            schema.config.output.sanitization.update(enabled=False)
            # Every operation: a fuzz tenant's key cannot change platform-wide state (the
            # shared breakers are an operator's; its own admits and reports are its own).
            chosen = [r.ok() for r in schema.get_all_operations()]
            counts = AppCounts(app=app, operations=len(chosen))
            for op in chosen:
                if recorder.hung(app):
                    abandoned.append(_label(app, op.method.upper(), op.path))
                    continue
                strategy = op.as_strategy(GenerationMode.POSITIVE, headers=recorder.headers) | (
                    op.as_strategy(GenerationMode.NEGATIVE, headers=recorder.headers)
                )
                _run_examples(strategy, partial(recorder.send, app, counts), examples, seed_value)
            recorder.malformed_corpus(app, counts, max_body_bytes)
            counted.append(counts)
            if app == "flow":
                try:
                    stopped = stop_running_campaigns(base_url, api_key, timeout_s)
                except httpx.HTTPError as exc:  # e.g. flow wedged by the fuzz: reported
                    cleanup_error = f"{exc.__class__.__name__}: {exc}"
        probes = grpc_probes(grpc_target, api_key, max_body_bytes) if "value" in apps else []
    finally:
        watch.close()
    return FuzzReport(
        base_url=base_url,
        examples=examples,
        seed=seed_value,
        apps=counted,
        server_errors=recorder.server_errors,
        timeouts=recorder.timeouts,
        shape_violations=recorder.shape_violations,
        refused_writes=recorder.refused_writes,
        malformed_sent=recorder.malformed_sent,
        malformed_accepted=recorder.malformed_accepted,
        watched_tables=watch.tables,
        accepted_writes=recorder.accepted_writes,
        grpc=probes,
        not_sent=recorder.not_sent,
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
