"""`kiki bench load`'s reading of Locust's CSV statistics and its saturation point."""

from __future__ import annotations

import pytest

from benchmarks.load import RouteStats, Step, parse_stats, saturation
from kiki.errors import Unavailable

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def test_routes_and_the_aggregated_row_are_read_with_their_percentiles() -> None:
    text = "\n".join(
        [
            HEADER,
            "POST,/shield/api/v1/check,120,3,14,15.2,4,90,88,40.0,1.0,14,16,17,18,20,25,40,61,"
            "90,90,90",
            "GET,/flow/api/v1/decisions,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,"
            "N/A,N/A,N/A",
            ",Aggregated,120,3,14,15.2,4,90,88,40.0,1.0,14,16,17,18,20,25,40,61,90,90,90",
        ]
    )
    routes, total = parse_stats(text, seconds=3)
    assert [(r.method, r.name) for r in routes] == [
        ("POST", "/shield/api/v1/check"),
        ("GET", "/flow/api/v1/decisions"),
    ]
    assert routes[0].p50_ms == 14 and routes[0].p99_ms == 61 and routes[0].error_rate == 0.025
    assert routes[1].p99_ms is None and routes[1].error_rate == 0
    assert total.requests == 120 and total.per_second == 40.0  # 120 over the 3 s step


def test_a_csv_without_the_aggregated_row_is_refused() -> None:
    with pytest.raises(Unavailable, match="Aggregated"):
        parse_stats(HEADER, seconds=3)


def step(users: int, per_second: float, p99: float) -> Step:
    total = RouteStats(
        method="", name="Aggregated", requests=1, failures=0, per_second=per_second,
        p50_ms=1, p99_ms=p99,
    )  # fmt: skip
    return Step(users=users, seconds=10, routes=[], total=total)


def test_saturation_is_the_last_step_that_still_raised_throughput() -> None:
    steps = [step(1, 50, 20), step(2, 95, 25), step(4, 170, 40), step(8, 180, 120)]
    found = saturation(steps)
    assert found is not None
    assert (found.users, found.per_second, found.next_users, found.next_p99_ms) == (4, 170, 8, 120)


def test_no_saturation_while_every_step_raises_throughput() -> None:
    assert saturation([step(1, 50, 20), step(2, 99, 22), step(4, 190, 30)]) is None
