"""The segment rule language: what compiles, what is refused and why, and that values only
ever travel as bind parameters."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import TypeAdapter

from kiki.engage.rules import Rule, compile_rule
from kiki.errors import InvalidInput

RULE = TypeAdapter(Rule)


def compiled(rule: dict, first: int = 4):  # type: ignore[no-untyped-def]
    return compile_rule(RULE.validate_python(rule), first_param=first)


def test_nested_rules_compile_to_placeholders_in_order() -> None:
    out = compiled(
        {
            "all": [
                {"field": "days_since_last", "op": ">=", "value": 90},
                {"any": [
                    {"field": "total_spend", "op": ">", "value": "99.95"},
                    {"field": "attributes.tier", "op": "in", "value": ["gold", "vip"]},
                ]},
                {"not": {"field": "last_purchase", "op": "<", "value": "2026-01-01"}},
            ]
        }
    )  # fmt: skip
    assert out.params == [90, 99_950_000, "tier", ["gold", "vip"], date(2026, 1, 1)]
    for n in range(4, 9):
        assert f"${n}::" in out.sql
    assert "$9" not in out.sql and "gold" not in out.sql and "tier" not in out.sql


def test_hostile_text_is_only_ever_a_parameter() -> None:
    evil = "x'); DROP TABLE segments; --"
    out = compiled({"field": "email", "op": "contains", "value": evil}, first=1)
    assert evil not in out.sql and "DROP" not in out.sql
    assert out.params == ["%x'); DROP TABLE segments; --%"]
    like = compiled({"field": "first_name", "op": "contains", "value": "50%_a"}, first=1)
    assert like.params == [r"%50\%\_a%"]  # LIKE wildcards in the value match themselves


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"field": "password", "op": "=", "value": 1}, "unknown field 'password'"),
        ({"field": "attributes.a b", "op": "=", "value": "x"}, "unknown field"),
        ({"field": "days_since_last", "op": "contains", "value": "1"}, "its operators are"),
        ({"field": "days_since_last", "op": ">", "value": "ninety"}, "a whole number"),
        ({"field": "days_since_last", "op": ">", "value": 1.5}, "a whole number"),
        ({"field": "total_spend", "op": ">", "value": "1.0000001"}, "an amount"),
        ({"field": "last_purchase", "op": ">", "value": "yesterday"}, "an ISO day"),
        ({"field": "has_email", "op": "=", "value": "yes"}, "true or false"),
        ({"field": "email", "op": "in", "value": []}, "a list of 1 to"),
    ],
)
def test_bad_rules_say_what_to_fix(rule: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        compiled(rule)


def test_limits_on_depth_and_size() -> None:
    deep: dict = {"field": "purchases", "op": ">", "value": 1}
    for _ in range(7):
        deep = {"not": deep}
    with pytest.raises(InvalidInput, match="levels deep"):
        compiled(deep)
    wide = {"any": [{"field": "purchases", "op": "=", "value": i} for i in range(51)]}
    with pytest.raises(InvalidInput, match="at most 50 conditions"):
        compiled(wide)
