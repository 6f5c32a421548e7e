"""Every shipped policy and every policy shown in docs/policies.md validates and round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routing.policy import dump_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "deploy" / "policies").glob("*.yaml"))
DOC_BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "policies.md").read_text(), re.S)


def test_there_is_something_to_check() -> None:
    assert len(FILES) >= 10 and len(DOC_BLOCKS) >= 9


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_shipped_policy_is_valid_and_round_trips(path: Path) -> None:
    policy = parse_policy(path.read_text())
    assert parse_policy(dump_policy(policy, "yaml")) == policy
    assert parse_policy(dump_policy(policy, "json")) == policy


@pytest.mark.parametrize("block", DOC_BLOCKS)
def test_documented_policy_is_valid_and_shipped(block: str) -> None:
    policy = parse_policy(block)
    shipped = {parse_policy(f.read_text()).id: parse_policy(f.read_text()) for f in FILES}
    assert shipped[policy.id] == policy, "the doc shows the shipped file"


def test_every_policy_file_the_docs_name_is_shipped() -> None:
    docs = (ROOT / "docs" / "policies.md").read_text() + (ROOT / "README.md").read_text()
    named = set(re.findall(r"(?<![\w/.-])(?:deploy/policies/)?([\w-]+\.yaml)\b", docs)) - {"leadrelay.yaml"}
    shipped = {f.name for f in FILES}
    assert named, "the docs name no policy file"
    assert named <= shipped, f"named in the docs but not in deploy/policies/: {sorted(named - shipped)}"
