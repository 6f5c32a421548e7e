"""Helpers shared by the observability tests: the worker's real exposition, promtool, PromQL names.

The exposition is built by the real `create_app()` (our metrics, the consumer lag gauge and Faust's
sensors on one registry), so a test that compares dashboard or alert expressions with it compares them
with what a worker serves. promtool must be installed (scripts/system-deps.sh, run by `make test`);
its absence fails the tests, it never skips them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "leadrelay.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

# Series that Prometheus itself adds to every scrape target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "atmodifier", "inf", "nan",
}  # fmt: skip
# Grafana's variables, replaced by values valid in plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${pool}": ".*",
    "$pool": ".*",
}


def tool(name: str) -> str:
    """Path of a system tool the tests need; fails (never skips) when it is missing."""
    path = shutil.which(name)
    assert path, f"{name} not found: run scripts/system-deps.sh (make test does) to install it"
    return path


def build_exposition(tmp: Path, **settings: Any) -> tuple[str, Any]:
    """The text a worker serves on /metrics before any traffic, and its Metrics object."""
    from prometheus_client import generate_latest

    from streams.runtime.app import create_app
    from streams.settings import Settings

    relay = create_app(Settings(data_dir=tmp, **settings))
    return generate_latest(relay.metrics.registry).decode(), relay


def exposed_series_names(exposition: str) -> set[str]:
    """Sample names a scrape of this exposition creates (counter *_total, histogram *_bucket/_sum/_count)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def promtool_lint(exposition: str) -> dict[str, str]:
    """`promtool check metrics` findings as {metric: problem}; {} when the exposition is clean."""
    proc = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    findings: dict[str, str] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            metric, _, problem = line.strip().partition(" ")
            findings[metric] = problem
    assert (proc.returncode == 0) == (not findings), f"promtool exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    return findings


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in re.sub(r'"[^"]*"', "", expr), f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, labels, strings or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels(board: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    for panel in (board or dashboard())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, variables replaced."""
    board = dashboard()
    out = [
        (panel["title"], grafana_to_promql(target["expr"]))
        for panel in dashboard_panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert match, f"unexpected variable query {query!r}"
            out.append((f"variable {variable['name']}", match.group(1)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def check_promql(exprs: Iterable[str]) -> None:
    """Parse every expression with promtool (as recording rules): a syntax error fails with its text."""
    rules = [{"record": f"check:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
        proc = subprocess.run(
            [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def heading_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the markdown headings."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors
