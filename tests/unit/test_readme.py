"""The README is a contract too: its examples, configuration table and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

import schemas
from routing.ids import decision_id
from streams.settings import Settings
from streams.tools.cli import parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

# The public contracts the README must show an example of, one block per model at least.
CONTRACTS = ("LeadCreated", "DealClosed", "RepUpdated", "AssignmentDecision")
# ```json LeadCreated ... ``` : the info string names the model the block must validate against.
EXAMPLE = re.compile(r"^```json[ \t]+(?P<model>\w+)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
ENV_VAR = re.compile(r"\bLEADRELAY_[A-Z0-9_]+\b")


def examples() -> list[tuple[str, str]]:
    return [(m["model"], m["body"]) for m in EXAMPLE.finditer(README)]


def section(title: str) -> str:
    """The text of a `## title` section, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(?P<body>.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {title}' section"
    return match["body"]


def config_rows() -> dict[str, list[str]]:
    """Rows of the configuration table: env var -> cells (the first cell names the variable)."""
    rows: dict[str, list[str]] = {}
    for line in section("Configuration").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = ENV_VAR.findall(cells[0])
        if found:
            assert len(found) == 1, f"one variable per row: {line}"
            assert found[0] not in rows, f"{found[0]} has two rows"
            rows[found[0]] = cells
    return rows


def rendered_default(value: Any) -> str:
    """How the table writes a default: `unset` for None, JSON-ish for the rest."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


# (a) examples


def test_every_contract_has_an_example() -> None:
    shown = {model for model, _ in examples()}
    missing = [m for m in CONTRACTS if m not in shown]
    assert not missing, f"README lacks a ```json <Model> example for {missing}"


@pytest.mark.parametrize(("model", "body"), examples(), ids=[f"{m}-{i}" for i, (m, _) in enumerate(examples())])
def test_example_validates_with_its_model(model: str, body: str) -> None:
    cls = getattr(schemas, model, None)
    assert isinstance(cls, type) and issubclass(cls, BaseModel), f"```json {model}: no such model in schemas"
    cls.model_validate_json(body)


def test_examples_are_realistic() -> None:
    leads = [schemas.LeadCreated.model_validate_json(b) for m, b in examples() if m == "LeadCreated"]
    assert any(lead.contact is not None for lead in leads), "show the contact block upstream sends"
    for lead in leads:
        if lead.contact and lead.contact.email:
            assert lead.contact.email.endswith(("example.com", "example.org", "example.net")), "obviously fake data"
    decisions = [schemas.AssignmentDecision.model_validate_json(b) for m, b in examples() if m == "AssignmentDecision"]
    explained = [d for d in decisions if d.explanation.chosen and d.explanation.runners_up and d.explanation.excluded]
    assert explained, "show a decision whose explanation has chosen, runners_up and excluded"
    for d in decisions:
        assert d.decision_id == decision_id(d.lead_id, d.attempt), "decision ids are derived, not invented"
        if d.rep_id is not None:
            assert d.explanation.chosen is not None and d.explanation.chosen.rep_id == d.rep_id


# (b) configuration table


def test_configuration_table_lists_exactly_the_settings() -> None:
    documented = set(config_rows())
    expected = {Settings.env_var(name) for name in Settings.model_fields}
    assert not expected - documented, f"settings missing from the README table: {sorted(expected - documented)}"
    assert not documented - expected, f"unknown variables in the README table: {sorted(documented - expected)}"


def test_configuration_table_defaults_match_the_code() -> None:
    rows = config_rows()
    wrong = {}
    for name, field in Settings.model_fields.items():
        cells = rows.get(Settings.env_var(name))
        if cells is None:
            continue  # reported by test_configuration_table_lists_exactly_the_settings
        assert len(cells) >= 3, f"{name}: expected | variable | default | meaning |"
        expected = rendered_default(field.get_default(call_default_factory=True))
        if cells[1].strip("`") != expected:
            wrong[name] = (cells[1], expected)
    assert not wrong, f"README defaults differ from the code (README, code): {wrong}"


# (c) the two commands, and the rest of the command surface


@pytest.mark.parametrize("target", ["demo", "test", "test-fast"])
def test_make_commands_are_documented_and_exist(target: str) -> None:
    assert re.search(rf"\bmake {re.escape(target)}\b", README), f"README does not mention `make {target}`"
    assert re.search(rf"^{re.escape(target)}:", MAKEFILE, re.MULTILINE), f"Makefile has no target {target}"


def test_quick_start_shows_the_two_commands() -> None:
    quick = section("Quick start")
    blocks = re.findall(r"^```(?:sh|bash|console)?\n(.*?)^```", quick, re.MULTILINE | re.DOTALL)
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    assert {"make demo", "make test"} <= lines


def test_cli_reference_covers_every_subcommand() -> None:
    reference = section("CLI reference")
    sub = next(a for a in parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"leadrelay {name}" in reference, f"CLI reference lacks `leadrelay {name}`"
