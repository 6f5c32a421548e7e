"""Fuzz of the two parsers that face untrusted input (no broker): streams.codecs.parse for the public
events and routing.policy.parse_policy. Whatever the bytes, only the classified errors may escape
(InvalidInput subclasses, PolicyError): anything else would be dead-lettered as internal_error by the
worker (and crash the `leadrelay policy` CLI). What parses must also dump and parse back, because the
worker forwards it as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.policy import Policy, PolicyError, dump_policy, parse_policy
from schemas.events import DealClosed, LeadCreated, RepUpdated
from streams.codecs import dump, parse
from streams.errors import InvalidInput, InvalidJson, PayloadTooLarge

LIMIT = 4096
MODELS = (LeadCreated, DealClosed, RepUpdated)
POLICY_FILES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "policies").glob("*.yaml"))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID: dict[type, dict[str, Any]] = {
    LeadCreated: {
        "lead_id": "L-1",
        "created_at": "2026-01-01T00:00:00Z",
        "pool": "emea",
        "source": "web",
        "country": "DE",
        "company_size": 12,
        "language": "de",
        "estimated_value": 1000.5,
        "currency": "EUR",
        "attributes": {"segment": "smb", "score": 3},
        "contact": {"name": "Jane", "email": "jane@example.com"},
    },
    DealClosed: {"lead_id": "L-1", "outcome": "won", "amount": 10.0, "closed_at": "2026-01-02T00:00:00Z"},
    RepUpdated: {
        "rep_id": "r-1",
        "pools": ["emea"],
        "tags": {"lang:de": 2},
        "capacity": 5,
        "timezone": "Europe/Berlin",
        "working_hours": {"mon": ["09:00-17:00"]},
        "out_of_office": [{"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}],
    },
}

# --------------------------------------------------------------------------------------- strategies

odd_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\u202e", "\u200b", "\ufeff", "\x00", "\ud800", "é"]),
    max_size=80,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.floats()  # nan and inf included: json.dumps writes NaN/Infinity, which is not JSON
    | odd_text
    | st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=6) | st.dictionaries(odd_text, c, max_size=6), max_leaves=30
)


def dumps(value: Any) -> bytes:
    """json (not orjson): surrogates become \\udXXX escapes, big ints and NaN are written as Python does."""
    return json.dumps(value).encode()


@st.composite
def mutated(draw: st.DrawFn, model: type) -> bytes:
    """A valid record with fields deleted, nulled, retyped, set to odd unicode, or extra fields added."""
    record = json.loads(json.dumps(VALID[model]))
    for _ in range(draw(st.integers(1, 3))):
        fields = [*record, "extra", "schema_version"]
        field = draw(st.sampled_from(fields))
        how = draw(st.sampled_from(["delete", "null", "value", "text", "nested"]))
        if how == "delete":
            record.pop(field, None)
        elif how == "null":
            record[field] = None
        elif how == "value":
            record[field] = draw(json_values)
        elif how == "text":
            record[field] = draw(odd_text)
        elif isinstance(record.get(field), dict) and record[field]:
            inner = draw(st.sampled_from(sorted(record[field])))
            record[field][inner] = draw(json_values)
    return dumps(record)


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


def raw_inputs(model: type) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.binary(max_size=300),
        json_values.map(dumps),
        mutated(model),
        mutated(model).map(lambda raw: raw + b" " * LIMIT),  # valid or not: too large first
        st.integers(1, 200_000).map(nested),
        st.integers(1, 100_000).map(lambda d: nested(d, b'{"a":', b"}")),
        st.sampled_from([b"", b"null", b"{}", b"[]", b"\xef\xbb\xbf{}", b"1e999", b"-0", b'"\\ud800"', b"\x00"]),
    )


# ------------------------------------------------------------------------------------ codecs.parse


def check_parse(model: type, raw: bytes | None) -> None:
    try:
        parsed = parse(model, raw, max_bytes=LIMIT)
    except InvalidInput as exc:
        assert exc.reason and str(exc)
        if raw is None:
            assert isinstance(exc, InvalidJson)
        elif len(raw) > LIMIT:
            assert isinstance(exc, PayloadTooLarge)
        field = getattr(exc, "field", None)
        assert field is None or "@" not in field, "a field path must not carry sender-chosen keys (PII)"
        return
    assert raw is not None and len(raw) <= LIMIT
    assert isinstance(parsed, model)
    again = parse(model, dump(parsed), max_bytes=1 << 20)  # what the worker forwards parses back
    assert again == (parsed.model_copy(update={"contact": None}) if model is LeadCreated else parsed)


@FUZZ
@given(raw=raw_inputs(LeadCreated))
def test_lead_parse_only_raises_invalid_input(raw: bytes | None) -> None:
    check_parse(LeadCreated, raw)


@FUZZ
@given(raw=raw_inputs(DealClosed))
def test_deal_parse_only_raises_invalid_input(raw: bytes | None) -> None:
    check_parse(DealClosed, raw)


@FUZZ
@given(raw=raw_inputs(RepUpdated))
def test_rep_parse_only_raises_invalid_input(raw: bytes | None) -> None:
    check_parse(RepUpdated, raw)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_valid_records_parse(model: type) -> None:
    check_parse(model, dumps(VALID[model]))
    assert isinstance(parse(model, dumps(VALID[model]), max_bytes=LIMIT), model)


# ----------------------------------------------------------------------------------- parse_policy

policy_docs = [yaml.safe_load(p.read_text()) for p in POLICY_FILES]


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    """One of the shipped example policies with a value somewhere in it replaced."""
    doc = json.loads(json.dumps(draw(st.sampled_from(policy_docs))))
    node: Any = doc
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                node[key] = draw(json_values)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[draw(st.integers(0, len(node) - 1))]
        else:
            break
    as_json = draw(st.booleans())
    return json.dumps(doc) if as_json else yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))


yaml_snippets = st.sampled_from(
    [
        "!!python/object/apply:os.system ['true']",
        "a: &a [1]\nb: *a",
        "*undefined",
        "{",
        "- - - -",
        "%YAML 1.1\n---\nid: x",
        "id: x\nid: y",
        "version: 1e400",
        "version: .nan",
        "strategies: {default: {scorers: {load: .inf}}}",
        "? [complex, key]\n: 1",
        "\t",
        "---\n---\n",
    ]
)
policy_inputs = st.one_of(
    st.binary(max_size=300),
    odd_text,
    json_values.map(json.dumps),
    mutated_policy(),
    yaml_snippets,
    st.lists(yaml_snippets, max_size=4).map("\n".join),
    st.integers(1, 50).map(lambda d: "[" * d + "]" * d),  # shallow; the deep case has its own test
)


@FUZZ
@given(text=policy_inputs)
def test_parse_policy_only_raises_policy_error(text: str | bytes) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError as exc:
        assert str(exc)
        return
    assert isinstance(policy, Policy)
    assert parse_policy(dump_policy(policy)) == policy
    assert parse_policy(dump_policy(policy, "json")) == policy


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_shipped_policies_parse(path: Path) -> None:
    assert isinstance(parse_policy(path.read_text()), Policy)


@pytest.mark.parametrize("depth", [50, 1000])
@pytest.mark.parametrize("shape", ["flow-list", "flow-map", "block"])
def test_deeply_nested_policy_is_a_policy_error(depth: int, shape: str) -> None:
    """A few KB of nesting (under the default 64 KiB payload limit) exceed the parsers' recursion. Found
    by this fuzz: the RecursionError escaped parse_policy, so the worker dead-lettered such a record as
    internal_error (not invalid_policy) and `leadrelay policy check` died with a traceback."""
    text = {
        "flow-list": "[" * depth + "]" * depth,
        "flow-map": "{a: " * depth + "1" + "}" * depth,
        "block": "- " * depth + "x",
    }[shape]
    with pytest.raises(PolicyError):
        parse_policy(text)
