"""The committed JSON Schemas match the models, their examples hold, and schema and model agree on records."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, ValidationError

from routing.policy import parse_policy
from schemas import publish
from schemas.deadletter import DeadLetterHeaders
from schemas.publish import CONTRACTS, Contract
from streams import errors
from streams.codecs import dump
from streams.runtime.boundary import headers_for
from tests.factories import make_policy, make_rep, make_view, run_leads

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {c.name: c for c in CONTRACTS}
INPUTS = [c for c in CONTRACTS if c.direction == "input"]
OUTPUTS = [c for c in CONTRACTS if c.direction == "output"]
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)  # jsonschema checks date-time only with an optional package; this is RFC 3339 section 5.6
FORMATS = FormatChecker()


@FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    if not isinstance(value, str) or not RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # month 13 or hour 25 raise
    return True


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    return not isinstance(value, str) or bool(
        re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) and datetime.fromisoformat(value)
    )


def schema_of(contract: Contract) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((publish.JSON_DIR / contract.file_name).read_text(encoding="utf-8"))
    return loaded


def validator(contract: Contract) -> Draft202012Validator:
    return Draft202012Validator(schema_of(contract), format_checker=FORMATS)


def parse(contract: Contract, record: Any) -> BaseModel:
    """As the worker does: the record's JSON bytes through the model."""
    return contract.model.model_validate_json(orjson.dumps(record))  # by alias where a field has one


ids = [c.name for c in CONTRACTS]


# drift


def test_committed_schemas_match_the_models() -> None:
    problems = publish.drift()
    assert not problems, "\n".join(problems)


def test_drift_is_reported_with_a_diff(tmp_path: Path) -> None:
    publish.write(tmp_path)
    assert publish.drift(tmp_path) == []
    path = tmp_path / BY_NAME["leads.new"].file_name
    path.write_text(path.read_text().replace('"maxLength": 128', '"maxLength": 129'))
    (tmp_path / BY_NAME["deals.closed"].file_name).unlink()
    (tmp_path / "leads.new.v7.json").write_text("{}")
    problems = publish.drift(tmp_path)
    assert any(p.startswith("leads.new.v1.json: differs") and '-      "maxLength": 129' in p for p in problems)
    assert any(p.startswith("deals.closed.v1.json: missing") for p in problems)
    assert any(p.startswith("leads.new.v7.json: not produced") for p in problems)
    assert publish.main(["--check", "--dir", str(tmp_path)]) == 1


def test_older_versions_stay_as_history(tmp_path: Path) -> None:
    publish.write(tmp_path)
    (tmp_path / "leads.new.v0.json").write_text("{}")
    assert publish.drift(tmp_path) == []


@pytest.mark.parametrize("contract", CONTRACTS, ids=ids)
def test_schema_is_a_valid_2020_12_schema_with_its_metadata(contract: Contract) -> None:
    schema = schema_of(contract)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:leadrelay:schema:{contract.name}:v{contract.version}"
    assert schema["x-schema-version"] == contract.version
    assert schema["title"] and schema["description"] and schema["examples"]
    if "schema_version" in contract.model.model_fields:
        assert schema["properties"]["schema_version"]["const"] == contract.version


@pytest.mark.parametrize("contract", INPUTS, ids=[c.name for c in INPUTS])
def test_inputs_refuse_unknown_fields_like_the_model(contract: Contract) -> None:
    assert contract.model.model_config.get("extra") == "forbid"
    assert schema_of(contract)["additionalProperties"] is False
    assert "Unknown fields are refused" in schema_of(contract)["description"]


@pytest.mark.parametrize("contract", OUTPUTS, ids=[c.name for c in OUTPUTS])
def test_outputs_tell_consumers_to_tolerate_unknown_fields(contract: Contract) -> None:
    schema = schema_of(contract)
    assert "must ignore fields they do not know" in schema["description"]
    objects = [schema, *schema.get("$defs", {}).values()]
    assert all(o.get("additionalProperties") is True for o in objects if "properties" in o)
    validator(contract).validate({**contract.examples[0], "added_in_a_later_release": {"any": ["thing"]}})


# examples


EXAMPLES = [(c, i, e) for c in CONTRACTS for i, e in enumerate(c.examples)]


@pytest.mark.parametrize(("contract", "index", "example"), EXAMPLES, ids=[f"{c.name}-{i}" for c, i, _ in EXAMPLES])
def test_example_validates_against_schema_and_model(contract: Contract, index: int, example: dict[str, Any]) -> None:
    assert schema_of(contract)["examples"][index] == example
    validator(contract).validate(example)
    parse(contract, example)


def test_readme_examples_are_the_published_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {m[1]: json.loads(m[2]) for m in re.finditer(r"^```json[ \t]+(\w+)[ \t]*\n(.*?)^```", readme, re.M | re.S)}
    published = {c.model.__name__: c.examples[0] for c in CONTRACTS}
    assert blocks and all(published[model] == body for model, body in blocks.items())


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_validate_against_the_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    validator(BY_NAME["routing.policies"]).validate(document)
    parse_policy(path.read_text())


def test_decisions_the_core_makes_validate_against_the_schema() -> None:
    reps = [make_rep(rep_id=f"rep-{i}", capacity=2, tags={"de": i + 1}) for i in range(3)]
    frame = make_view(reps, pool="dach")
    results = run_leads(frame, make_policy({"scorers": {"load": 1.0, "skills": 0.5}}), 8, estimated_value=100.0)
    check = validator(BY_NAME["leads.assignments"])
    reasons = set()
    for result in results:
        check.validate(orjson.loads(dump(result.decision)))
        reasons.add(result.decision.reason)
    assert reasons == {"assigned", "no_eligible_rep"}  # capacity 3 x 2 for 8 leads: both shapes checked


def test_dead_letter_headers_match_the_worker() -> None:
    worker_reasons = {cls.reason for cls in _subclasses(errors.InvalidInput)} | {errors.InvalidInput.reason}
    schema_reasons = set(schema_of(BY_NAME["leads.dlq"])["properties"]["x-leadrelay-reason"]["enum"])
    assert schema_reasons == worker_reasons | {"internal_error"}
    check = validator(BY_NAME["leads.dlq"])
    for error, reason in [
        (errors.SchemaViolation("country: bad", field="country"), "schema_violation"),
        (errors.UnknownLead("no decision"), "unknown_lead"),
        (RuntimeError("x" * 5000), "internal_error"),
    ]:
        headers = {k: v.decode() for k, v in headers_for("leads.new", -1, 42, error, reason)}
        check.validate(headers)
        DeadLetterHeaders.model_validate(headers)


def _subclasses(cls: type) -> set[type[errors.InvalidInput]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(c) for c in found))


# known-invalid records: both refuse


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


INVALID: list[tuple[str, dict[str, Any]]] = [
    ("leads.new", _without(BY_NAME["leads.new"].examples[0], "lead_id")),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "country": "Germany"}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "schema_version": 2}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "lead_id": "-starts-with-dash"}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "company_size": -1}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "source": "   "}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "attributes": {f"k{i}": i for i in range(51)}}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "contact": {"mail": "x@example.com"}}),
    ("leads.new", {**BY_NAME["leads.new"].examples[1], "created_at": "yesterday"}),
    ("deals.closed", {**BY_NAME["deals.closed"].examples[0], "outcome": "pending"}),
    ("deals.closed", {**BY_NAME["deals.closed"].examples[0], "amount": "lots"}),
    ("reps.roster", {**BY_NAME["reps.roster"].examples[1], "tags": {"Not A Tag": 1}}),
    ("reps.roster", {**BY_NAME["reps.roster"].examples[1], "tags": {"de": 6}}),
    ("reps.roster", {**BY_NAME["reps.roster"].examples[1], "working_hours": {"someday": ["09:00-17:00"]}}),
    ("reps.roster", {**BY_NAME["reps.roster"].examples[1], "pool_capacity": {"DACH": 1}}),
    ("reps.roster", {**BY_NAME["reps.roster"].examples[1], "weight": 0}),
    ("routing.policies", {"strategies": {"default": {"scorers": {"luck": 1.0}}}}),
    ("routing.policies", {"version": 0}),
    ("routing.policies", {"strategies": {"default": {"selector": {"type": "coin"}}}}),
    ("leads.assignments", {**BY_NAME["leads.assignments"].examples[0], "reason": "guessed"}),
    ("leads.assignments", _without(BY_NAME["leads.assignments"].examples[0], "decision_id")),
    ("leads.dlq", {**BY_NAME["leads.dlq"].examples[0], "x-leadrelay-source-offset": "six"}),
]


@pytest.mark.parametrize(("name", "record"), INVALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVALID)])
def test_known_invalid_record_is_refused_by_schema_and_model(name: str, record: dict[str, Any]) -> None:
    contract = BY_NAME[name]
    assert not validator(contract).is_valid(record)
    with pytest.raises(ValidationError):
        parse(contract, record)


# properties: records drawn from the schema


def from_schema(schema: Any, root: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Records a JSON Schema accepts, for the subset pydantic writes (refs, anyOf, const/enum, bounds,
    patterns, dates, arrays, objects with listed or typed properties)."""
    if schema is True or schema == {}:
        return st.just("anything")
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        return st.deferred(lambda: from_schema(target, root))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, root) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind in ("null", "boolean", "integer", "number"):
        return _scalars(schema, kind)
    if kind == "string":
        return _strings(schema)
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), root),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    if kind == "object":
        return _objects(schema, root)
    raise AssertionError(f"the generator does not know {schema}")


def _scalars(schema: dict[str, Any], kind: str) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**53)), schema.get("maximum", 2**53))
    low, high = schema.get("minimum", -1e15), schema.get("maximum", 1e15)
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min="exclusiveMinimum" in schema)
    return floats.filter(lambda x: x > schema.get("exclusiveMinimum", -1e300))


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 300)
    if schema.get("format") == "date-time":
        moments = st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))
        offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m))
        return st.tuples(moments, offsets).map(lambda mo: mo[0].astimezone(_zone(mo[1])).isoformat())
    if schema.get("format") == "date":
        return st.dates().map(lambda d: d.isoformat())
    pattern = schema.get("pattern")
    if pattern is None:
        text = st.text(min_size=low, max_size=high)
    else:
        anchored = pattern.startswith("^") and pattern.endswith("$")
        text = st.from_regex(pattern, fullmatch=anchored)
    return text.filter(lambda s: low <= len(s) <= high)


def _zone(offset: timedelta) -> Any:
    from datetime import timezone

    return timezone(offset)


def _objects(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties")
    if props is not None:
        required = set(schema.get("required", ()))
        fixed = {k: from_schema(v, root) for k, v in props.items() if k in required}
        optional = {k: from_schema(v, root) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    names = schema.get("propertyNames", {})
    keys = _strings({"type": "string", **names}) if "enum" not in names else st.sampled_from(names["enum"])
    values = from_schema(schema.get("additionalProperties", {}), root)
    return st.dictionaries(
        keys, values, min_size=schema.get("minProperties", 0), max_size=min(schema.get("maxProperties", 4), 4)
    )


def records(contract: Contract) -> st.SearchStrategy[Any]:
    schema = schema_of(contract)
    return from_schema(schema, schema)


# What pydantic checks and JSON Schema cannot state (docs/contracts.md lists them): a schema-valid record may
# be refused for these reasons only.
CROSS_FIELD = re.compile(
    r"unknown time zone|a 'default' strategy is required|unknown strategy|shares must sum to 1|ids must be unique"
    r"|at least one scorer needs a weight|may be listed once|already a weighted scorer|names must be unique"
    r"|unknown value tier|unknown lead field"
    # issue 11's policy fields: exploration and objectives, learning's features and size bands
    r"|needs an objective|an objective decides by argmax|needs the policy's `learning` section"
    r"|must be ascending and distinct|a feature may be listed once"
)
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@pytest.mark.parametrize("contract", CONTRACTS, ids=ids)
def test_records_the_schema_accepts_the_model_accepts(contract: Contract) -> None:
    check = validator(contract)

    @PROPERTY
    @given(records(contract))
    def accepted_by_both(record: dict[str, Any]) -> None:
        check.validate(record)  # the generator itself is right
        try:
            parsed = parse(contract, record)
        except ValidationError as exc:
            problems = exc.errors(include_url=False)
            unexplained = [p for p in problems if not (p["type"] == "value_error" and CROSS_FIELD.search(p["msg"]))]
            assert not unexplained, f"schema accepts, model refuses: {unexplained}"
            return
        if contract.direction == "output":  # and what leadrelay writes of it is what the schema promises
            check.validate(parsed.model_dump(mode="json", by_alias=contract.by_alias))

    accepted_by_both()


@pytest.mark.parametrize("contract", INPUTS, ids=[c.name for c in INPUTS])
def test_an_unknown_field_is_refused_by_both(contract: Contract) -> None:
    check = validator(contract)
    known = set(schema_of(contract)["properties"])

    @PROPERTY
    @given(
        st.sampled_from(contract.examples),
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
        st.integers(-(2**31), 2**31) | st.text(max_size=5),
    )
    def refused_by_both(example: dict[str, Any], name: str, value: int | str) -> None:
        if name in known:
            return
        record = {**example, name: value}
        assert not check.is_valid(record)
        with pytest.raises(ValidationError):
            parse(contract, record)

    refused_by_both()


WITH_REQUIRED = [c for c in CONTRACTS if schema_of(c).get("required")]  # a policy's fields all have defaults


@pytest.mark.parametrize("contract", WITH_REQUIRED, ids=[c.name for c in WITH_REQUIRED])
def test_a_missing_required_field_is_refused_by_both(contract: Contract) -> None:
    check = validator(contract)
    required = schema_of(contract)["required"]

    @PROPERTY
    @given(st.sampled_from(contract.examples), st.sampled_from(required))
    def refused_by_both(example: dict[str, Any], name: str) -> None:
        record = _without(example, name)
        assert not check.is_valid(record)
        if contract.direction == "input" or name in {
            k for k, f in contract.model.model_fields.items() if f.is_required()
        }:
            with pytest.raises(ValidationError):
                parse(contract, record)

    refused_by_both()


def test_generated_policies_are_not_all_refused() -> None:
    """Guard against a generator that only ever produces policies pydantic refuses (a vacuous property)."""
    schema = schema_of(BY_NAME["routing.policies"])
    accepted = []

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(from_schema(schema, schema))
    def count(record: dict[str, Any]) -> None:
        try:
            parse(BY_NAME["routing.policies"], record)
            accepted.append(record)
        except ValidationError:
            pass

    count()
    assert accepted
