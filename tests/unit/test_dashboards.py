"""The Grafana dashboards (ops/grafana/*.json): importable, every query valid PromQL (promtool
checks them as recording rules). That every metric they read is exported by a running
platform is checked in tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.promql import DASHBOARDS, metric_names, panel_exprs
from tests.unit.test_alert_rules import promtool

EXPECTED = {"kiki-overview", "kiki-flow", "kiki-budgets", "kiki-value", "kiki-billing"}


def test_the_five_dashboards_import_with_a_prometheus_data_source() -> None:
    assert {p.stem for p in DASHBOARDS} == EXPECTED
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem
        assert [i["pluginId"] for i in board["__inputs"]] == ["prometheus"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) >= 5
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"check:{path.stem.replace('-', '_')}:{n}", "expr": expr}
        for path in DASHBOARDS
        for n, (_, expr) in enumerate(panel_exprs(path))
    ]
    file = tmp_path / "panels.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    run = subprocess.run([promtool(), "check", "rules", str(file)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_metric_names_are_read_from_selectors_only() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (app, le) (rate(a_bucket{app="x",le!="1"}[5m])))'
        " / on (app) group_left (kind) b_total or vector(0) * time() - c offset 5m > bool 1"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
