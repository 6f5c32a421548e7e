"""Policies: ingest_policies validates routing.policies (compacted, key = pool), route.on_policy puts them in force."""

from __future__ import annotations

import json

import pytest
import yaml

from routing.policy import parse_policy
from schemas.internal import PolicyChanged
from tests.agents.conftest import MAX_PAYLOAD, POOL_EVENTS, Kit

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


async def ingest(kit: Kit, *records: tuple[bytes | None, bytes | None]) -> dict[int, bool]:
    async with kit.agent("ingest_policies").test_context() as agent:
        for key, value in records:
            await agent.put(value=value, key=key)
        return dict(agent.results)


async def route(kit: Kit, *records: bytes, key: bytes = b"p") -> dict[int, bool]:
    async with kit.agent("route").test_context() as agent:
        for record in records:
            await agent.put(value=record, key=key)
        return dict(agent.results)


def changes(kit: Kit) -> list[tuple[bytes | None, dict]]:
    return [(s.key, s.json()) for s in kit.sent("pool_events")]


def decisions(kit: Kit) -> list[dict]:
    return [s.json() for s in kit.sent("assignments")]


# ------------------------------------------------------------------------------------------------
# ingest_policies


@pytest.mark.parametrize("fmt", ["yaml", "json"])
async def test_valid_policy_is_forwarded_to_its_pool(kit: Kit, fmt: str) -> None:
    doc = kit.policy(pool="emea", **CLAIM_WEB)
    raw = (yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc)).encode()
    assert await ingest(kit, (b"emea", raw)) == {0: True}

    [(key, body)] = changes(kit)
    assert key == b"emea"
    assert body["kind"] == "policy"
    assert body["pool"] == "emea"
    assert body["policy"] == parse_policy(doc).model_dump(mode="json")  # complete, defaults filled in
    assert body["policy"]["version"] == 2
    assert body["origin"] == {"topic": TOPIC, "partition": 0, "offset": 0}
    assert kit.sent("dlq") == []
    assert kit.table("policies") == {}  # ingress validates; route puts it in force


async def test_policy_without_a_pool_takes_its_key(kit: Kit) -> None:
    assert await ingest(kit, (b"apac", kit.raw(kit.policy()))) == {0: True}
    [(key, body)] = changes(kit)
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
async def test_invalid_policy_is_dead_lettered_with_the_field_path(kit: Kit, doc: dict, field: str) -> None:
    raw = kit.raw(kit.policy(**doc))
    good = kit.raw(kit.policy(version=3))
    assert await ingest(kit, (b"emea", raw), (b"emea", good)) == {0: False, 1: True}

    [dl] = kit.sent("dlq")
    assert dl.key == b"emea"
    assert dl.value == raw  # the record as published
    assert dl.header("x-leadrelay-reason") == "invalid_policy"
    assert dl.header("x-leadrelay-error-class") == "InvalidPolicy"
    assert dl.header("x-leadrelay-error-field") == field
    assert dl.header("x-leadrelay-error-message").startswith(f"{field}: ")
    assert dl.header("x-leadrelay-source-topic") == TOPIC
    assert dl.header("x-leadrelay-source-offset") == "0"
    # nothing reached the pool but the next, valid update
    assert [body["policy"]["version"] for _, body in changes(kit)] == [3]


@pytest.mark.parametrize("raw", [b"strategies: [", b'{"id": "x", ', b"[1, 2]", b"just text", b"\xff\xfe"])
async def test_policy_that_is_not_a_yaml_or_json_mapping(kit: Kit, raw: bytes) -> None:
    assert await ingest(kit, (b"emea", raw)) == {0: False}
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "invalid_policy"
    assert "x-leadrelay-error-field" not in dl.headers
    assert changes(kit) == []


async def test_invalid_policy_counts_a_dead_letter(kit: Kit) -> None:
    registry = kit.ctx.metrics.registry
    labels = {"source": TOPIC, "reason": "invalid_policy"}
    before = registry.get_sample_value("leadrelay_dead_letters_total", labels) or 0.0
    await ingest(kit, (b"emea", kit.raw({"version": "two"})))
    assert registry.get_sample_value("leadrelay_dead_letters_total", labels) == before + 1


async def test_policy_naming_another_pool_than_its_key(kit: Kit) -> None:
    raw = kit.raw(kit.policy(pool="apac"))
    assert await ingest(kit, (b"emea", raw)) == {0: False}
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "key_mismatch"
    assert dl.header("x-leadrelay-error-field") == "pool"
    assert dl.value == raw
    assert changes(kit) == []


@pytest.mark.parametrize("key", [None, b"", b"Not A Pool", b"a|b", b"x" * 65])
async def test_policy_key_must_be_a_pool_id(kit: Kit, key: bytes | None) -> None:
    assert await ingest(kit, (key, kit.raw(kit.policy()))) == {0: False}
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "key_mismatch"
    assert dl.header("x-leadrelay-error-field") == "key"
    assert changes(kit) == []


@pytest.mark.parametrize("value", [None, b""])
async def test_tombstone_forwards_the_removal(kit: Kit, value: bytes | None) -> None:
    assert await ingest(kit, (b"emea", value)) == {0: True}
    [(key, body)] = changes(kit)
    assert key == b"emea"
    assert (body["kind"], body["pool"], body["policy"]) == ("policy", "emea", None)


async def test_oversized_policy(kit: Kit) -> None:
    raw = kit.raw(kit.policy(description="x" * 400, **CLAIM_WEB))
    raw += b" " * (MAX_PAYLOAD + 1 - len(raw))
    assert await ingest(kit, (b"emea", raw)) == {0: False}
    assert kit.sent("dlq")[0].header("x-leadrelay-reason") == "payload_too_large"


# ------------------------------------------------------------------------------------------------
# route.on_policy


async def with_reps(kit: Kit, pool: str = "p") -> None:
    await route(kit, kit.rep_changed(pool, "rep-a"), kit.rep_changed(pool, "rep-b"), key=pool.encode())


async def test_published_policy_decides_from_the_next_lead_on(kit: Kit) -> None:
    await with_reps(kit)
    await route(kit, kit.lead_arrived("p", "lead-1", source="web"))
    assert await route(kit, kit.policy_changed("p", kit.policy(**CLAIM_WEB))) == {0: True}
    await route(kit, kit.lead_arrived("p", "lead-2", source="web"), kit.lead_arrived("p", "lead-3", source="event"))

    first, second, third = decisions(kit)
    assert (first["policy_id"], first["policy_version"], first["reason"]) == ("default", 1, "assigned")
    assert (second["policy_id"], second["policy_version"], second["reason"]) == ("p-policy", 2, "sent_to_claim_pool")
    assert second["explanation"]["rule"] == "web"
    assert (third["policy_version"], third["reason"]) == (2, "assigned")
    # the decision recorded in the ledger names the version it was made with
    assert kit.table("ledger")["p|lead-2"]["decision"]["policy_version"] == 2
    assert kit.table("ledger")["p|lead-2"]["status"] == "claimable"
    assert kit.table("policies")["p"] == parse_policy(kit.policy(**CLAIM_WEB)).model_dump(mode="json")
    assert kit.sent("dlq") == []


async def test_earlier_decisions_keep_their_version(kit: Kit) -> None:
    await with_reps(kit)
    lead = kit.lead_arrived("p", "lead-1")
    await route(kit, lead)
    await route(kit, kit.policy_changed("p", kit.policy(version=9)), lead)  # redelivered after the change
    first, again = decisions(kit)
    assert first == again
    assert again["policy_version"] == 1


async def test_policy_metric_shows_the_policy_in_force(kit: Kit) -> None:
    registry = kit.ctx.metrics.registry
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
    await route(kit, kit.policy_changed("p", kit.policy(version=4, **experiment)))
    labels = {"pool": "p", "policy_id": "p-policy", "version": "4", "variants": "ctl,rr"}
    assert registry.get_sample_value("leadrelay_policy_info", labels) == 1.0
    await route(kit, kit.policy_changed("p", None))
    assert registry.get_sample_value("leadrelay_policy_info", labels) is None
    labels = {"pool": "p", "policy_id": "default", "version": "1", "variants": ""}
    assert registry.get_sample_value("leadrelay_policy_info", labels) == 1.0


@pytest.mark.parametrize(
    ("stale", "why"),
    [
        ({"version": 2, "description": "older"}, "older version"),
        ({"version": 3, "description": "same version, other content"}, "same version, changed"),
    ],
)
async def test_stale_policy_is_refused_and_the_running_one_keeps_deciding(kit: Kit, stale: dict, why: str) -> None:
    await with_reps(kit)
    running = kit.policy(version=3, **CLAIM_WEB)
    await route(kit, kit.policy_changed("p", running))
    record = kit.policy_changed("p", kit.policy(**stale))
    assert await route(kit, record, kit.lead_arrived("p", "lead-1", source="web")) == {0: False, 1: True}, why

    [dl] = kit.sent("dlq")
    assert dl.key == b"p"
    assert dl.value == record
    assert dl.header("x-leadrelay-reason") == "stale_policy_version"
    assert dl.header("x-leadrelay-error-field") == "version"
    assert dl.header("x-leadrelay-source-topic") == POOL_EVENTS
    assert kit.table("policies")["p"]["version"] == 3
    assert kit.table("policies")["p"]["description"] == ""
    [decision] = decisions(kit)
    assert (decision["policy_version"], decision["reason"]) == (3, "sent_to_claim_pool")


async def test_redelivered_policy_is_accepted_again(kit: Kit) -> None:
    """A replay of the running policy (same version, same content) is not stale."""
    record = kit.policy_changed("p", kit.policy(version=3))
    assert await route(kit, record, record) == {0: True, 1: True}
    assert kit.sent("dlq") == []


async def test_newer_version_replaces_the_running_one(kit: Kit) -> None:
    await with_reps(kit)
    await route(kit, kit.policy_changed("p", kit.policy(version=3, **CLAIM_WEB)))
    await route(kit, kit.policy_changed("p", kit.policy(id="plain", version=4)))
    await route(kit, kit.lead_arrived("p", "lead-1", source="web"))
    [decision] = decisions(kit)
    assert (decision["policy_id"], decision["policy_version"], decision["reason"]) == ("plain", 4, "assigned")


async def test_tombstone_brings_back_the_default_policy(kit: Kit) -> None:
    await with_reps(kit)
    await route(kit, kit.policy_changed("p", kit.policy(version=3, **CLAIM_WEB)))
    assert await route(kit, kit.policy_changed("p", None)) == {0: True}
    assert kit.table("policies") == {}
    await route(kit, kit.lead_arrived("p", "lead-1", source="web"))
    [decision] = decisions(kit)
    assert (decision["policy_id"], decision["policy_version"], decision["reason"]) == ("default", 1, "assigned")
    # after a removal any version may start again
    assert await route(kit, kit.policy_changed("p", kit.policy(version=1))) == {0: True}
    assert await route(kit, kit.policy_changed("p", None), kit.policy_changed("p", None)) == {0: True, 1: True}


async def test_a_policy_is_for_its_own_pool_only(kit: Kit) -> None:
    await with_reps(kit, "p")
    await with_reps(kit, "q")
    await route(kit, kit.policy_changed("p", kit.policy(**CLAIM_WEB)))
    await route(kit, kit.lead_arrived("q", "lead-1", source="web"), key=b"q")
    [decision] = decisions(kit)
    assert (decision["pool"], decision["policy_id"], decision["reason"]) == ("q", "default", "assigned")


async def test_policy_end_to_end_from_routing_policies(kit: Kit) -> None:
    """routing.policies -> ingest_policies -> pool-events -> route, via the mocks."""
    await with_reps(kit, "emea")
    await ingest(kit, (b"emea", yaml.safe_dump(kit.policy(pool="emea", version=5, **CLAIM_WEB)).encode()))
    [change] = kit.sent("pool_events")
    assert await route(kit, change.value, key=change.key) == {0: True}
    await route(kit, kit.lead_arrived("emea", "lead-1", source="web"), key=b"emea")
    [decision] = decisions(kit)
    assert (decision["policy_version"], decision["reason"]) == (5, "sent_to_claim_pool")

    # an invalid update never replaces it
    kit.forget_sent()
    await ingest(kit, (b"emea", kit.raw(kit.policy(pool="emea", version=6, runners_up=99))))
    assert kit.sent("pool_events") == []
    assert kit.sent("dlq")[0].header("x-leadrelay-error-field") == "runners_up"
    await route(kit, kit.lead_arrived("emea", "lead-2", source="web"), key=b"emea")
    assert decisions(kit)[-1]["policy_version"] == 5


async def test_default_policy_of_the_app_applies_without_a_published_one(kit: Kit) -> None:
    cache = kit.agent("route").cache
    assert cache.policy("nowhere") is cache.default_policy
    assert (cache.default_policy.id, cache.default_policy.version) == ("default", 1)


async def test_invalid_policy_on_pool_events_is_refused_without_touching_the_pool(kit: Kit) -> None:
    """route validates again before storing: an invalid body must never poison the pool's next leads."""
    await with_reps(kit)
    bad = kit.encode(PolicyChanged(pool="p", policy={"id": "x", "version": 5, "strategies": {}}))
    results = await route(kit, bad, kit.lead_arrived("p", "lead-1"))
    assert results == {0: False, 1: True}
    assert kit.sent("dlq")[0].header("x-leadrelay-reason") == "invalid_policy"
    assert kit.table("policies") == {}
