"""deploy/grafana: the dashboard is well-formed, covers what the issue asks, its PromQL parses and only
uses series the worker exposes; the provisioning points Grafana at it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.observability import (
    DASHBOARD,
    DEPLOY,
    SCRAPE_SERIES,
    build_exposition,
    check_promql,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    exposed_series_names,
    metric_names,
)

# Panels the issue asks for: title -> a series its queries must use.
REQUIRED_PANELS = {
    "Decisions/s by pool and reason": "leadrelay_decisions_total",
    "Decision latency p50 / p90 / p99": "leadrelay_decision_latency_seconds_bucket",
    "Open leads and capacity per pool": "leadrelay_open_leads",
    "Fairness (Gini) per pool": "leadrelay_fairness_gini_ratio",
    "Dead letters/s by source and reason": "leadrelay_dead_letters_total",
    "Consumer lag by topic": "leadrelay_consumer_lag_records",
}


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "leadrelay-overview" and board["title"]
    assert isinstance(board["schemaVersion"], int)
    panels = list(dashboard_panels(board))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_has_the_panels_of_the_issue() -> None:
    exprs: dict[str, list[str]] = {}
    for title, expr in dashboard_exprs():
        exprs.setdefault(title, []).append(expr)
    for title, series in REQUIRED_PANELS.items():
        assert title in exprs, f"missing panel {title!r}"
        assert any(series in metric_names(e) for e in exprs[title]), f"{title!r} does not use {series}"
    latency = " ".join(exprs["Decision latency p50 / p90 / p99"])
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    assert any("rate(leadrelay_decisions_total" in e for e in exprs["Decisions/s by pool and reason"])


def test_dashboard_promql_parses() -> None:
    check_promql(expr for _, expr in dashboard_exprs())


def test_promql_check_catches_a_syntax_error() -> None:
    """Guard the guard: a broken expression fails the same check."""
    try:
        check_promql(["sum(rate(leadrelay_decisions_total[5m])"])
    except AssertionError as exc:
        assert "parse error" in str(exc) or "unclosed" in str(exc)
    else:
        raise AssertionError("promtool accepted a broken expression")


def test_dashboard_only_uses_exposed_series(tmp_path: Path) -> None:
    text, _ = build_exposition(tmp_path)
    known = exposed_series_names(text) | SCRAPE_SERIES
    for title, expr in dashboard_exprs():
        used = metric_names(expr)
        assert used, f"{title}: {expr} selects no metric"
        assert used <= known, f"{title}: {expr} uses series the worker does not expose: {used - known}"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "leadrelay.yml").read_text())["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert DASHBOARD.parent == DEPLOY / "grafana" / "dashboards"
