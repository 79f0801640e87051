"""How the production LTV model's predictions spread over a tenant's customers: a histogram
and deciles, in integer micros (the console's Customers page).

LTV is long-tailed (a few customers are worth many times the rest), so equal-width bins up to
the maximum would put nearly everyone in the first; the bins run from the lowest value to the
99th percentile and the last one holds everyone from there up."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field


class Bin(BaseModel):
    low_micros: int
    high_micros: int | None = Field(description="none for the last bin: everyone above low")
    customers: int


class Decile(BaseModel):
    decile: int = Field(description="1 = the 10 % of customers worth most")
    customers: int
    min_micros: int
    max_micros: int
    mean_micros: int
    total_micros: int
    share: float = Field(description="of all customers' LTV")


class Spread(BaseModel):
    customers: int
    total_micros: int
    median_micros: int
    bins: list[Bin]
    deciles: list[Decile]


def spread(values_micros: np.ndarray, bins: int = 20) -> Spread:
    """Histogram (`bins` bins, the last open-ended above the 99th percentile) and deciles
    (highest first) of per-customer LTV in micros."""
    values = np.sort(np.asarray(values_micros, dtype=np.int64))[::-1]
    total = int(values.sum())
    if not len(values):
        return Spread(customers=0, total_micros=0, median_micros=0, bins=[], deciles=[])
    low, top = int(values[-1]), int(np.percentile(values, 99))
    edges = np.linspace(low, top, bins).astype(np.int64) if top > low else np.array([low])
    # bin k holds edges[k] <= v < edges[k+1]; the last holds v >= edges[-1]
    counts = np.bincount(np.searchsorted(edges, values, side="right") - 1, minlength=len(edges))
    histogram = [
        Bin(
            low_micros=int(edges[k]),
            high_micros=int(edges[k + 1]) if k + 1 < len(edges) else None,
            customers=int(counts[k]),
        )
        for k in range(len(edges))
    ]
    deciles = []
    for d, part in enumerate(np.array_split(values, 10), start=1):
        if not len(part):
            continue
        part_total = int(part.sum())
        deciles.append(
            Decile(
                decile=d,
                customers=len(part),
                min_micros=int(part[-1]),
                max_micros=int(part[0]),
                mean_micros=part_total // len(part),
                total_micros=part_total,
                share=part_total / total if total else 0.0,
            )
        )
    return Spread(
        customers=len(values),
        total_micros=total,
        median_micros=int(np.median(values)),
        bins=histogram,
        deciles=deciles,
    )
