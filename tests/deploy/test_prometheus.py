"""deploy/prometheus: the config and alert rules pass promtool, the rule unit tests pass, every alert is
documented, and every expression only uses series the worker really exposes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy.observability import (
    ALERT_TESTS,
    ALERTS,
    DEPLOY,
    OPERATIONS,
    SCRAPE_SERIES,
    alert_rules,
    build_exposition,
    exposed_series_names,
    heading_anchors,
    metric_names,
    tool,
)

# What the issue asks the alerts to cover, by alert name.
REQUIRED_ALERTS = {
    "LeadRelayConsumerLagHigh",  # lag
    "LeadRelayDeadLetterRateHigh",  # DLQ rate
    "LeadRelayNoDecisions",  # no decisions
    "LeadRelayUnassignedRateHigh",  # unassigned rate
    "LeadRelayWorkerDown",  # worker down
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_rules_pass_promtool_check() -> None:
    proc = promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_rule_unit_tests_pass() -> None:
    proc = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """Guard the guard: the same unit tests fail against rules with a wrong threshold."""
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text().replace("for: 2m", "for: 30m"))
    proc = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert proc.returncode != 0
    assert "LeadRelayWorkerDown" in proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: no case where it stays quiet"


def test_required_alerts_exist_with_severity_and_runbook() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert names >= REQUIRED_ALERTS
    anchors = heading_anchors(OPERATIONS.read_text())
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/operations.md has no runbook section for {rule['alert']}"


def test_rule_expressions_only_use_exposed_series(tmp_path: Path) -> None:
    text, _ = build_exposition(tmp_path)
    known = exposed_series_names(text) | SCRAPE_SERIES
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: selects no metric"
        assert used <= known, f"{rule['alert']} uses series the worker does not expose: {used - known}"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (pool) (rate(leadrelay_decisions_total{reason!="assigned", pool=~"a|b"}[15m])) '
        '/ on (pool) group_left label_replace(up{job="x"}, "source", "$1", "topic", "(.*)") > bool 0.2 '
        "unless histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m] offset 1h)))"
    )
    assert metric_names(expr) == {"leadrelay_decisions_total", "up", "x_bucket"}


def test_compose_prometheus_config_is_valid_and_loads_the_rules() -> None:
    path = DEPLOY / "prometheus" / "prometheus.yml"
    proc = promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = yaml.safe_load(path.read_text())
    assert loaded["rule_files"] == [ALERTS.name]
    [job] = [
        j for j in loaded["scrape_configs"] if j["job_name"] == "leadrelay"
    ]  # the alerts select up{job="leadrelay"}
    assert all(j["job_name"].startswith("leadrelay-") for j in loaded["scrape_configs"] if j is not job)
