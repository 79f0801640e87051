"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass
class Result:
    name: str
    operations: int
    seconds: float
    p50_ms: float
    p99_ms: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "per_second": round(self.per_second, 1)}


def percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    if len(latencies_ms) < 2:
        only = latencies_ms[0] if latencies_ms else 0.0
        return only, only
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return cuts[49], cuts[98]


def table(results: list[Result], baseline: Result) -> str:
    lines = [f"{'':<44} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}"]
    for r in [baseline, *results]:
        ratio = r.per_second / baseline.per_second if baseline.per_second else 0.0
        lines.append(
            f"{r.name:<44} {r.per_second:>10,.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {ratio:>11.2f}x"
        )
        if r.note:
            lines.append(f"    {r.note}")
    return "\n".join(lines)
