"""The Prometheus alerting rules (ops/prometheus/alerts.yml): valid, each one covered by a
`promtool test rules` case that makes it fire, and each explained in the README's runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((REPO / "ops" / "prometheus" / "tests").glob("*.yml"))


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make sysdeps` installs Debian's prometheus package")
    return found


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_rules_are_valid() -> None:
    run = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    run = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_case_that_fires() -> None:
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts()) - fired == set()


def test_every_alert_has_a_runbook_entry() -> None:
    readme = (REPO / "README.md").read_text()
    headings = {h.lower() for h in re.findall(r"^#+ (Kiki\w+)$", readme, re.MULTILINE)}
    for name, rule in alerts().items():
        assert rule["annotations"]["runbook"] == f"README.md#{name.lower()}"
        assert name.lower() in headings, f"README has no runbook entry for {name}"
        assert rule["labels"]["severity"] in {"critical", "warning"}
