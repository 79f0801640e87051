"""Arbitrary commands never break a budget book: every one gets an answer, never an exception,
and a refused command changes nothing (issue 16: one `timezone: null` stopped a shard)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiki.shield.book import BudgetBook, BudgetOp, OpKind
from kiki.shield.policy import PLATFORMS, Caps, Policy

T = "00000000-0000-0000-0000-000000000001"
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
OUTCOMES = {"granted", "partial", "denied", "committed", "released", "set", "status", "check",
            "error"}  # fmt: skip

# Values of every JSON-ish kind, and some Python ones a buggy caller could send.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.just("\x00"),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
maybe_junk = st.one_of(junk, st.just(...))  # ... = leave the key out


def patch(valid: dict[str, Any], keys: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A dict over `keys`: each valid, junk or left out."""
    fields = {k: st.one_of(st.just(valid.get(k, ...)), s, maybe_junk) for k, s in keys.items()}
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not ...})


caps_patch = st.one_of(
    st.none(),
    junk,
    patch(
        {"total": 1_000},
        {"total": st.integers(-5, 2**64), "daily": st.integers(-5, 2**64),
         "platforms": st.dictionaries(st.sampled_from([*PLATFORMS, "myspace"]), junk, max_size=2)},
    ),
)  # fmt: skip
policy_patch = st.one_of(
    st.none(),
    junk,
    patch(
        {},
        {
            "status": st.sampled_from(["active", "paused", "stopped", "gone"]),
            "timezone": st.sampled_from(["UTC", "Europe/Paris", "Mars/Base", "", "../etc"]),
            "starts_at": st.sampled_from([NOW.isoformat(), "2026-03-02T12:00", "yesterday"]),
            "ends_at": st.sampled_from([(NOW - timedelta(days=1)).isoformat(), "2999-01-01"]),
            "allowed_platforms": st.lists(st.sampled_from([*PLATFORMS, "x"]), max_size=3),
            "bid_min": st.integers(-1, 10**7),
            "bid_max": st.integers(-1, 10**7),
        },
    ),
)
ops = st.builds(
    BudgetOp,
    kind=st.one_of(st.sampled_from(get_args(OpKind)), junk),
    tenant_id=st.one_of(st.just(T), junk),
    campaign_id=st.one_of(st.sampled_from(["c1", "c2"]), junk),
    idempotency_key=st.one_of(st.none(), st.text(max_size=8), junk),
    amount_micros=st.one_of(st.integers(-10, 2_000), junk),
    platform=st.one_of(st.sampled_from(PLATFORMS), junk),
    reservation_id=st.one_of(st.just("held"), junk),
    bid_micros=st.one_of(st.none(), st.integers(-10, 10**7), junk),
    allow_partial=st.one_of(st.booleans(), junk),
    currency=st.one_of(st.just("USD"), st.just("EUR"), junk),
    caps_patch=caps_patch,
    policy_patch=policy_patch,
)


def funded_book() -> tuple[BudgetBook, str]:
    """A book with one campaign and one open reservation, to aim commands at."""
    book = BudgetBook()
    caps = Caps(1_000, 500, {"meta": 300}).to_data()
    policy = Policy(timezone="Europe/Paris", bid_max_micros=5_000_000).to_data()
    alloc = BudgetOp("allocate", T, "c1", "a", currency="USD", caps_patch=caps, policy_patch=policy)
    assert book.execute(alloc, NOW, [], []).outcome == "set"
    held = BudgetOp("reserve", T, "c1", "r", amount_micros=100, platform="meta")
    reservation = book.execute(held, NOW, [], []).reservation_id
    assert reservation
    return book, reservation


def state(book: BudgetBook) -> dict:
    return {key: budget.snapshot(NOW) for key, budget in book.campaigns.items()}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=ops)
def test_any_command_gets_an_answer_and_a_refusal_changes_nothing(op: BudgetOp) -> None:
    book, reservation = funded_book()
    if op.reservation_id == "held":
        op = replace(op, reservation_id=reservation)
    before = state(book)
    events: list = []
    created: list = []
    result = book.execute(op, NOW, events, created)  # must not raise
    assert result.outcome in OUTCOMES
    if result.outcome in ("error", "denied", "check", "status"):
        assert (events, created) == ([], [])
        assert state(book) == before
    else:
        assert events or result.replayed or result.outcome == "set"
    # ... and the book still serves a well-formed command afterwards.
    follow = BudgetOp("reserve", T, "c1", "follow-up", amount_micros=1, platform="google_ads")
    assert book.execute(follow, NOW, [], []).outcome in ("granted", "partial", "denied")


def test_the_reported_request_is_refused_with_the_field_named_and_the_book_unchanged() -> None:
    book, _ = funded_book()
    before = state(book)
    bad = BudgetOp(
        "allocate", T, "tz_null", "k", currency="USD",
        caps_patch={"total": 1_000_000}, policy_patch={"timezone": None},
    )  # fmt: skip
    created: list = []
    result = book.execute(bad, NOW, [], created)
    assert (result.outcome, result.error_code) == ("error", "invalid_input")
    assert "time zone" in (result.message or "")
    assert created == [] and state(book) == before  # no half-made campaign left behind
