"""The metric names a PromQL expression reads, and the panels of KIKI's Grafana dashboards.

A small reader of PromQL's selectors, not a parser: the expressions are checked for syntax by
promtool (tests/unit/test_dashboards.py); here strings, label matchers, ranges and the label
lists of `by`/`without`/`on`/`ignoring`/`group_*` are dropped, and every remaining name not
called as a function nor a keyword is a metric."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "ops" / "grafana").glob("*.json"))
_DROP = [
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'',  # strings
    r"\{[^}]*\}",  # label matchers
    r"\[[^\]]*\]",  # ranges and subqueries
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",  # label lists
]
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    for pattern in _DROP:
        expr = re.sub(pattern, " ", expr)
    return {
        m.group(1)
        for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", expr)
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS
    }


def panel_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(panel title, query) of every panel of a dashboard."""
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
