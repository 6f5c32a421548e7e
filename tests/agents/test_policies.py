"""Policies: the policies stage validates routing.policies (compacted, key = pool), route puts them in force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from routing.policy import parse_policy
from schemas.internal import PolicyChanged
from tests.agents.conftest import MAX_PAYLOAD, Harness, encode, lead_arrived, policy, policy_changed, raw, rep_changed

pytestmark = pytest.mark.asyncio
TOPIC = "routing.policies"

# Every lead from the web goes to the claim pool; everything else to the least loaded rep.
CLAIM_WEB = {
    "strategies": {
        "default": {"scorers": {"load": 1}},
        "claim": {"scorers": {}, "selector": {"type": "claim_pool"}},
    },
    "rules": [{"name": "web", "when": {"match": {"source": ["web"]}}, "strategy": "claim"}],
}


def changes(h: Harness) -> list[tuple[bytes | None, dict]]:
    return [(s.key, s.json()) for s in h.sent("pool_events")]


def decisions(h: Harness) -> list[dict]:
    return [s.json() for s in h.sent("assignments")]


# ------------------------------------------------------------------------------------------------
# the policies stage


@pytest.mark.parametrize("fmt", ["yaml", "json"])
async def test_valid_policy_is_forwarded_to_its_pool(h: Harness, fmt: str) -> None:
    doc = policy(pool="emea", **CLAIM_WEB)
    record = (yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc)).encode()
    await h.policy(record, b"emea")

    [(key, body)] = changes(h)
    assert key == b"emea"
    assert body["kind"] == "policy"
    assert body["pool"] == "emea"
    assert body["policy"] == parse_policy(doc).model_dump(mode="json")  # complete, defaults filled in
    assert body["policy"]["version"] == 2
    assert body["origin"] == {"topic": TOPIC, "partition": 0, "offset": 0}
    assert h.sent("dlq") == []
    assert h.table("policies") == {}  # ingress validates; route puts it in force


async def test_policy_without_a_pool_takes_its_key(h: Harness) -> None:
    await h.policy(raw(policy()), b"apac")
    [(key, body)] = changes(h)
    assert (key, body["pool"], body["policy"]["pool"]) == (b"apac", "apac", None)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"strategies": {"default": {"scorers": {"speed": 1}}}}, "strategies.default.scorers.speed"),
        ({"version": 0}, "version"),
        ({"rules": [{"name": "r", "strategy": "default", "when": {"match": {"county": ["DE"]}}}]}, "rules.0.when"),
        ({"value_tiers": [{"name": "t", "min_value": -5}]}, "value_tiers.0.min_value"),
        (
            {"experiment": {"id": "e", "variants": [{"id": "a", "share": 0.5, "strategy": "default"}]}},
            "experiment.variants",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_policy_is_dead_lettered_with_the_field_path(h: Harness, doc: dict, field: str) -> None:
    bad = raw(policy(**doc))
    await h.policy(bad, b"emea")
    await h.policy(raw(policy(version=3)), b"emea")

    [dl] = h.sent("dlq")
    assert dl.key == b"emea"
    assert dl.value == bad  # the record as published
    assert dl.header("x-leadrelay-reason") == "invalid_policy"
    assert dl.header("x-leadrelay-error-class") == "InvalidPolicy"
    assert dl.header("x-leadrelay-error-field") == field
    assert dl.header("x-leadrelay-error-message").startswith(f"{field}: ")
    assert dl.header("x-leadrelay-source-topic") == TOPIC
    assert dl.header("x-leadrelay-source-offset") == "0"
    # nothing reached the pool but the next, valid update
    assert [body["policy"]["version"] for _, body in changes(h)] == [3]


@pytest.mark.parametrize("record", [b"strategies: [", b'{"id": "x", ', b"[1, 2]", b"just text", b"\xff\xfe"])
async def test_policy_that_is_not_a_yaml_or_json_mapping(h: Harness, record: bytes) -> None:
    await h.policy(record, b"emea")
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "invalid_policy"
    assert "x-leadrelay-error-field" not in dl.headers
    assert changes(h) == []


async def test_invalid_policy_counts_a_dead_letter(h: Harness) -> None:
    labels = {"source": TOPIC, "reason": "invalid_policy"}
    assert not h.registry.get_sample_value("leadrelay_dead_letters_total", labels)
    await h.policy(raw({"version": "two"}), b"emea")
    assert h.registry.get_sample_value("leadrelay_dead_letters_total", labels) == 1


async def test_policy_naming_another_pool_than_its_key(h: Harness) -> None:
    record = raw(policy(pool="apac"))
    await h.policy(record, b"emea")
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "key_mismatch"
    assert dl.header("x-leadrelay-error-field") == "pool"
    assert dl.value == record
    assert changes(h) == []


@pytest.mark.parametrize("key", [None, b"", b"Not A Pool", b"a|b", b"x" * 65])
async def test_policy_key_must_be_a_pool_id(h: Harness, key: bytes | None) -> None:
    await h.policy(raw(policy()), key)
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "key_mismatch"
    assert dl.header("x-leadrelay-error-field") == "key"
    assert changes(h) == []


@pytest.mark.parametrize("value", [None, b""])
async def test_tombstone_forwards_the_removal(h: Harness, value: bytes | None) -> None:
    await h.policy(value, b"emea")
    [(key, body)] = changes(h)
    assert key == b"emea"
    assert (body["kind"], body["pool"], body["policy"]) == ("policy", "emea", None)
    assert h.sent("dlq") == []


async def test_oversized_policy(h: Harness) -> None:
    record = raw(policy(description="x" * 400, **CLAIM_WEB))
    record += b" " * (MAX_PAYLOAD + 1 - len(record))
    await h.policy(record, b"emea")
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "payload_too_large"
    assert changes(h) == []


# ------------------------------------------------------------------------------------------------
# route puts policies in force


async def with_reps(h: Harness, pool: str = "p") -> None:
    await h.route(rep_changed(pool, "rep-a"), rep_changed(pool, "rep-b"), pool=pool)


async def test_published_policy_decides_from_the_next_lead_on(h: Harness) -> None:
    await with_reps(h)
    await h.route(lead_arrived("p", "lead-1", source="web"))
    await h.route(policy_changed("p", policy(**CLAIM_WEB)))
    assert h.sent("dlq") == []
    await h.route(lead_arrived("p", "lead-2", source="web"), lead_arrived("p", "lead-3", source="event"))

    first, second, third = decisions(h)
    assert (first["policy_id"], first["policy_version"], first["reason"]) == ("default", 1, "assigned")
    assert (second["policy_id"], second["policy_version"], second["reason"]) == ("p-policy", 2, "sent_to_claim_pool")
    assert second["explanation"]["rule"] == "web"
    assert (third["policy_version"], third["reason"]) == (2, "assigned")
    # the decision recorded in the ledger names the version it was made with
    assert h.table("ledger")["p|lead-2"]["decision"]["policy_version"] == 2
    assert h.table("ledger")["p|lead-2"]["status"] == "claimable"
    assert h.table("policies")["p"] == parse_policy(policy(**CLAIM_WEB)).model_dump(mode="json")
    assert h.sent("dlq") == []


async def test_earlier_decisions_keep_their_version(h: Harness) -> None:
    await with_reps(h)
    lead = lead_arrived("p", "lead-1")
    await h.route(lead)
    await h.route(policy_changed("p", policy(version=9)), lead)  # redelivered after the change
    first, again = decisions(h)
    assert first == again
    assert again["policy_version"] == 1


async def test_policy_metric_shows_the_policy_in_force(h: Harness) -> None:
    experiment = {
        "strategies": {"default": {}, "rr": {"scorers": {"rotation": 1}}},
        "experiment": {
            "id": "e1",
            "variants": [
                {"id": "ctl", "share": 0.5, "strategy": "default"},
                {"id": "rr", "share": 0.5, "strategy": "rr"},
            ],
        },
    }
    await h.route(policy_changed("p", policy(version=4, **experiment)))
    labels = {"pool": "p", "policy_id": "p-policy", "version": "4", "variants": "ctl,rr"}
    assert h.registry.get_sample_value("leadrelay_policy_info", labels) == 1.0
    await h.route(policy_changed("p", None))
    assert h.registry.get_sample_value("leadrelay_policy_info", labels) is None
    labels = {"pool": "p", "policy_id": "default", "version": "1", "variants": ""}
    assert h.registry.get_sample_value("leadrelay_policy_info", labels) == 1.0


@pytest.mark.parametrize(
    ("stale", "why"),
    [
        ({"version": 2, "description": "older"}, "older version"),
        ({"version": 3, "description": "same version, other content"}, "same version, changed"),
    ],
)
async def test_stale_policy_is_refused_and_the_running_one_keeps_deciding(h: Harness, stale: dict, why: str) -> None:
    await with_reps(h)
    await h.route(policy_changed("p", policy(version=3, **CLAIM_WEB)))
    record = policy_changed("p", policy(**stale))
    await h.route(record, lead_arrived("p", "lead-1", source="web"))

    [dl] = h.sent("dlq")
    assert dl.key == b"p"
    assert dl.value == record
    assert dl.header("x-leadrelay-reason") == "stale_policy_version", why
    assert dl.header("x-leadrelay-error-field") == "version"
    assert dl.header("x-leadrelay-source-topic") == h.topics["pool_events"]
    assert h.table("policies")["p"]["version"] == 3
    assert h.table("policies")["p"]["description"] == ""
    [decision] = decisions(h)
    assert (decision["policy_version"], decision["reason"]) == (3, "sent_to_claim_pool")


async def test_redelivered_policy_is_accepted_again(h: Harness) -> None:
    """A replay of the running policy (same version, same content) is not stale."""
    record = policy_changed("p", policy(version=3))
    await h.route(record, record)
    assert h.sent("dlq") == []
    assert h.table("policies")["p"]["version"] == 3


async def test_newer_version_replaces_the_running_one(h: Harness) -> None:
    await with_reps(h)
    await h.route(policy_changed("p", policy(version=3, **CLAIM_WEB)))
    await h.route(policy_changed("p", policy(id="plain", version=4)))
    await h.route(lead_arrived("p", "lead-1", source="web"))
    [decision] = decisions(h)
    assert (decision["policy_id"], decision["policy_version"], decision["reason"]) == ("plain", 4, "assigned")


async def test_tombstone_brings_back_the_default_policy(h: Harness) -> None:
    await with_reps(h)
    await h.route(policy_changed("p", policy(version=3, **CLAIM_WEB)))
    await h.route(policy_changed("p", None))
    assert h.table("policies") == {}
    await h.route(lead_arrived("p", "lead-1", source="web"))
    [decision] = decisions(h)
    assert (decision["policy_id"], decision["policy_version"], decision["reason"]) == ("default", 1, "assigned")
    # after a removal any version may start again, and removing twice is fine
    await h.route(policy_changed("p", policy(version=1)))
    assert h.table("policies")["p"]["version"] == 1
    await h.route(policy_changed("p", None), policy_changed("p", None))
    assert h.sent("dlq") == []
    assert h.table("policies") == {}


async def test_a_policy_is_for_its_own_pool_only(h: Harness) -> None:
    await with_reps(h, "p")
    await with_reps(h, "q")
    await h.route(policy_changed("p", policy(**CLAIM_WEB)))
    await h.route(lead_arrived("q", "lead-1", source="web"), pool="q")
    [decision] = decisions(h)
    assert (decision["pool"], decision["policy_id"], decision["reason"]) == ("q", "default", "assigned")


async def test_policy_end_to_end_from_routing_policies(h: Harness) -> None:
    """routing.policies -> policies stage -> pool-events -> route."""
    await with_reps(h, "emea")
    await h.deliver(await h.policy(yaml.safe_dump(policy(pool="emea", version=5, **CLAIM_WEB)).encode(), b"emea"))
    assert h.sent("dlq") == []
    await h.route(lead_arrived("emea", "lead-1", source="web"), pool="emea")
    [decision] = decisions(h)
    assert (decision["policy_version"], decision["reason"]) == (5, "sent_to_claim_pool")

    # an invalid update never replaces it
    h.forget()
    await h.deliver(await h.policy(raw(policy(pool="emea", version=6, runners_up=99)), b"emea"))
    assert h.sent("pool_events") == []
    assert h.sent("dlq")[0].header("x-leadrelay-error-field") == "runners_up"
    await h.route(lead_arrived("emea", "lead-2", source="web"), pool="emea")
    assert decisions(h)[-1]["policy_version"] == 5


async def test_the_default_policy_given_to_the_stages_applies_without_a_published_one(tmp_path: Path) -> None:
    house = parse_policy({"id": "house", "version": 7})
    h = Harness(tmp_path, default_policy=house)
    try:
        await with_reps(h)
        await h.route(lead_arrived("p", "lead-1"))
        [decision] = decisions(h)
        assert (decision["policy_id"], decision["policy_version"]) == ("house", 7)
    finally:
        h.close()


async def test_invalid_policy_on_pool_events_is_refused_without_touching_the_pool(h: Harness) -> None:
    """route validates again before storing: an invalid body must never poison the pool's next leads."""
    await with_reps(h)
    bad = encode(PolicyChanged(pool="p", policy={"id": "x", "version": 5, "strategies": {}}))
    await h.route(bad, lead_arrived("p", "lead-1"))
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "invalid_policy"
    assert h.table("policies") == {}
    [decision] = decisions(h)
    assert decision["policy_id"] == "default"
