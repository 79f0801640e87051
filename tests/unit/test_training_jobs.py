"""What a call that waits on background training is told (kiki.training_jobs), and the
first run's demo data (training.first_run): pure, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from kiki.training_jobs import OVERDUE_RETRY_S, TrainingJob, no_model
from training.first_run import CDNOW_CUSTOMERS, DemoOptions, demo_purchases

NOW = datetime(2026, 12, 7, 14, 0, 0, tzinfo=UTC)
HOW = "no LTV model is in production yet: train one with `kiki train ltv`"


def job(status: str = "running", live: bool = True, ready_in_s: float = 42.0) -> TrainingJob:
    return TrainingJob(
        tenant_id=uuid.uuid4(),
        kind="ltv",
        purpose="first-run demo",
        status=status,
        started_at=NOW - timedelta(seconds=20),
        ready_by=NOW + timedelta(seconds=ready_in_s),
        finished_at=None if status == "running" else NOW,
        detail="ValueError: too few customers" if status == "failed" else None,
        live=live,
        seen_at=NOW,
    )


def test_a_running_job_says_what_is_trained_and_when_it_will_be_ready() -> None:
    error = no_model(job(ready_in_s=41.2), HOW)
    assert error.code == "training_in_progress" and error.retry_after_s == 42
    assert error.message == (
        "the LTV model is being trained (first-run demo, since 13:59:40 UTC): ready in about "
        "42 s (by 14:00:41 UTC); retry then"
    )


def test_past_its_estimate_a_job_says_so_and_asks_for_a_retry_soon() -> None:
    error = no_model(job(ready_in_s=-5), HOW)
    assert error.retry_after_s == OVERDUE_RETRY_S
    assert "taking longer than the estimate (13:59:55 UTC)" in error.message


@pytest.mark.parametrize(
    ("found", "starts"),
    [
        (None, HOW),
        (job(status="done", live=False), HOW),
        (job(status="failed", live=False), "the first-run demo did not train it (ValueError"),
        (job(live=False), "the first-run demo stopped before it was ready (its worker is gone)"),
    ],
)
def test_without_a_live_job_the_answer_says_how_to_train(
    found: TrainingJob | None, starts: str
) -> None:
    error = no_model(found, HOW)
    assert error.message.startswith(starts) and error.message.endswith(HOW)
    assert error.retry_after_s is None and error.code == "failed_precondition"


def test_the_demo_is_cdnow_moved_to_2026_up_to_today() -> None:
    today = date(2026, 12, 7)
    frame = demo_purchases(today)
    assert frame["customer_id"].nunique() == CDNOW_CUSTOMERS  # every customer bought in Q1
    assert frame["ts"].min() == datetime(2026, 1, 1)  # the seed's cohort_jan_2026
    assert frame["ts"].max() == datetime(2026, 12, 7)  # nothing after today
    small = demo_purchases(today, customers=200)
    assert small["customer_id"].nunique() == 200 and set(small["customer_id"]) < set(
        frame["customer_id"]
    )


def test_a_smaller_demo_is_expected_sooner() -> None:
    full, small = DemoOptions().steps(), DemoOptions(customers=200).steps()
    assert [k for k, _ in full] == ["data", "ltv", "churn"]
    assert all(s < f for (_, s), (_, f) in zip(small, full, strict=True))
    assert 30 < sum(s for _, s in full) < 180
