"""`kiki bench load` (issue 22): Locust, headless, drives the mix of benchmarks/locustfile.py
over the six apps of a running platform, in steps of more and more users, and reports per
route the requests, errors and p50/p99, and where the machine saturates: the step from which
more users bring (almost) no more requests per second, only longer waits.

Each step is one `locust --headless` process for a set time (Locust patches the standard
library with gevent, so it never runs inside this process); its `--csv` statistics are read
back here.
"""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from kiki.errors import Unavailable

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# A step whose throughput grew by less than this over the step before (with twice the users
# or more) is past saturation: the extra users only queue.
SATURATION_GROWTH = 0.10
BUDGET_PER_CAMPAIGN = "1000000"


def campaign_ids(campaigns: int) -> list[str]:
    """The budgets the mix checks and reserves against."""
    return [f"load_camp_{n:03d}" for n in range(campaigns)]


class LoadOptions(BaseModel):
    users: list[int] = Field([1, 2, 4, 8, 16, 32], min_length=1, description="users per step")
    step_s: int = Field(30, ge=2, le=3600, description="seconds each step runs")
    apps: list[str] = Field(min_length=1, description="apps whose calls are in the mix")
    campaigns: int = Field(20, ge=1, le=1000, description="budgets the mix checks and reserves")


class RouteStats(BaseModel):
    method: str
    name: str
    requests: int
    failures: int
    per_second: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


class Step(BaseModel):
    users: int
    seconds: int
    routes: list[RouteStats]
    total: RouteStats
    errors: list[str] = Field(default_factory=list, description="Locust's failure messages")


class Saturation(BaseModel):
    users: int = Field(description="users of the last step that still raised throughput")
    per_second: float
    p99_ms: float | None
    next_users: int
    next_per_second: float
    next_p99_ms: float | None


class LoadReport(BaseModel):
    base_url: str
    steps: list[Step]
    saturation: Saturation | None

    def table(self) -> str:
        lines = [
            "| users | requests/s | p50 ms | p99 ms | errors |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for step in self.steps:
            t = step.total
            lines.append(
                f"| {step.users} | {t.per_second:,.1f} | {_ms(t.p50_ms)} | {_ms(t.p99_ms)} "
                f"| {t.error_rate:.2%} |"
            )
        s = self.saturation
        lines.append("")
        if s is None:
            lines.append("Not saturated: every step raised throughput; try more users.")
        else:
            lines.append(
                f"Saturated: {s.users} users gave {s.per_second:,.1f} requests/s (p99 "
                f"{_ms(s.p99_ms)} ms); {s.next_users} users gave {s.next_per_second:,.1f} "
                f"(p99 {_ms(s.next_p99_ms)} ms)."
            )
        busiest = max(self.steps, key=lambda step: step.total.per_second)
        lines += [
            "",
            f"Per route at {busiest.users} users (the step with the most requests/s):",
            "",
            "| route | requests | requests/s | p50 ms | p99 ms | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in sorted(busiest.routes, key=lambda r: -r.requests):
            lines.append(
                f"| {r.method} {r.name} | {r.requests:,} | {r.per_second:,.1f} | {_ms(r.p50_ms)} "
                f"| {_ms(r.p99_ms)} | {r.error_rate:.2%} |"
            )
        for step in self.steps:
            for error in step.errors:
                lines.append(f"- {step.users} users: {error}")
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def prepare(base_url: str, key: str, apps: list[str], campaigns: int) -> None:
    """What the mix needs in the key's tenant: budgets for `load_camp_NNN`, and a billable
    metric and a customer for the usage events. Already there (409) is fine."""
    calls: list[tuple[str, dict]] = []
    if "shield" in apps:
        calls += [
            (
                "/shield/api/v1/allocate",
                {"campaign_id": campaign, "budget": BUDGET_PER_CAMPAIGN, "currency": "USD"},
            )
            for campaign in campaign_ids(campaigns)
        ]
    if "billing" in apps:
        calls += [
            ("/billing/api/v1/metrics", {"code": "load_requests", "aggregation": "count"}),
            ("/billing/api/v1/customers", {"customer_id": "load_customer", "currency": "USD"}),
        ]
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as http:
        for path, body in calls:
            answer = http.post(path, json=body)
            if answer.status_code >= 400 and answer.status_code != 409:
                raise Unavailable(f"preparing the load test: {path} answered {answer.text[:300]}")


def run_step(base_url: str, key: str, users: int, options: LoadOptions, run_id: str) -> Step:
    """One `locust --headless` run of `users` users of the mix (and, with SyncCreate in it,
    the one creative user) for `options.step_s` seconds."""
    creators = 1 if "create" in options.apps else 0
    with tempfile.TemporaryDirectory(prefix="kiki-load-") as folder:
        prefix = str(Path(folder) / "step")
        env = {
            **os.environ,
            "KIKI_LOAD_KEY": key,
            "KIKI_LOAD_APPS": ",".join(options.apps),
            "KIKI_LOAD_CAMPAIGNS": ",".join(campaign_ids(options.campaigns)),
            "KIKI_LOAD_RUN": f"{run_id}-{users}",
        }
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--users", str(users + creators), "--spawn-rate", str(users + creators),
            "--run-time", f"{options.step_s}s",
            "--host", base_url, "--csv", prefix, "--only-summary", "--loglevel", "ERROR",
            "--stop-timeout", "10",
        ]  # fmt: skip
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=options.step_s + 120,
            check=False,
        )
        stats = Path(f"{prefix}_stats.csv")
        if not stats.exists():  # Locust exits 1 when requests failed: that is a result
            raise Unavailable(f"locust did not run: {done.stderr[-1000:]}")
        routes, total = parse_stats(stats.read_text(), options.step_s)
        errors = parse_failures(Path(f"{prefix}_failures.csv"))
    return Step(users=users, seconds=options.step_s, routes=routes, total=total, errors=errors)


def parse_stats(text: str, seconds: float) -> tuple[list[RouteStats], RouteStats]:
    """Locust's `_stats.csv`: one row per route, then the `Aggregated` row. Requests per
    second are over the step's `seconds` (Locust's own column divides by the time between
    the first and last answer, which overstates a route called a few times)."""
    routes: list[RouteStats] = []
    total: RouteStats | None = None
    for row in csv.DictReader(text.splitlines()):
        stats = RouteStats(
            method=row["Type"],
            name=row["Name"],
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            per_second=int(row["Request Count"]) / seconds,
            p50_ms=_percentile(row["50%"]),
            p99_ms=_percentile(row["99%"]),
        )
        if row["Name"] == "Aggregated":
            total = stats
        else:
            routes.append(stats)
    if total is None:
        raise Unavailable("locust wrote no Aggregated row: did any request go out?")
    return routes, total


def _percentile(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def parse_failures(path: Path) -> list[str]:
    """Locust's `_failures.csv`: each distinct failure with its count."""
    if not path.exists():
        return []
    return [
        f"{row['Method']} {row['Name']}: {row['Occurrences']} x {row['Error'][:200]}"
        for row in csv.DictReader(path.read_text().splitlines())
    ]


def saturation(steps: list[Step]) -> Saturation | None:
    """The last step before throughput stopped growing (by SATURATION_GROWTH) as users grew."""
    for before, after in itertools.pairwise(steps):
        if after.users <= before.users:
            continue
        if after.total.per_second < before.total.per_second * (1 + SATURATION_GROWTH):
            return Saturation(
                users=before.users,
                per_second=before.total.per_second,
                p99_ms=before.total.p99_ms,
                next_users=after.users,
                next_per_second=after.total.per_second,
                next_p99_ms=after.total.p99_ms,
            )
    return None


def run_load(base_url: str, key: str, options: LoadOptions) -> LoadReport:
    """Prepare the tenant, then run each step in turn."""
    prepare(base_url, key, options.apps, options.campaigns)
    run_id = uuid.uuid4().hex[:8]
    steps = [run_step(base_url, key, users, options, run_id) for users in options.users]
    return LoadReport(base_url=base_url, steps=steps, saturation=saturation(steps))
