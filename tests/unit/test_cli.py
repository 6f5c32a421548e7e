"""The offline CLI paths: policy check, dry-run and the explain renderer (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

from streams.cli import main
from streams.explain import render

ROOT = Path(__file__).resolve().parents[2]
LEAD = ROOT / "deploy" / "demo" / "lead.json"
ROSTER = ROOT / "deploy" / "demo" / "roster.json"
FULL = ROOT / "deploy" / "policies" / "full.yaml"


def test_policy_check_accepts_a_good_file_and_names_the_bad_field(tmp_path: Path, capsys) -> None:
    assert main(["policy", "check", str(FULL)]) == 0
    assert "ok: policy dach-full v1 for pool dach" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nversion: 0\n")
    assert main(["policy", "check", str(bad)]) == 1
    assert "invalid policy: version:" in capsys.readouterr().err


def test_dry_run_decides_and_explains_without_kafka(capsys) -> None:
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(ROSTER), "--policy", str(FULL), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    # 32,000 EUR is premium: seniors and mids only; dieter is away, clara (junior) not allowed.
    assert decision["rep_id"] in {"anna", "bernd"}
    assert decision["explanation"]["value_tier"] == "premium"
    assert decision["explanation"]["excluded"] == {"tier_not_allowed": 1, "unavailable": 1}
    assert decision["policy_id"] == "dach-full" and decision["variant"] in {"A", "B"}
    assert "erika" not in json.dumps(decision).lower(), "contact data never leaves"


def test_dry_run_with_loads_changes_the_choice(tmp_path: Path, capsys) -> None:
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"anna": 12}))  # anna is full
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(ROSTER), "--loads", str(loads), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["rep_id"] != "anna"
    assert decision["explanation"]["excluded"]["at_capacity"] == 1


def test_dry_run_without_a_pool_asks_for_one(tmp_path: Path, capsys) -> None:
    lead = tmp_path / "lead.json"
    lead.write_text(json.dumps({"lead_id": "x", "created_at": "2026-01-01T00:00:00Z"}))
    assert main(["dry-run", "--lead", str(lead), "--roster", str(ROSTER)]) == 2
    assert "--pool" in capsys.readouterr().err


def test_dry_run_uses_the_pools_own_capacity(tmp_path: Path, capsys) -> None:
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"anna": 12, "bernd": 8, "clara": 3}))  # clara's dach share is 3
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(ROSTER), "--loads", str(loads), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["rep_id"] is None and decision["explanation"]["excluded"]["at_capacity"] == 3


def test_render_tells_who_why_and_who_else(capsys) -> None:
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(ROSTER), "--policy", str(FULL), "--json"]) == 0
    from schemas.events import AssignmentDecision

    decision = AssignmentDecision.model_validate_json(capsys.readouterr().out)
    story = render(decision)
    assert f"-> {decision.rep_id}" in story
    assert "policy dach-full v1" in story and "value tier premium" in story
    assert "runner-up 1" in story and "not eligible: 1 tier_not_allowed, 1 unavailable" in story
    assert all(f"shadow {s.strategy}" in story for s in decision.shadow)
