"""A small, safe rule language for segments, compiled to parameterised SQL.

A rule is JSON: a condition `{"field": "days_since_last", "op": ">=", "value": 90}`, or
`{"all": [rules]}`, `{"any": [rules]}`, `{"not": rule}`. Fields come from a fixed catalogue,
each with a type that decides its operators and how its value is read (money as an exact
decimal, dates as ISO days); `attributes.<key>` reads a customer's stored attribute as text.

Only catalogue SQL ever enters the query text: every value, attribute key and pattern is a
bind parameter, so no rule can change the query's shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kiki.db.values import PgJson, PgText
from kiki.errors import InvalidInput
from kiki.money import decimal_to_micros, to_decimal

MAX_DEPTH = 6
MAX_CONDITIONS = 50
MAX_LIST = 1000
FieldType = Literal["integer", "money", "date", "text", "boolean"]

# name -> (SQL over the `people` relation, type)
FIELDS: dict[str, tuple[str, FieldType]] = {
    "purchases": ("purchases", "integer"),
    "total_spend": ("spend_micros", "money"),
    "avg_order_value": ("avg_order_micros", "money"),
    "days_since_last": ("days_since_last", "integer"),
    "days_since_first": ("days_since_first", "integer"),
    "first_purchase": ("first_purchase", "date"),
    "last_purchase": ("last_purchase", "date"),
    "rfm_segment": ("rfm_segment", "text"),
    "email": ("email", "text"),
    "phone": ("phone", "text"),
    "first_name": ("first_name", "text"),
    "has_email": ("(email IS NOT NULL)", "boolean"),
    "has_phone": ("(phone IS NOT NULL)", "boolean"),
    "has_push_token": ("(push_token IS NOT NULL)", "boolean"),
}
ATTRIBUTE = re.compile(r"^attributes\.([A-Za-z0-9_]{1,64})$")
COMPARISONS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
OPERATORS: dict[FieldType, frozenset[str]] = {
    "integer": frozenset({*COMPARISONS, "in", "not_in", "is_set", "is_not_set"}),
    "money": frozenset({*COMPARISONS, "is_set", "is_not_set"}),
    "date": frozenset({*COMPARISONS, "is_set", "is_not_set"}),
    "text": frozenset({"=", "!=", "in", "not_in", "contains", "is_set", "is_not_set"}),
    "boolean": frozenset({"=", "!="}),
}
SQL_TYPES: dict[FieldType, str] = {
    "integer": "bigint",
    "money": "bigint",
    "date": "date",
    "text": "text",
    "boolean": "boolean",
}
Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains", "is_set", "is_not_set"]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: PgText = Field(max_length=200, description="a catalogue field, or attributes.<key>")
    op: Op
    value: Annotated[Any, PgJson] = None


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list[Rule] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    any: list[Rule] = Field(min_length=1)


class NotRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    not_: Rule = Field(alias="not")


Rule = Condition | AllOf | AnyOf | NotRule
for _model in (AllOf, AnyOf, NotRule):
    _model.model_rebuild()


@dataclass
class Compiled:
    """A WHERE clause and its bind values; placeholders start after `first_param - 1`."""

    sql: str
    params: list[Any] = field(default_factory=list)


class _Compiler:
    def __init__(self, first_param: int) -> None:
        self.first_param = first_param
        self.params: list[Any] = []
        self.conditions = 0

    def bind(self, value: Any, sql_type: str) -> str:
        self.params.append(value)
        return f"${self.first_param + len(self.params) - 1}::{sql_type}"

    def rule(self, rule: Rule, path: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{path}: rules nest at most {MAX_DEPTH} levels deep")
        if isinstance(rule, AllOf | AnyOf):
            parts = rule.all if isinstance(rule, AllOf) else rule.any
            key, joiner = ("all", " AND ") if isinstance(rule, AllOf) else ("any", " OR ")
            inner = [self.rule(r, f"{path}.{key}[{i}]", depth + 1) for i, r in enumerate(parts)]
            return "(" + joiner.join(inner) + ")"
        if isinstance(rule, NotRule):
            return f"(NOT COALESCE({self.rule(rule.not_, f'{path}.not', depth + 1)}, false))"
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise InvalidInput(f"a rule may hold at most {MAX_CONDITIONS} conditions")
        return self.condition(rule, path)

    def condition(self, c: Condition, path: str) -> str:
        column, kind = self.field(c.field, path)
        if c.op not in OPERATORS[kind]:
            allowed = ", ".join(sorted(OPERATORS[kind]))
            raise InvalidInput(f"{path}: {c.field} is {kind}; its operators are {allowed}")
        if c.op in ("is_set", "is_not_set"):
            return f"({column} IS {'NOT ' if c.op == 'is_set' else ''}NULL)"
        sql_type = SQL_TYPES[kind]
        if c.op in ("in", "not_in"):
            if not isinstance(c.value, list) or not 1 <= len(c.value) <= MAX_LIST:
                raise InvalidInput(f"{path}: {c.op} takes a list of 1 to {MAX_LIST} values")
            values = [_value(v, kind, f"{path}.value[{i}]") for i, v in enumerate(c.value)]
            test = f"{column} = ANY({self.bind(values, sql_type + '[]')})"
            return f"COALESCE({test}, false)" if c.op == "in" else f"NOT COALESCE({test}, false)"
        if c.op == "contains":
            if not isinstance(c.value, str) or not c.value:
                raise InvalidInput(f"{path}: contains takes a non-empty text")
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", c.value) + "%"
            return f"({column} ILIKE {self.bind(pattern, 'text')})"
        value = _value(c.value, kind, f"{path}.value")
        return f"({column} {COMPARISONS[c.op]} {self.bind(value, sql_type)})"

    def field(self, name: str, path: str) -> tuple[str, FieldType]:
        if name in FIELDS:
            return FIELDS[name]
        match = ATTRIBUTE.match(name)
        if match:
            return f"(attributes ->> {self.bind(match.group(1), 'text')})", "text"
        known = ", ".join(FIELDS)
        raise InvalidInput(
            f"{path}: unknown field {name!r}; use one of {known}, or attributes.<key> "
            "(letters, digits and _)"
        )


def _value(value: Any, kind: FieldType, path: str) -> Any:
    """A rule value as the type its field holds, or InvalidInput saying what was expected."""
    try:
        if kind == "integer" and not isinstance(value, bool):
            number = to_decimal(value)
            if number == number.to_integral_value():
                return int(number)
        elif kind == "money" and not isinstance(value, bool):
            return decimal_to_micros(to_decimal(value))
        elif kind == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        elif (kind == "text" and isinstance(value, str) and len(value) <= 1000) or (
            kind == "boolean" and isinstance(value, bool)
        ):
            return value
    except (InvalidInput, ValueError):
        pass
    expected = {
        "integer": "a whole number",
        "money": 'an amount such as 100 or "99.95"',
        "date": 'an ISO day such as "2026-01-31"',
        "text": "a text of at most 1,000 characters",
        "boolean": "true or false",
    }[kind]
    shown = str(value) if isinstance(value, Decimal) else repr(value)
    raise InvalidInput(f"{path}: expected {expected}, got {shown}")


def compile_rule(rule: Rule, first_param: int = 1) -> Compiled:
    """The rule as a boolean SQL expression over `people` (see kiki.engage.segments), with
    placeholders numbered from `first_param`. Unknown values are false, never NULL."""
    compiler = _Compiler(first_param)
    sql = compiler.rule(rule, "rule", 1)
    return Compiled(f"COALESCE({sql}, false)", compiler.params)
