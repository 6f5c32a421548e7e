"""Pool resolution: explicit pool, else ordered territory rules (first match wins), else the default."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routing.ids import unit_hash
from schemas.events import LeadCreated, PoolId

_FIELDS = ("source", "region", "country", "industry", "product", "language")
_NUMBERS = ("company_size", "estimated_value")


class Conditions(BaseModel):
    """Every condition given must hold; `attributes.<name>` reaches free attributes. Empty: always."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: dict[str, list[str | int | float | bool]] = Field(default_factory=dict)
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_fields(self) -> Conditions:
        for key in [*self.match, *self.min, *self.max]:
            if not key.startswith("attributes.") and key not in _FIELDS and key not in _NUMBERS:
                raise ValueError(f"unknown lead field {key!r}")
        return self

    def matches(self, lead: LeadCreated) -> bool:
        for key, allowed in self.match.items():
            value = _value(lead, key)
            # bool is an int in Python: True must not match 1, nor 1 match True.
            if not any(value == a and type(value) is type(a) for a in allowed):
                return False
        for key, low in self.min.items():
            value = _value(lead, key)
            if not _number(value) or value < low:
                return False
        for key, high in self.max.items():
            value = _value(lead, key)
            if not _number(value) or value > high:
                return False
        return True


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TerritoryRule(Conditions):
    """One rule entry mapping leads to a pool (`pool`), or splitting them between pools by weight
    (`split`, e.g. {"emea-a": 3, "emea-b": 1}): first match wins."""

    pool: PoolId | None = None
    split: dict[PoolId, Annotated[int, Field(ge=1, le=10_000)]] | None = Field(None, min_length=1, max_length=32)
    name: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TerritoryRule:
        if (self.pool is None) == (self.split is None):
            raise ValueError("a territory rule names exactly one of `pool` and `split`")
        return self

    def target(self, lead_id: str, label: str) -> str:
        """The rule's pool for this lead. A split hashes the lead id with the rule's label (its name or
        position), never the wall clock or a global random: the same lead always lands in the same pool
        under the same rule, so an update that still matches the rule does not move it."""
        if self.pool is not None:
            return self.pool
        assert self.split is not None
        return split_pool(self.split, unit_hash("territory", label, lead_id))


def split_pool(weights: dict[str, int], u: float) -> str:
    """The pool whose share of the weights `u` (in [0, 1)) falls in; pools in sorted order, so the
    result does not depend on how the mapping was written."""
    total = sum(weights.values())
    cumulative = 0
    for pool in sorted(weights):
        cumulative += weights[pool]
        if u * total < cumulative:
            return pool
    return max(weights)  # u < 1 never gets here; kept for float edge cases


def _value(lead: LeadCreated, key: str) -> Any:
    if key.startswith("attributes."):
        return lead.attributes.get(key.removeprefix("attributes."))
    if key in _FIELDS or key in _NUMBERS:
        return getattr(lead, key)
    raise KeyError(key)


def resolve_pool(lead: LeadCreated, rules: list[TerritoryRule], default: str) -> tuple[str, str]:
    """The pool and how it was found ("explicit", "rule:<name or index>", "default")."""
    if lead.pool:
        return lead.pool, "explicit"
    for index, rule in enumerate(rules):
        if rule.matches(lead):
            label = rule.name or str(index)
            return rule.target(lead.lead_id, label), f"rule:{label}"
    return default, "default"
