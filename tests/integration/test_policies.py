"""Policy hot reload on the real broker: the next lead uses the new version; bad updates change nothing."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.events import LeadCreated, RepUpdated

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def lead(n: int, value: float = 100.0) -> LeadCreated:
    return LeadCreated(lead_id=f"P{n:04d}", created_at=T0 + timedelta(seconds=n), pool="p", estimated_value=value)


def juniors_only(version: int, **extra: object) -> bytes:
    policy = {
        "id": "juniors-only",
        "version": version,
        "value_tiers": [{"name": "all", "min_value": 0, "allowed_rep_tiers": ["junior"]}],
        "strategies": {"default": {"scorers": {"load": 1.0}}},
        **extra,
    }
    return orjson.dumps(policy)


def decided(dep, n: int):
    return {d.lead_id: d for d in dep.decisions(at_least=n)}


def test_hot_reload_changes_the_next_decision_and_bad_updates_are_refused(deployment) -> None:
    dep = deployment
    dep.worker()
    dep.send_roster(
        [
            RepUpdated(rep_id="sam", pools=["p"], tier="senior", capacity=100),
            RepUpdated(rep_id="jo", pools=["p"], tier="junior", capacity=100),
        ]
    )
    dep.settle(2)
    dep.send_leads([lead(1)])
    first = decided(dep, 1)["P0001"]
    assert (first.policy_id, first.policy_version) == ("default", 1)

    topic = dep.settings.topic_policies
    dep.send(topic, [(b"p", juniors_only(1))])
    dep.settle(2)
    dep.send_leads([lead(2), lead(3)])
    after = decided(dep, 3)
    for lead_id in ("P0002", "P0003"):
        assert after[lead_id].rep_id == "jo"
        assert (after[lead_id].policy_id, after[lead_id].policy_version) == ("juniors-only", 1)
        assert after[lead_id].explanation.excluded == {"tier_not_allowed": 1}

    bad = orjson.loads(juniors_only(2))
    bad["strategies"]["default"]["scorers"] = {"speed": 1.0}
    stale = juniors_only(1, description="same version, different content")
    dep.send(topic, [(b"p", orjson.dumps(bad)), (b"p", stale), (b"p", b"{not yaml: [")])
    dlq = dep.records(dep.settings.topic_dlq, at_least=3)
    reasons = sorted(dict(r.headers)["x-leadrelay-reason"].decode() for r in dlq)
    assert reasons == ["invalid_policy", "invalid_policy", "stale_policy_version"]
    fields = {dict(r.headers).get("x-leadrelay-error-field", b"").decode() for r in dlq}
    assert "strategies.default.scorers.speed" in fields

    dep.send_leads([lead(4)])
    assert decided(dep, 4)["P0004"].policy_version == 1, "the running policy survives bad updates"

    dep.send(topic, [(b"p", juniors_only(2, value_tiers=[]))])
    dep.settle(2)
    dep.send_leads([lead(5)])
    fifth = decided(dep, 5)["P0005"]
    assert fifth.policy_version == 2 and fifth.explanation.excluded == {}

    dep.send(topic, [(b"p", None)])  # tombstone: back to the default policy
    dep.settle(2)
    dep.send_leads([lead(6)])
    assert decided(dep, 6)["P0006"].policy_id == "default"

    story = subprocess.run(
        [sys.executable, "-m", "streams.tools.cli", "explain", "P0002"],
        env={**dep.env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "lead P0002 in pool p" in story and "-> jo" in story and "juniors-only v1" in story
    assert "not eligible: 1 tier_not_allowed" in story
