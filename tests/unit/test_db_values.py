"""Values PostgreSQL would refuse are refused by the pydantic model first (found by fuzzing)."""

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ValidationError

from kiki.db.values import INT4_MAX, PgInt, PgJson, PgText


class Body(BaseModel):
    name: PgText = ""
    config: Annotated[dict[str, Any], PgJson] = {}
    version: PgInt = 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"config": {"k\x00": 1}}, "config"),
        ({"config": {"k": [{"deep": "\x00"}]}}, "config"),
        ({"version": INT4_MAX + 1}, "version"),
        ({"version": -INT4_MAX - 2}, "version"),
    ],
)
def test_refused_with_the_field_named(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Body(**data)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    if field != "version":
        assert "NUL" in error["msg"]


def test_everything_else_passes_unchanged() -> None:
    body = Body(name="Ünïcode ✓", config={"a": [1, "x", None, {"b": True}]}, version=INT4_MAX)
    assert body.model_dump() == {
        "name": "Ünïcode ✓",
        "config": {"a": [1, "x", None, {"b": True}]},
        "version": INT4_MAX,
    }


def test_text_with_an_unpaired_surrogate_is_refused() -> None:
    """The fuzz sent `"\\udae2"` in a billable metric's field_name: valid JSON, but no UTF-8
    form, so the database driver failed on it (a 500)."""

    class Body(BaseModel):
        name: PgText

    with pytest.raises(ValidationError, match="unpaired surrogate"):
        Body(name="a\udae2b")
    assert Body(name="ok \U0001f600").name == "ok \U0001f600"  # a real pair is fine
