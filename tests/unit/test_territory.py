"""routing.territory: explicit pool, ordered rules (first match wins), numeric bounds, attributes, default."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routing.territory import TerritoryRule, resolve_pool, split_pool
from tests.factories import make_lead

RULES = [
    TerritoryRule(
        name="dach-enterprise", pool="dach-ent", match={"country": ["DE", "AT", "CH"]}, min={"company_size": 1000}
    ),
    TerritoryRule(pool="dach", match={"country": ["DE", "AT", "CH"]}),
    TerritoryRule(name="big-deal", pool="strategic", min={"estimated_value": 100_000}),
    TerritoryRule(name="small", pool="smb", max={"company_size": 50}, match={"source": ["web"]}),
    TerritoryRule(name="partner", pool="partners", match={"attributes.channel": ["partner", "reseller"]}),
    TerritoryRule(name="vip", pool="vip", match={"attributes.vip": [True]}),
    TerritoryRule(name="scored", pool="hot", min={"attributes.score": 80}, max={"attributes.score": 100}),
]


@pytest.mark.parametrize(
    ("lead_kwargs", "expected"),
    [
        # explicit pool wins over every rule
        ({"pool": "manual", "country": "DE", "company_size": 5000}, ("manual", "explicit")),
        # first matching rule wins (both DACH rules match)
        ({"country": "DE", "company_size": 5000}, ("dach-ent", "rule:dach-enterprise")),
        ({"country": "CH", "company_size": 999}, ("dach", "rule:1")),  # unnamed rule: its index
        ({"country": "AT"}, ("dach", "rule:1")),  # min on a missing value does not match
        # numeric bounds are inclusive
        ({"country": "US", "estimated_value": 100_000}, ("strategic", "rule:big-deal")),
        ({"country": "US", "estimated_value": 99_999.99}, ("default", "default")),
        ({"source": "web", "company_size": 50}, ("smb", "rule:small")),
        ({"source": "web", "company_size": 51}, ("default", "default")),
        ({"source": "web", "company_size": 0}, ("smb", "rule:small")),
        ({"source": "web"}, ("default", "default")),  # max on a missing value does not match
        ({"source": "event", "company_size": 10}, ("default", "default")),  # all conditions must hold
        # attributes.<name>
        ({"attributes": {"channel": "reseller"}}, ("partners", "rule:partner")),
        ({"attributes": {"channel": "direct"}}, ("default", "default")),
        ({"attributes": {"vip": True}}, ("vip", "rule:vip")),
        ({"attributes": {"score": 80}}, ("hot", "rule:scored")),
        ({"attributes": {"score": 100.0}}, ("hot", "rule:scored")),
        ({"attributes": {"score": 79.5}}, ("default", "default")),
        ({"attributes": {"score": 101}}, ("default", "default")),
        ({"attributes": {"score": "90"}}, ("default", "default")),  # a string is not a number
        # nothing matches
        ({}, ("default", "default")),
    ],
)
def test_resolve_pool(lead_kwargs, expected):
    assert resolve_pool(make_lead(**lead_kwargs), RULES, "default") == expected


def test_default_pool_is_the_given_one():
    assert resolve_pool(make_lead(), [], "fallback") == ("fallback", "default")


def test_rule_order_decides():
    first = TerritoryRule(name="a", pool="pool-a", match={"region": ["emea"]})
    second = TerritoryRule(name="b", pool="pool-b", match={"region": ["emea"]})
    lead = make_lead(region="emea")
    assert resolve_pool(lead, [first, second], "d") == ("pool-a", "rule:a")
    assert resolve_pool(lead, [second, first], "d") == ("pool-b", "rule:b")


def test_empty_rule_matches_everything():
    assert resolve_pool(make_lead(), [TerritoryRule(pool="all")], "d") == ("all", "rule:0")


@pytest.mark.parametrize(
    "conditions",
    [
        {"match": {"country": ["US"], "language": ["en"], "product": ["crm"], "industry": ["it"]}},
        {"min": {"company_size": 1, "estimated_value": 0}, "max": {"estimated_value": 5}},
        {"match": {"attributes.anything": ["x"]}, "min": {"attributes.other": 1}},
        {"match": {"source": ["web"], "region": ["emea"]}},
    ],
)
def test_rules_accept_known_fields(conditions):
    assert TerritoryRule(pool="p", **conditions).pool == "p"


@pytest.mark.parametrize(
    ("conditions", "field"),
    [
        ({"match": {"county": ["DE"]}}, "county"),
        ({"min": {"revenue": 1}}, "revenue"),
        ({"max": {"attribute.size": 1}}, "attribute.size"),
        ({"match": {"contact": ["x"]}}, "contact"),  # personal data is not routable
        ({"match": {"lead_id": ["x"]}}, "lead_id"),
    ],
)
def test_rules_reject_unknown_fields_when_built(conditions, field):
    with pytest.raises(ValueError, match=rf"unknown lead field '{field}'"):
        TerritoryRule(pool="p", **conditions)


def test_bool_and_int_do_not_match_each_other():
    flagged = make_lead(attributes={"vip": True, "tier": 1})
    assert not TerritoryRule(pool="p", match={"attributes.vip": [1]}).matches(flagged)
    assert not TerritoryRule(pool="p", match={"attributes.tier": [True]}).matches(flagged)
    assert TerritoryRule(pool="p", match={"attributes.vip": [True]}).matches(flagged)
    assert not TerritoryRule(pool="p", min={"attributes.vip": 0}).matches(flagged)


@pytest.mark.parametrize(
    "data",
    [
        {"pool": "Bad Pool"},
        {"pool": ""},
        {"pool": "a|b"},
        {"pool": "ok", "extra": 1},
        {"pool": "ok", "min": {"company_size": "big"}},
        {"pool": "ok", "name": "x" * 65},
        {"match": {}},
    ],
)
def test_invalid_rules_are_rejected(data):
    with pytest.raises(ValidationError):
        TerritoryRule.model_validate(data)


# --- split by weight -----------------------------------------------------------------------------

SPLIT = TerritoryRule(name="emea-split", split={"emea-a": 3, "emea-b": 1}, match={"region": ["EMEA"]})


@pytest.mark.parametrize(
    "data",
    [
        {"pool": "a", "split": {"b": 1}},  # exactly one of them
        {"split": {}},
        {"split": {"a": 0}},
        {"split": {"Bad Pool": 1}},
        {"split": {"a": -1, "b": 2}},
    ],
)
def test_invalid_splits_are_rejected(data):
    with pytest.raises(ValidationError):
        TerritoryRule.model_validate(data)


def test_a_split_rule_names_the_rule_like_a_pool_rule():
    pool, how = resolve_pool(make_lead(lead_id="lead-7", region="EMEA"), [SPLIT], "d")
    assert pool in ("emea-a", "emea-b") and how == "rule:emea-split"
    assert resolve_pool(make_lead(lead_id="lead-7", region="US"), [SPLIT], "d") == ("d", "default")


def test_a_split_is_stable_for_a_lead_whatever_else_changes():
    """An update that still matches the rule keeps its pool: the split hashes the lead id, not the lead."""
    first = resolve_pool(make_lead(lead_id="lead-7", region="EMEA", estimated_value=10), [SPLIT], "d")
    later = resolve_pool(make_lead(lead_id="lead-7", region="EMEA", estimated_value=9000, source="event"), [SPLIT], "d")
    assert first == later


def test_a_split_does_not_depend_on_the_order_its_pools_are_written_in():
    reordered = TerritoryRule(name="emea-split", split={"emea-b": 1, "emea-a": 3}, match={"region": ["EMEA"]})
    for i in range(200):
        lead = make_lead(lead_id=f"lead-{i}", region="EMEA")
        assert resolve_pool(lead, [SPLIT], "d") == resolve_pool(lead, [reordered], "d")


@pytest.mark.parametrize(("u", "pool"), [(0.0, "a"), (0.7499, "a"), (0.75, "b"), (0.9999999, "b")])
def test_split_pool_cuts_the_unit_interval_by_weight(u, pool):
    assert split_pool({"b": 1, "a": 3}, u) == pool


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.sampled_from(["p-a", "p-b", "p-c", "p-d"]), st.integers(1, 20), min_size=1))
def test_split_proportions_follow_the_weights(weights):
    """Over many lead ids each pool's share is its weight's share (within 3 points at n=4000)."""
    rule = TerritoryRule(name="s", split=weights)
    n = 4000
    counts = Counter(resolve_pool(make_lead(lead_id=f"id-{i}"), [rule], "d")[0] for i in range(n))
    assert set(counts) <= set(weights)
    total = sum(weights.values())
    for pool, w in weights.items():
        assert abs(counts[pool] / n - w / total) < 0.03, (pool, counts)


@given(
    st.text(min_size=1, max_size=40), st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(1, 9), min_size=1)
)
def test_split_is_deterministic(lead_id, weights):
    rule = TerritoryRule(name="s", split=weights)
    assert rule.target(lead_id, "s") == rule.target(lead_id, "s") in weights
