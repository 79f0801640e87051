"""Counters that exist from the start, for alerts and dashboards.

Ray exports a counter's series only after its first increment, and refuses `inc(0)`. An alert
on `increase(...)` of an error counter then has nothing to compare with on the first error,
and a dashboard panel over it shows "no data" on a healthy platform. Prometheus's advice for
labelled counters is to export every known label set at 0: `counter` records that 0 point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ray.util import metrics


def counter(
    name: str,
    description: str,
    tag_keys: tuple[str, ...],
    zeros: Iterable[Mapping[str, str]] = (),
) -> metrics.Counter:
    """A Ray counter with each tag set of `zeros` exported at 0 at once."""
    made = metrics.Counter(name, description, tag_keys=tag_keys)
    for tags in zeros:
        # `inc` refuses 0 by design; the point itself is what Prometheus needs to see.
        made._record(0, tags=dict(tags))
    return made
