"""The offline CLI paths: policy check, dry-run, the explain renderer, errors and help (no broker)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from streams.kafka.admin import TopicMismatch
from streams.kafka.topics import topic_specs
from streams.settings import Settings
from streams.tools.cli import main, parser
from streams.tools.explain import render

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


# issue 9, item 6: one clear line instead of a traceback


def test_policy_check_and_produce_name_a_missing_file_in_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["policy", "check", str(missing)]) == 2
    assert capsys.readouterr().err == f"leadrelay policy check: cannot read {missing}: No such file or directory\n"
    # Fails before any broker is contacted (none listens on port 1).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEADRELAY_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        assert main(["produce", "leads", "--file", str(missing)]) == 2
    assert capsys.readouterr().err == f"leadrelay produce: cannot read {missing}: No such file or directory\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "leads", "--synthetic", "-5"],
        ["produce", "leads", "--synthetic", "0"],
        ["produce", "deals", "--synthetic", "3", "--rate", "-1"],
        ["demo", "--seconds", "0"],
        ["demo", "--rate", "-2"],
    ],
)
def test_counts_and_rates_out_of_range_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def _mismatch(*_: object, **__: object) -> NoReturn:
    raise TopicMismatch({"reps.roster": 2}, 4)


@pytest.mark.parametrize(
    ("command", "target"), [("topics", "streams.kafka.admin.ensure_topics"), ("worker", "streams.runtime.worker.run")]
)
def test_topic_mismatch_is_one_line_naming_topic_and_counts(command: str, target: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(target, _mismatch)
    assert main([command]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("leadrelay: topic reps.roster has 2 partitions, expected 4 (setting partitions")


def test_topic_mismatch_names_every_wrong_topic(monkeypatch) -> None:
    """ensure_topics against a fake admin whose topics have the wrong partition count."""
    from streams.kafka import admin

    class FakeAdmin:
        def __init__(self, **_: object) -> None:
            pass

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return [s.name for s in topic_specs(Settings())]

        async def describe_topics(self, names: list[str]) -> list[dict]:
            wrong = {"reps.roster": 2, "leadrelay-pool-events": 8}
            return [{"topic": n, "partitions": [{}] * wrong.get(n, 4)} for n in names]

    monkeypatch.setattr(admin, "AIOKafkaAdminClient", FakeAdmin)
    with pytest.raises(TopicMismatch) as raised:
        asyncio.run(admin.ensure_topics(Settings()))
    assert raised.value.actual == {"reps.roster": 2, "leadrelay-pool-events": 8} and raised.value.expected == 4
    assert str(raised.value).startswith(
        "topic reps.roster has 2 partitions; topic leadrelay-pool-events has 8 partitions, expected 4"
    )


def test_dry_run_names_the_roster_file_and_record(tmp_path: Path, capsys) -> None:
    roster = json.loads(ROSTER.read_text())
    roster[2]["capacity"] = -1
    bad = tmp_path / "roster.json"
    bad.write_text(json.dumps(roster))
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"leadrelay dry-run: roster file {bad}, record 3 (rep_id {roster[2]['rep_id']}): capacity:"
    )
    lines = tmp_path / "roster.jsonl"
    lines.write_text(json.dumps(roster[0]) + "\n\n" + json.dumps({"rep_id": "x", "pools": ["dach"], "weight": 0}))
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(lines)]) == 2
    assert capsys.readouterr().err.startswith(f"leadrelay dry-run: roster file {lines}, line 3 (rep_id x): weight:")


def test_dry_run_names_the_lead_file_and_field_without_echoing_it(tmp_path: Path, capsys) -> None:
    lead = json.loads(LEAD.read_text())
    lead["country"] = "Germany"
    bad = tmp_path / "lead.json"
    bad.write_text(json.dumps(lead))
    assert main(["dry-run", "--lead", str(bad), "--roster", str(ROSTER)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"leadrelay dry-run: lead file {bad}: country:") and len(err.splitlines()) == 1
    assert "erika" not in err.lower() and "input_value" not in err, "the lead's data is not echoed"


def test_dry_run_refuses_a_pool_the_roster_does_not_have(capsys) -> None:
    assert main(["dry-run", "--lead", str(LEAD), "--roster", str(ROSTER), "--pool", "dahc"]) == 2
    assert "pool 'dahc' has no rep in roster file" in capsys.readouterr().err


# issue 9, item 7: help text and --version


def _options(p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{p.prog} {choice.dest}", choice
            for sub in action.choices.values():
                yield from _options(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield f"{p.prog} {'/'.join(action.option_strings) or action.dest}", action


def test_every_command_and_option_has_help_that_gives_its_default() -> None:
    seen = list(_options(parser()))
    assert {"leadrelay worker", "leadrelay produce --rate", "leadrelay kafka action"} <= {name for name, _ in seen}
    for name, action in seen:
        assert action.help and action.help.strip(), f"{name} has no help"
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert "default" in action.help, f"{name}: help does not give its default {action.default!r}"
        if action.option_strings and action.default is None and not action.required:
            assert "default" in action.help, f"{name}: help does not say what happens without it"


def test_version_prints_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"leadrelay {importlib.metadata.version('leadrelay')}"


def test_dry_run_rotates_in_roster_order_like_the_worker(tmp_path: Path, capsys) -> None:
    roster = tmp_path / "roster.json"
    reps = [{"rep_id": r, "pools": ["p"]} for r in ("zoe@example.com", "adam@example.com")]  # not sorted
    roster.write_text(json.dumps(reps))
    lead = tmp_path / "lead.json"
    lead.write_text(json.dumps({"lead_id": "x", "created_at": "2026-01-01T00:00:00Z"}))
    assert main(["dry-run", "--lead", str(lead), "--roster", str(roster), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rep_id"] == "zoe@example.com"  # first in the roster, equal load


def test_produce_updates_sends_the_synthetic_leads_of_the_same_seed_worth_twice_as_much(monkeypatch, capsys) -> None:
    from itertools import islice

    from streams.kafka import clients
    from streams.tools import synthetic

    sent: dict[str, list[tuple[bytes | None, bytes | None]]] = {}

    async def fake_produce(settings: Settings, topic: str, records, rate: float = 0) -> int:
        sent[topic] = list(records)
        return len(sent[topic])

    monkeypatch.setattr(clients, "produce", fake_produce)
    assert main(["produce", "updates", "--synthetic", "3", "--seed", "7"]) == 0
    assert capsys.readouterr().out == "sent 3 records to leads.updated\n"
    leads = list(islice(synthetic.leads(7), 3))
    records = sent["leads.updated"]
    assert [k for k, _ in records] == [lead.lead_id.encode() for lead in leads]
    values = [json.loads(v or b"")["estimated_value"] for _, v in records]
    assert values == [2 * (lead.estimated_value or 500.0) for lead in leads]
