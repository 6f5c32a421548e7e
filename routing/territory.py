"""Pool resolution: explicit pool, else ordered territory rules (first match wins), else the default."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import LeadCreated, PoolId

_FIELDS = ("source", "region", "country", "industry", "product", "language")
_NUMBERS = ("company_size", "estimated_value")


class TerritoryRule(BaseModel):
    """One rule entry: every condition given must hold. `attributes.<name>` reaches free attributes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: PoolId
    match: dict[str, list[str | int | float | bool]] = Field(default_factory=dict)
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    name: Annotated[str, Field(max_length=64)] | None = None

    def matches(self, lead: LeadCreated) -> bool:
        for key, allowed in self.match.items():
            if _value(lead, key) not in allowed:
                return False
        for key, low in self.min.items():
            value = _value(lead, key)
            if not isinstance(value, int | float) or value < low:
                return False
        for key, high in self.max.items():
            value = _value(lead, key)
            if not isinstance(value, int | float) or value > high:
                return False
        return True


def _value(lead: LeadCreated, key: str) -> Any:
    if key.startswith("attributes."):
        return lead.attributes.get(key.removeprefix("attributes."))
    if key in _FIELDS or key in _NUMBERS:
        return getattr(lead, key)
    raise KeyError(key)


def check_rule_fields(rules: list[TerritoryRule]) -> None:
    """Fail at start-up, not on the first lead, when a rule names a field leads do not have."""
    for index, rule in enumerate(rules):
        for key in [*rule.match, *rule.min, *rule.max]:
            if not key.startswith("attributes.") and key not in _FIELDS and key not in _NUMBERS:
                raise ValueError(f"territory_rules[{index}]: unknown lead field {key!r}")


def resolve_pool(lead: LeadCreated, rules: list[TerritoryRule], default: str) -> tuple[str, str]:
    """The pool and how it was found ("explicit", "rule:<name or index>", "default")."""
    if lead.pool:
        return lead.pool, "explicit"
    for index, rule in enumerate(rules):
        if rule.matches(lead):
            return rule.pool, f"rule:{rule.name or index}"
    return default, "default"
