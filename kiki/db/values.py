"""Values PostgreSQL can store, checked at the edge.

PostgreSQL's `text` and `jsonb` refuse the NUL character (U+0000) that JSON and URLs can carry,
and an `integer` column or parameter refuses numbers past 32 bits: a request with either passes
an unconstrained `str` or `int` field and then fails in the query (asyncpg's
CharacterNotInRepertoireError, DataError), as a 500. These types refuse such values in the
pydantic model, so the caller gets a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field

INT4_MAX = 2**31 - 1
NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (\\u0000): remove it and send the request again"
T = TypeVar("T")


def refuse_nul(value: str) -> str:
    """Text PostgreSQL can store: no NUL, and no unpaired surrogate (JSON's `\\ud800` escapes
    decode to one; it has no UTF-8 form, so the driver cannot send it)."""
    if NUL in value:
        raise ValueError(NUL_MESSAGE)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(
            "must be valid Unicode: it holds an unpaired surrogate (an escape such as \\ud800 "
            "without its pair); send the character itself or a complete pair"
        ) from None
    return value


def refuse_nul_deep(value: T) -> T:
    """`refuse_nul` for every string inside JSON-like data, keys included."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            refuse_nul(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return value


PgText = Annotated[str, AfterValidator(refuse_nul)]
"""A string PostgreSQL can store: anything but NUL (add length bounds with Field)."""

PgJson = AfterValidator(refuse_nul_deep)
"""Metadata for JSON-like fields: `Annotated[dict[str, Any], PgJson]`."""

PgInt = Annotated[int, Field(ge=-INT4_MAX - 1, le=INT4_MAX)]
"""An int for an `integer` column (narrow it further with Field)."""
