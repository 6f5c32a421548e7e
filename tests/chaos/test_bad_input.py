"""Bad input on a real broker: fuzzed records between valid leads. The worker never crashes, every bad
record lands in the DLQ exactly as it arrived with its reason and origin, and the valid leads around
them are decided. The oracle for "valid" is the public contract (schemas.events) and the configured
size limit, not the worker's own parsing code."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import DealClosed, LeadCreated, RepUpdated
from streams.kafka.clients import read_all
from streams.kafka.security import client_kwargs
from streams.settings import Settings
from tests.chaos.conftest import MAX_PAYLOAD, POOLS, publish, publish_roster, scaled, settle_and_verify, wait_for
from tests.integration.conftest import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NOW = datetime.now(UTC).replace(microsecond=0).isoformat()
REASONS = {"invalid_json", "schema_violation", "payload_too_large"}

# ------------------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=20,
)
odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("\u202e\u200b\ufeff\x00\n"),
    min_size=1,
    max_size=30,
)


def dumps(obj: object) -> bytes:
    """json (not orjson): big integers and lone surrogates (as \\udXXX escapes) survive the dump."""
    return json.dumps(obj).encode()


@st.composite
def mutated_lead(draw: st.DrawFn) -> bytes:
    """A valid lead with one field deleted, retyped, set to null, to odd unicode, or an extra field."""
    n = draw(st.integers(0, 10**6))
    base = {"lead_id": f"m-{n}", "created_at": NOW, "pool": draw(st.sampled_from(POOLS)), "estimated_value": 12.5}
    base["source"] = "web"
    field = draw(st.sampled_from([*base, "attributes", "country", "company_size", "unknown_field", "contact"]))
    how = draw(st.sampled_from(["delete", "null", "value", "odd"]))
    if how == "delete":
        base.pop(field, None)
    elif how == "null":
        base[field] = None
    elif how == "value":
        base[field] = draw(json_values)
    else:
        base[field] = draw(odd_text)
    return dumps(base)


def deep(d: int) -> bytes:
    return b'{"a":' * d + b"1" + b"}" * d


fuzz_values = st.one_of(
    st.none(),  # tombstone
    st.binary(max_size=200),
    json_values.map(dumps),
    mutated_lead(),
    st.integers(50, 2000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(50, 1500).map(deep),
    st.integers(MAX_PAYLOAD + 1, 3 * MAX_PAYLOAD).map(lambda n: b'{"lead_id": "x", "pad": "' + b"y" * n + b'"}'),
    st.sampled_from([b"null", b"", b"\x00", b"{}", b"[]", b'"lead"', b"1e999", b'{"lead_id": NaN}', b"\xef\xbb\xbf{}"]),
)
# (aiokafka refuses a record with neither key nor value; Kafka's Java client would send one)
fuzz_records = st.tuples(st.none() | st.binary(max_size=24), fuzz_values).map(
    lambda kv: (kv[0] if kv[0] is not None or kv[1] is not None else b"", kv[1])
)

# Always sent (besides the generated ones): the limit's edges and the classics.
FIXED: list[tuple[bytes | None, bytes | None]] = [
    (b"huge-900k", b'{"lead_id": "huge", "pad": "' + b"z" * 900_000 + b'"}'),
    (b"deep-json", b"[" * 100_000 + b"]" * 100_000),  # 200 KB: too large before it is too deep
    (b"deep-under-limit", b"[" * 2000 + b"]" * 2000),
    (b"lone-surrogate", b'{"lead_id": "s1", "created_at": "%s", "source": "\\ud800"}' % NOW.encode()),
    (b"bom", b"\xef\xbb\xbf" + orjson.dumps({"lead_id": "bom1", "created_at": NOW})),
    (b"latin1", '{"lead_id": "é", "created_at": "x"}'.encode("latin-1")),
    (b"tombstone", None),
    (b"", None),
]


def expected(value: bytes | None, limit: int) -> str | None:
    """The contract's verdict: None for a valid lead, else the DLQ reason it must carry."""
    if value is None:
        return "invalid_json"
    if len(value) > limit:
        return "payload_too_large"
    try:
        LeadCreated.model_validate_json(value)
    except ValidationError as exc:
        return "invalid_json" if exc.errors()[0]["type"] == "json_invalid" else "schema_violation"
    return None


def valid_lead(tag: str, i: int) -> tuple[bytes, bytes]:
    lead = LeadCreated(lead_id=f"ok-{tag}-{i}", created_at=NOW, pool=POOLS[i % len(POOLS)], source="web")
    return lead.lead_id.encode(), lead.model_dump_json().encode()


def send_all(s: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Send in order; return (partition, offset) of each record."""

    async def go() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(**client_kwargs(s), acks="all", enable_idempotence=True, max_request_size=2 << 20)
        await producer.start()
        try:
            where = []
            for key, value in records:
                md = await producer.send_and_wait(topic, key=key, value=value)
                where.append((md.partition, md.offset))
            return where
        finally:
            await producer.stop()

    return asyncio.run(go())


def dead_letters(dep: Deployment, source: str) -> dict[tuple[int, int], object]:
    out = {}
    for r in asyncio.run(read_all(dep.settings, dep.settings.topic_dlq, idle=1.0)):
        h = {k: v.decode() for k, v in r.headers}
        if h.get("x-leadrelay-source-topic") == source:
            out[(int(h["x-leadrelay-source-partition"]), int(h["x-leadrelay-source-offset"]))] = (r, h)
    return out


def healthy(dep: Deployment) -> bool:
    port = dep.workers[-1].web_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return resp.status == 200


# -------------------------------------------------------------------------------------------- tests


def test_fuzzed_leads_are_dead_lettered_and_valid_leads_around_them_decided(chaos: Callable[..., Deployment]) -> None:
    t0 = time.monotonic()
    dep = chaos()
    worker = dep.worker("w1")
    publish_roster(dep)
    topic = dep.settings.topic_leads_new
    batches: list[int] = []

    @settings(
        max_examples=max(2, scaled(4, 2)),
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],  # shrinking would re-run broker round trips; the unit fuzz shrinks
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(fuzz_records, min_size=30, max_size=50))
    def one_batch(fuzzed: list[tuple[bytes | None, bytes | None]]) -> None:
        tag = str(len(batches))
        records = list(FIXED) if not batches else []
        records += fuzzed
        mixed: list[tuple[bytes | None, bytes | None]] = []
        for i, record in enumerate(records):  # a valid lead before and after every bad record
            mixed += [valid_lead(tag, 2 * i), record, valid_lead(tag, 2 * i + 1)]
        where = send_all(dep.settings, topic, mixed)
        batches.append(len(mixed))
        verdicts = {w: expected(v, MAX_PAYLOAD) for w, (_, v) in zip(where, mixed, strict=True)}
        bad = {w for w, verdict in verdicts.items() if verdict is not None}
        wait_for(lambda: bad <= dead_letters(dep, topic).keys(), 120, f"{len(bad)} dead letters", 1.0)
        dlq = dead_letters(dep, topic)
        for w, (key, value) in zip(where, mixed, strict=True):
            verdict = verdicts[w]
            if verdict is None:
                assert w not in dlq, f"a valid lead was dead-lettered: {value!r:.200}"
                continue
            record, headers = dlq[w]
            note(f"record {key!r} {value!r:.200} -> {headers}")
            assert headers["x-leadrelay-reason"] == verdict, (value[:200] if value else value, headers)
            assert record.key == key and record.value == (value if value is not None else b"")
            assert headers.get("x-leadrelay-error-class")
        assert worker.alive() and healthy(dep), worker.tail()

    one_batch()
    report = settle_and_verify(dep, [worker], timeout=120)
    sent = sum(batches)
    publish(
        "fuzzed leads.new (hypothesis) between valid leads",
        report,
        time.monotonic() - t0,
        f"{len(batches)} generated batches, {sent} records (each bad record between two valid leads),"
        f" payload limit {MAX_PAYLOAD} bytes.",
    )
    assert report.ok, report.table()
    assert report.internal_errors == 0
    assert report.leads_in == sent


def test_bad_records_on_every_other_ingress(chaos: Callable[..., Deployment]) -> None:
    """Deals, roster and policies: garbage, contract violations, wrong keys, tombstones. Each lands in
    the DLQ with its reason; nothing is an internal error; leads keep being decided."""
    t0 = time.monotonic()
    dep = chaos()
    worker = dep.worker("w1")
    publish_roster(dep)
    s = dep.settings
    rep = RepUpdated(rep_id="r-x", pools=[POOLS[0]]).model_dump_json().encode()
    deal = DealClosed(lead_id="d-1", outcome="won", closed_at=NOW).model_dump_json().encode()
    cases: dict[str, list[tuple[bytes | None, bytes | None, str]]] = {
        s.topic_deals_closed: [
            (b"d-1", b"\xff\xfe", "invalid_json"),
            (b"d-2", None, "invalid_json"),
            (b"d-3", b'{"lead_id": "d-3", "outcome": "maybe", "closed_at": "%s"}' % NOW.encode(), "schema_violation"),
            (b"d-4", deal.replace(b'"won"', b"null"), "schema_violation"),
            (b"d-5", b" " * (MAX_PAYLOAD + 1), "payload_too_large"),
        ],
        s.topic_reps_roster: [
            (b"r-x", b"not json", "invalid_json"),
            (b"someone-else", rep, "key_mismatch"),  # compaction would keep a wrong key forever
            (b"", None, "key_mismatch"),  # a tombstone without a (usable) key
            (b"r-y", b'{"rep_id": "r-y", "pools": ["NOT A POOL"]}', "schema_violation"),
            (b"r-z", b'{"rep_id": "r-z", "pools": [], "capacity": -1}', "schema_violation"),
        ],
        s.topic_policies: [
            (POOLS[0].encode(), b"strategies: [unclosed", "invalid_policy"),
            (POOLS[0].encode(), b"!!python/object/apply:os.system ['true']", "invalid_policy"),
            (POOLS[0].encode(), b"strategies: {}", "invalid_policy"),
            (b"", b"{}", "key_mismatch"),  # (a compacted topic refuses a null key)
            (POOLS[0].encode(), b"pool: " + POOLS[1].encode(), "key_mismatch"),
            (b"BAD POOL", b"{}", "key_mismatch"),
        ],
    }
    where: dict[tuple[str, int, int], tuple[bytes | None, str]] = {}
    for topic, items in cases.items():
        for (_key, value, reason), (p, o) in zip(items, send_all(s, topic, [(k, v) for k, v, _ in items]), strict=True):
            where[(topic, p, o)] = (value, reason)
    around = [valid_lead("other", i) for i in range(20)]
    send_all(s, s.topic_leads_new, around)

    def all_dead() -> dict[tuple[str, int, int], dict[str, str]]:
        out = {}
        for r in asyncio.run(read_all(s, s.topic_dlq, idle=1.0)):
            h = {k: v.decode() for k, v in r.headers}
            out[
                (
                    h["x-leadrelay-source-topic"],
                    int(h["x-leadrelay-source-partition"]),
                    int(h["x-leadrelay-source-offset"]),
                )
            ] = h
        return out

    wait_for(lambda: where.keys() <= all_dead().keys(), 120, "every bad record in the DLQ", 1.0)
    dead = all_dead()
    wrong = {
        w: (reason, dead[w]["x-leadrelay-reason"])
        for w, (_, reason) in where.items()
        if dead[w]["x-leadrelay-reason"] != reason
    }
    assert not wrong, f"wrong DLQ reasons (expected, got): {wrong}"
    assert worker.alive() and healthy(dep)
    report = settle_and_verify(dep, [worker], timeout=120)
    publish("bad records on deals, roster and policies", report, time.monotonic() - t0, f"{len(where)} bad records.")
    assert report.ok, report.table()
    assert report.internal_errors == 0


def test_deeply_nested_policy_is_an_invalid_policy_not_an_internal_error(chaos: Callable[..., Deployment]) -> None:
    """A policy nested deeper than the YAML parser's recursion (here 1000 levels, 2 KB, far under the
    payload limit) must be refused as invalid_policy like any other bad policy, not as internal_error.
    Found by the fuzz of parse_policy (tests/unit/test_fuzz_parse.py): the parser's RecursionError
    escaped routing.policy.parse_policy."""
    dep = chaos()
    worker = dep.worker("w1")
    s = dep.settings
    [(p, o)] = send_all(s, s.topic_policies, [(POOLS[0].encode(), b"[" * 1000 + b"]" * 1000)])

    def reason() -> str | None:
        for r in asyncio.run(read_all(s, s.topic_dlq, idle=1.0)):
            h = {k: v.decode() for k, v in r.headers}
            if (h["x-leadrelay-source-partition"], h["x-leadrelay-source-offset"]) == (str(p), str(o)):
                return h["x-leadrelay-reason"] + " / " + h.get("x-leadrelay-error-class", "")
        return None

    wait_for(lambda: reason() is not None, 60, "the policy in the DLQ", 1.0)
    assert worker.alive()
    assert reason() == "invalid_policy / InvalidPolicy"
