"""No file KIKI writes can hold a customer, so erasure has no file to rewrite: each file is
written from a shape that has no field the personal-column rule (kiki.gdpr.PERSONAL_COLUMN)
matches, nor any customer list.

- model folders in the artifact store: weights plus LTVModelMeta / ChurnModelMeta (the
  features' scaling, hyperparameters, BG/NBD parameters: aggregates of the training set);
- Ray Tune results: each trial's hyperparameters and its validation loss;
- creative images and their experiments' request: the product and brand brief
  (GenerateRequest), keyed `creatives/<tenant>/<experiment>/<creative>.png`;
- simulation charts: `simulations/<tenant>.png`, spend curves of campaigns;
- the bid loop's `decision:` log lines: campaign, ad group, platform and numbers.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel

from kiki.create.brief import GenerateRequest
from kiki.engage.churn import ChurnModelMeta
from kiki.flow.audit import _LINE
from kiki.gdpr import PERSONAL_COLUMN
from kiki.value.ziln import LTVModelMeta

# Names the rule matches that are not a person's.
NOT_A_PERSON = {"Product.name": "the product advertised", "Brand.name": "the advertiser"}


def field_names(model: type[BaseModel]) -> set[str]:
    """Every field of `model` and of the models nested in it, as Model.field."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(f"{model.__name__}.{name}")
        for kind in (info.annotation, *get_args(info.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names |= field_names(kind)
    return names


def test_files_are_written_from_shapes_without_a_customer_field() -> None:
    written: dict[str, Any] = {
        "LTV model meta": LTVModelMeta,
        "churn model meta": ChurnModelMeta,
        "creative request": GenerateRequest,
    }
    for what, model in written.items():
        names = field_names(model)
        assert len(names) > 3, what  # the walk found the fields
        personal = [n for n in names if PERSONAL_COLUMN.search(n.split(".")[1])]
        assert set(personal) - set(NOT_A_PERSON) == set(), what

    keys = re.findall(r'"(\w+)":', _LINE)
    assert {"campaign", "ad_group", "bid_micros"} <= set(keys)
    assert [k for k in keys if PERSONAL_COLUMN.search(k)] == []
