"""Routing policies as data: validated, versioned, one per pool (a default where a pool has none).

A policy picks a *strategy* for each lead (rule entries first, then an experiment's variant, else
"default"); a strategy is eligibility filters -> weighted scorers -> a selector, with a fallback
chain that relaxes requirements when nobody qualifies.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from routing.territory import Conditions
from schemas.events import PoolId

Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Share = Annotated[float, Field(ge=0, le=1)]
ScorerName = Literal["load", "rotation", "tier_fit", "skills", "performance", "revenue", "predicted", "fairness"]
SCORERS: tuple[str, ...] = ScorerName.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValueTier(_Model):
    """Leads whose value is at least `min_value` fall in this tier (the highest matching tier wins)."""

    name: Name
    min_value: Annotated[float, Field(ge=0)] = 0
    allowed_rep_tiers: list[Name] | None = Field(None, description="None: every rep tier may take it")
    preferred_rep_tiers: list[Name] = Field(default_factory=list)


class TagNeed(_Model):
    """A capability tag; `{field}` placeholders take the lead's value (e.g. "lang:{language}")."""

    tag: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    level: Annotated[int, Field(ge=1, le=5)] = 1


class Relaxation(_Model):
    """One step of the fallback chain, applied cumulatively until somebody is eligible."""

    drop_must_have: list[str] | Literal["all"] = Field(default_factory=list)
    allow_all_tiers: bool = False
    ignore_working_hours: bool = False


class Selector(_Model):
    type: Literal["argmax", "weighted_draw", "claim_pool"] = "argmax"
    temperature: Annotated[float, Field(gt=0, le=100)] = 1.0  # weighted_draw: probability ~ score ** (1/T)


def _load_only() -> dict[ScorerName, float]:
    return {"load": 1.0}


class Strategy(_Model):
    must_have: list[TagNeed] = Field(default_factory=list)
    nice_to_have: list[TagNeed] = Field(default_factory=list)
    relax: list[Relaxation] = Field(default_factory=list)
    scorers: dict[ScorerName, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=_load_only)
    # Lexicographic: these order only reps whose weighted score is equal, in this order, so a tie-break
    # can never outweigh the scorers (a small weight in `scorers` can, once capacities are large).
    tie_break: Annotated[list[ScorerName], Field(max_length=len(SCORERS))] = Field(default_factory=list)
    selector: Selector = Field(default_factory=Selector)

    @model_validator(mode="after")
    def _some_weight(self) -> Strategy:
        if self.selector.type != "claim_pool" and not any(self.scorers.values()):
            raise ValueError("scorers: at least one scorer needs a weight > 0")
        if len(set(self.tie_break)) != len(self.tie_break):
            raise ValueError("tie_break: a scorer may be listed once")
        weighted = [name for name in self.tie_break if self.scorers.get(name, 0) > 0]
        if weighted:
            raise ValueError(f"tie_break: {weighted[0]!r} is already a weighted scorer; list it in one place")
        return self


class RuleEntry(_Model):
    """Assignment-rule entry: first match wins and chooses the strategy (Salesforce/Zoho style)."""

    name: Name
    when: Conditions = Field(default_factory=Conditions)
    strategy: Name


class Variant(_Model):
    id: Name
    share: Share
    strategy: Name


class Experiment(_Model):
    """A/B trial: variants by a deterministic hash of lead_id; shadows are evaluated, recorded, not acted on."""

    id: Name
    variants: Annotated[list[Variant], Field(min_length=1, max_length=10)]
    shadow: list[Name] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> Experiment:
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"variants: shares must sum to 1, not {total:g}")
        if len({v.id for v in self.variants}) != len(self.variants):
            raise ValueError("variants: ids must be unique")
        return self


class Growth(_Model):
    """Protected growth channel: a share of leads (premium included) reserved for new or junior reps."""

    share: Share = 0.1
    new_rep_days: Annotated[int, Field(ge=0)] = 90
    tiers: list[Name] = Field(default_factory=lambda: ["junior"])
    include_premium: bool = True


class PremiumCap(_Model):
    """Against the Matthew effect: nobody gets more than `max_share` of a pool's premium-tier leads."""

    tier: Name
    max_share: Share = 0.4
    min_leads: Annotated[int, Field(ge=0)] = 10  # the cap applies once the pool has handed out this many


class Caps(_Model):
    daily: Annotated[int, Field(ge=0)] | None = None
    weekly: Annotated[int, Field(ge=0)] | None = None
    daily_value: Annotated[float, Field(ge=0)] | None = None


class Performance(_Model):
    window_days: Annotated[int, Field(ge=1, le=90)] = 30
    prior_won: Annotated[float, Field(gt=0)] = 1.0
    prior_lost: Annotated[float, Field(gt=0)] = 3.0


class Rotation(_Model):
    catch_up: Annotated[float, Field(ge=0, le=100)] = 2.0  # leads a returning rep may catch up, at most


class Policy(_Model):
    id: Name = "default"
    version: Annotated[int, Field(ge=1)] = 1
    pool: PoolId | None = Field(None, description="The pool it is for (the topic key when published)")
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    respect_working_hours: bool = True
    value_field: Literal["estimated_value", "score"] = "estimated_value"
    value_tiers: list[ValueTier] = Field(default_factory=list)
    caps: Caps = Field(default_factory=Caps)
    strategies: dict[Name, Strategy] = Field(
        default_factory=lambda: {"default": Strategy(scorers={"load": 1.0}, tie_break=["rotation"])}
    )
    rules: list[RuleEntry] = Field(default_factory=list)
    experiment: Experiment | None = None
    growth: Growth | None = None
    premium_cap: PremiumCap | None = None
    performance: Performance = Field(default_factory=Performance)
    rotation: Rotation = Field(default_factory=Rotation)
    runners_up: Annotated[int, Field(ge=0, le=10)] = 3

    @model_validator(mode="after")
    def _strategies_exist(self) -> Policy:
        if "default" not in self.strategies:
            raise ValueError("strategies: a 'default' strategy is required (the catch-all)")
        named = [(f"rules[{i}].strategy", r.strategy) for i, r in enumerate(self.rules)]
        if self.experiment:
            named += [
                (f"experiment.variants[{i}].strategy", v.strategy) for i, v in enumerate(self.experiment.variants)
            ]
            named += [(f"experiment.shadow[{i}]", s) for i, s in enumerate(self.experiment.shadow)]
        for where, name in named:
            if name not in self.strategies:
                raise ValueError(f"{where}: unknown strategy {name!r}")
        names = [t.name for t in self.value_tiers]
        if len(set(names)) != len(names):
            raise ValueError("value_tiers: names must be unique")
        if self.premium_cap and self.premium_cap.tier not in names:
            raise ValueError(f"premium_cap.tier: unknown value tier {self.premium_cap.tier!r}")
        return self


DEFAULT_POLICY = Policy()


class PolicyError(ValueError):
    """A policy that cannot be used; `field` is the dotted path of the first problem."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


def parse_policy(data: str | bytes | dict[str, Any]) -> Policy:
    """Validate a policy from JSON or YAML text or a mapping, with the field path in the error."""
    try:
        raw = _load(data) if isinstance(data, str | bytes) else data
        return Policy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = [str(p) for p in first["loc"] if p != "[key]"]  # pydantic marks a bad dict key with [key]
        message = str(first["msg"]).removeprefix("Value error, ")
        # Cross-field checks say where in their message ("rules[0].strategy: ..."): make that the path.
        found = re.match(r"^([A-Za-z_][\w.\[\]]*): ", message)
        if found:
            path += [p for p in re.split(r"[.\[\]]+", found.group(1)) if p]
            message = message[found.end() :]
        where = ".".join(path) or None
        raise PolicyError(f"{where or 'policy'}: {message}", where) from None
    except (yaml.YAMLError, ValueError) as exc:
        raise PolicyError(f"not YAML/JSON: {exc}", None) from None
    except RecursionError:
        raise PolicyError("not YAML/JSON: nested too deeply", None) from None


def _load(text: str | bytes) -> Any:
    """JSON first (YAML 1.1 would turn 1e-05 into a string and break surrogate-pair escapes), then YAML."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def dump_policy(policy: Policy, fmt: Literal["json", "yaml"] = "yaml") -> str:
    data = policy.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False)
