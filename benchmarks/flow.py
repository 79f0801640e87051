"""The bid loop's benchmarks: `kiki bench flow` (budget leases against reserving every pool
every tick, on the real actors) and `kiki bench pacing` (the pacing controller replayed
without Ray at several start hours, ours against an even split)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.pacing import SimulationOptions, replay_pacing, summaries
from benchmarks.serving import local_ray, scratch_database
from benchmarks.simulate import SimulationResult, run_simulation
from kiki.flow.pacing import ControllerConfig


def lease_runs(
    campaigns: int, minutes: float, tick_s: float, lease_ticks: int
) -> dict[str, dict[str, Any]]:
    """Decisions/s, tick latency, budget time and overspend of the baseline (leases of one
    tick: reserve and commit every pool every tick) and of leases of `lease_ticks`, both on
    one scratch PostgreSQL and one local Ray, with the ratio to the baseline."""

    def options(lease: int) -> SimulationOptions:
        return SimulationOptions(
            campaigns=campaigns, hours=minutes / 60, tick_s=tick_s, lease_ticks=lease
        )

    runs: dict[str, SimulationResult] = {}
    # The decision log lines are written too (to a scratch folder): they are part of the trail.
    with scratch_database() as url, local_ray("kiki-bench"), TemporaryDirectory() as logs:
        for name, lease in (("baseline (lease 1)", 1), (f"leases of {lease_ticks}", lease_ticks)):
            runs[name] = asyncio.run(run_simulation(url, options(lease), log_dir=logs))
    base = next(iter(runs.values()))
    rows = {
        name: {
            "decisions_per_s": round(r.decisions_per_s),
            "tick_ms_p50": round(r.tick_percentile(50), 1),
            "tick_ms_p99": round(r.tick_percentile(99), 1),
            "budget_ms_mean": round(r.phases_ms.get("budget", 0.0), 1),
            "overspend_micros": sum(c.overspend_micros for c in r.campaigns),
            "ratio": round(r.decisions_per_s / base.decisions_per_s, 2),
        }
        for name, r in runs.items()
    }
    return rows


def pacing_rows(
    campaigns: int, hours: float, tick_s: float, seed: int, starts: list[datetime]
) -> list[dict[str, Any]]:
    """Per start time and controller, the pacing replay's summary (see benchmarks/pacing.py)."""
    options = SimulationOptions(campaigns=campaigns, hours=hours, tick_s=tick_s, seed=seed)
    controllers = {
        "baseline (even split)": ControllerConfig(platform_split="even"),
        "ours (whole allowance)": ControllerConfig(),
    }
    rows = []
    for moment in starts:
        start = moment.replace(tzinfo=UTC)
        for name, controller in controllers.items():
            groups = summaries(replay_pacing(options, start, controller))
            allowed, every = groups["demand_allowed"], groups["all"]
            assert every is not None  # campaigns >= 1
            rows.append(
                {
                    "start_utc": start.isoformat(),
                    "controller": name,
                    "demand_allowed": allowed.campaigns if allowed else 0,
                    "within_2pct": allowed.within_2pct if allowed else 0,
                    "at_least_98pct": allowed.at_least_98pct if allowed else 0,
                    "pacing_error_p90": allowed.pacing_error_p90 if allowed else None,
                    "pacing_error_max": allowed.pacing_error_max if allowed else None,
                    "utilisation": allowed.utilisation if allowed else None,
                    "all_within_2pct": every.within_2pct,
                    "overspend_micros": every.overspend_micros,
                }
            )
    return rows
