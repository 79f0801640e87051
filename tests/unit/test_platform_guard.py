"""A tenant's own reports and admissions never move the breakers and budgets every tenant
shares (issue 19): pure PlatformGuard, on a clock that stands still."""

from __future__ import annotations

from datetime import UTC, datetime

from kiki.clock import VirtualClock
from kiki.shield.breaker import BreakerConfig, BreakerState
from kiki.shield.guard import TENANT_SHARE, PlatformGuard
from kiki.shield.ratelimit import RateLimitConfig


def guard() -> tuple[PlatformGuard, VirtualClock]:
    clock = VirtualClock(datetime(2026, 12, 7, tzinfo=UTC))
    config = BreakerConfig(sliding_window_size=10, minimum_number_of_calls=10)
    return PlatformGuard(clock, config, RateLimitConfig(rate_per_s=50, burst=100)), clock


def test_a_tenants_failures_open_its_own_breaker_only() -> None:
    g, _ = guard()
    for _ in range(1000):
        g.record_tenant("mallory", "meta", success=False)
    assert g.breakers["meta"].state is BreakerState.CLOSED
    refused = g.admit_tenant("mallory", "meta")
    assert not refused.allowed and refused.reason == "tenant_breaker_open"
    assert g.admit_tenant("alice", "meta").allowed
    assert g.admit("meta").allowed  # the bid loops' connectors are untouched
    (meta,) = [s for s in g.status("mallory") if s.platform == "meta"]
    assert meta.tenant_breaker is not None and meta.tenant_breaker.state is BreakerState.OPEN
    assert meta.breaker.state is BreakerState.CLOSED


def test_one_tenant_takes_at_most_its_share_of_a_platforms_budget() -> None:
    g, _ = guard()
    admitted = sum(g.admit_tenant("mallory", "tiktok").allowed for _ in range(1000))
    assert admitted == int(100 * TENANT_SHARE)
    limited = g.admit_tenant("mallory", "tiktok")
    assert limited.reason == "rate_limited" and limited.retry_after_s > 0
    assert g.buckets["tiktok"].tokens == 100 - admitted  # the rest is left for everyone else
    assert g.admit_tenant("alice", "tiktok").allowed


def test_a_shared_breaker_that_is_not_closed_refuses_tenants_and_keeps_its_probes() -> None:
    g, clock = guard()
    g.force_open("google_ads")
    assert g.admit_tenant("alice", "google_ads").reason == "breaker_open"
    clock.advance(g.breaker_config.wait_duration_in_open_state_s + 1)
    # Half-open: the probes are the connectors' to make, not a tenant's.
    assert g.admit_tenant("alice", "google_ads").reason == "breaker_open"
    assert g.admit("google_ads").allowed
