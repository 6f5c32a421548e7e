"""The compatibility check: crafted before/after schema pairs, per kind of change and per direction."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schemas import publish
from schemas.compat import Direction, breaking_changes

ROOT = Path(__file__).resolve().parents[2]


def record(**props: Any) -> dict[str, Any]:
    """An object schema like pydantic's: every listed property, `required` from the `!` prefix."""
    required = [name.lstrip("!") for name in props if name.startswith("!")]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name.lstrip("!"): schema for name, schema in props.items()},
        "required": required,
    }


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
NULLABLE_STR = {"anyOf": [STR, {"type": "null"}], "default": None}
OUTCOME = {"enum": ["won", "lost"], "type": "string"}
BASE = record(
    **{"!lead_id": STR, "amount": {**NUM, "minimum": 0, "default": 0}, "outcome": OUTCOME, "note": NULLABLE_STR}
)


def changed(**props: Any) -> dict[str, Any]:
    after = copy.deepcopy(BASE)
    for name, schema in props.items():
        key = name.lstrip("!")
        if schema is None:
            del after["properties"][key]
            after["required"] = [r for r in after["required"] if r != key]
        else:
            after["properties"][key] = schema
            if name.startswith("!") and key not in after["required"]:
                after["required"].append(key)
    return after


def renamed() -> dict[str, Any]:
    after = changed(lead_id=None)
    after["properties"]["lead"] = STR
    after["required"].append("lead")
    return after


# (case, after, breaks an input, breaks an output)
CASES: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("field removed", changed(note=None), True, True),
    ("field renamed", renamed(), True, True),
    ("new required field", changed(**{"!region": STR}), True, False),
    ("new optional field", changed(region=NULLABLE_STR), False, False),
    ("optional became required", changed(**{"!note": NULLABLE_STR}), True, False),
    ("required became optional", {**BASE, "required": []}, False, True),
    ("type narrowed number -> integer", changed(amount={**INT, "minimum": 0, "default": 0}), True, False),
    ("type widened integer -> number", changed(amount={**NUM, "minimum": 0, "default": 0}), False, False),
    ("nullable removed", changed(note=STR), True, False),
    ("null allowed", changed(lead_id={"anyOf": [STR, {"type": "null"}]}), False, True),
    ("minimum raised", changed(amount={**NUM, "minimum": 1, "default": 0}), True, False),
    ("maximum added", changed(amount={**NUM, "minimum": 0, "maximum": 10, "default": 0}), True, False),
    ("minimum removed", changed(amount={**NUM, "default": 0}), False, True),
    ("maxLength lowered", changed(lead_id={**STR, "maxLength": 8}), True, False),
    ("pattern added", changed(lead_id={**STR, "pattern": "^[A-Z]+$"}), True, False),
    ("enum value removed", changed(outcome={"enum": ["won"], "type": "string"}), True, False),
    ("enum value added", changed(outcome={"enum": ["won", "lost", "open"], "type": "string"}), False, True),
    ("enum turned into free text", changed(outcome=STR), False, True),
    ("default changed", changed(amount={**NUM, "minimum": 0, "default": 1}), True, True),
    ("description changed", changed(outcome={**OUTCOME, "description": "how it ended"}), False, False),
    ("unknown fields allowed", {**BASE, "additionalProperties": True}, False, True),
    ("format added", changed(lead_id={**STR, "format": "date-time"}), True, False),
    ("schema_version moved", changed(outcome={"const": 2, "type": "integer"}), True, True),
]


@pytest.mark.parametrize(("case", "after", "breaks_input", "breaks_output"), CASES, ids=[c[0] for c in CASES])
def test_change_kinds(case: str, after: dict[str, Any], breaks_input: bool, breaks_output: bool) -> None:
    for direction, expected in (("input", breaks_input), ("output", breaks_output)):
        found = breaking_changes(BASE, after, direction)  # type: ignore[arg-type]
        assert bool(found) == expected, f"{case} as {direction}: {[str(c) for c in found]}"


def test_the_report_names_the_field() -> None:
    (change,) = breaking_changes(BASE, changed(outcome={"enum": ["won"], "type": "string"}), "input")
    assert str(change) == "/outcome: value(s) removed: ['lost']"


def test_changes_inside_referenced_definitions_are_found() -> None:
    def nested(level: dict[str, Any]) -> dict[str, Any]:
        return {
            "$defs": {"Need": record(**{"!tag": STR, "level": level}), "Strategy": record(must=_array("#/$defs/Need"))},
            **record(**{"!strategy": {"$ref": "#/$defs/Strategy"}}),
        }

    before = nested({**INT, "maximum": 5})
    after = nested({**INT, "maximum": 3})
    assert [str(c) for c in breaking_changes(before, after, "input")] == ["/strategy/must/items/level: maximum 5 -> 3"]
    assert breaking_changes(before, after, "output") == []


def test_a_recursive_definition_terminates() -> None:
    node = {"$defs": {"Node": record(child={"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}, name=STR)}}
    before = {**node, "$ref": "#/$defs/Node"}
    after = copy.deepcopy(before)
    del after["$defs"]["Node"]["properties"]["name"]
    assert [str(c) for c in breaking_changes(before, after, "input")] == ["/name: field removed (or renamed)"]


def _array(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": ref}}


# the whole check over schema files: versions


def files(*schemas: tuple[str, int, dict[str, Any], Direction]) -> dict[str, str]:
    return {
        f"{name}.v{version}.json": json.dumps({**schema, "x-schema-version": version, "x-direction": direction})
        for name, version, schema, direction in schemas
    }


def test_a_breaking_change_needs_a_version_move() -> None:
    before = files(("deals.closed", 1, BASE, "input"))
    problems, _ = publish.compat(before, files(("deals.closed", 1, changed(note=None), "input")))
    assert problems == ["deals.closed v1: /note: field removed (or renamed)"]
    problems, notes = publish.compat(before, files(("deals.closed", 2, changed(note=None), "input")))
    assert problems == []
    assert notes == ["deals.closed: v1 -> v2 allows: /note: field removed (or renamed)"]


def test_the_newest_version_is_compared_and_old_files_are_history() -> None:
    before = files(("leads.new", 1, BASE, "input"), ("leads.new", 2, changed(region=NULLABLE_STR), "input"))
    after = {**before, **files(("leads.new", 2, changed(region=NULLABLE_STR, note=None), "input"))}
    problems, _ = publish.compat(before, after)
    assert problems == ["leads.new v2: /note: field removed (or renamed)"]


def test_removing_a_contract_or_lowering_its_version_breaks() -> None:
    before = files(("leads.new", 2, BASE, "input"), ("deals.closed", 1, BASE, "input"))
    problems, _ = publish.compat(before, files(("leads.new", 1, BASE, "input")))
    assert "deals.closed: contract removed (v1)" in problems
    assert "leads.new: version went back from v2 to v1" in problems


def test_the_file_name_and_x_schema_version_must_agree() -> None:
    before = files(("leads.new", 1, BASE, "input"))
    after = {"leads.new.v1.json": json.dumps({**BASE, "x-schema-version": 2, "x-direction": "input"})}
    problems, _ = publish.compat(before, after)
    assert problems == ["leads.new.v1.json: x-schema-version is 2, the file name says 1"]


def test_a_new_contract_is_a_note() -> None:
    problems, notes = publish.compat({}, files(("leads.new", 1, BASE, "input")))
    assert problems == [] and notes == ["leads.new: new contract (v1)"]


def test_the_published_schemas_are_compatible_with_themselves() -> None:
    problems, notes = publish.compat(publish.read_directory(publish.JSON_DIR), publish.expected())
    assert problems == [] and notes == []


def test_a_change_to_the_models_is_caught_against_the_committed_files(tmp_path: Path) -> None:
    """End to end through the CLI: the committed files with a field the models no longer have."""
    publish.write(tmp_path)
    path = tmp_path / "leads.assignments.v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["routed_by"] = {"type": "string"}
    path.write_text(json.dumps(schema))
    assert publish.main(["--compat", str(tmp_path)]) == 1
    schema["properties"].pop("routed_by")
    path.write_text(json.dumps(schema))
    assert publish.main(["--compat", str(tmp_path)]) == 0


def test_compat_reads_a_git_ref() -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()

    head = publish.read_git("HEAD", ROOT)
    assert set(head) == set(git("ls-tree", "--name-only", "HEAD:schemas/json").split())
    assert all(json.loads(text)["x-schema-version"] >= 1 for text in head.values())
    root = git("rev-list", "--max-parents=0", "HEAD").split()[0]
    assert publish.read_git(root, ROOT) == {}  # before contracts were published: everything is new
    with pytest.raises(subprocess.CalledProcessError):
        publish.read_git("no-such-ref-anywhere", ROOT)
