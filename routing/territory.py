"""Pool resolution: explicit pool, else ordered territory rules (first match wins), else the default."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """One rule entry mapping leads to a pool: first match wins."""

    pool: PoolId
    name: Annotated[str, Field(max_length=64)] | None = None


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
            return rule.pool, f"rule:{rule.name or index}"
    return default, "default"
