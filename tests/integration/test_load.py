"""`kiki bench load`'s mix, short, on the session's platform: Locust (a process of its own)
sends every call of the apps that need no trained model, and every one is answered 2xx, so
the figures the bench prints are of requests that worked."""

from __future__ import annotations

from benchmarks.load import LoadOptions, run_load
from tests.integration.conftest import RunningPlatform

EXPECTED = {
    ("POST", "/shield/api/v1/check"),
    ("POST", "/shield/api/v1/reserve"),
    ("POST", "/shield/api/v1/commit"),
    ("GET", "/shield/api/v1/budget/[id]"),
    ("POST", "/billing/api/v1/events"),
    ("GET", "/flow/api/v1/campaigns?limit=50"),
    ("GET", "/flow/api/v1/decisions?limit=50"),
}


def test_the_mix_is_answered_without_errors(platform: RunningPlatform) -> None:
    options = LoadOptions(users=[2], step_s=4, apps=["shield", "billing", "flow"], campaigns=3)
    report = run_load(platform.base_url, platform.api_key, options)
    [step] = report.steps
    assert step.errors == [] and step.total.failures == 0
    assert {(r.method, r.name) for r in step.routes} == EXPECTED
    assert all(r.requests > 0 and r.p99_ms is not None for r in step.routes)
    assert step.total.per_second > 0
