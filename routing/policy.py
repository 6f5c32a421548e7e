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


FEATURE_NAMES = ("industry", "product", "country", "source", "language", "region", "company_size", "value_tier")
Feature = Annotated[
    str,
    StringConstraints(
        pattern=r"^(industry|product|country|source|language|region|company_size"
        r"|value_tier|attributes\.[A-Za-z0-9_.:-]{1,64})$"
    ),
]


class Learning(_Model):
    """The calibrated pair model P(won | lead, rep) (routing/pairmodel.py): which lead features it
    learns from, how fast old deals fade, and how strongly thin evidence is shrunk toward the rep's
    tier and the pool."""

    features: Annotated[list[Feature], Field(min_length=0, max_length=12)] = Field(
        default_factory=lambda: ["industry", "product", "company_size", "region", "value_tier"]
    )
    size_bands: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)] = Field(
        default_factory=lambda: [50, 250, 1000], description="company_size band boundaries, ascending"
    )
    half_life_days: Annotated[float, Field(gt=0, le=3650)] | None = Field(
        90.0, description="a deal's weight halves every this many days of event time; None = never forgets"
    )
    prior_won: Annotated[float, Field(gt=0)] = 1.0  # the pool's Beta prior
    prior_lost: Annotated[float, Field(gt=0)] = 3.0
    shrink: Annotated[float, Field(gt=0, le=1000)] = 8.0  # pseudo-deals pulling a rep (tier) to its tier (pool)
    feature_shrink: Annotated[float, Field(gt=0, le=1000)] = 6.0  # the same for a rep's rate on one feature
    tag_prior: Annotated[float, Field(ge=0, le=2)] = 0.15  # log-odds per declared tag level matching the lead
    # True: how much a declared tag is worth is learned from the pool's deals (tag_prior is its prior);
    # False: tag_prior is taken as it is. tag_prior 0 ignores declared tags altogether.
    learn_tags: bool = True
    load_bands: bool = True  # learn how conversion falls with the rep's load (its own units, no guesswork)

    @model_validator(mode="after")
    def _ascending(self) -> Learning:
        if self.size_bands != sorted(set(self.size_bands)):
            raise ValueError("size_bands: must be ascending and distinct")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a feature may be listed once")
        return self


class Objective(_Model):
    """Decide on expected value in the model's own units instead of a weighted mean of [0, 1] scores."""

    unit: Literal["probability", "revenue", "revenue_per_capacity"] = "revenue"
    # Opportunity cost of filling a rep, in the same units: load_cost x the pool's mean expected value
    # x the rep's open / capacity (a full rep costs load_cost leads' worth of expected value).
    load_cost: Annotated[float, Field(ge=0, le=10)] = 0.3


class Exploration(_Model):
    """Try reps whose strength is uncertain, within a budget of expected value given up per lead."""

    method: Literal["thompson", "ucb"] = "thompson"
    share: Share = 1.0  # fraction of leads (by hash of lead_id) on which exploring is allowed
    budget: Share = 0.15  # a lead may go to a rep whose expected value is at most this fraction below the best
    ucb_width: Annotated[float, Field(ge=0, le=5)] = 1.0  # ucb: mean + width x standard deviation
    min_deals: Annotated[float, Field(ge=0)] = 5.0  # reps with fewer (decayed) closed deals are explored first


class Bounds(_Model):
    """Fairness as a constraint: the selector takes the best rep that keeps these bounds (docs/policies.md)."""

    max_value_ratio: Annotated[float, Field(ge=1, le=100)] | None = Field(
        1.2, description="a rep's value received / its fair share (capacity x weight) may not pass this"
    )
    slack_leads: Annotated[float, Field(ge=1, le=100)] = 2.0  # leads' worth of value allowed above the ratio
    max_gini: Annotated[float, Field(ge=0, le=1)] | None = None  # of value per fair share, over active reps
    min_growth_ratio: Annotated[float, Field(ge=0, le=10)] | None = Field(
        None, description="growth reps' share of leads / their fair share may not fall below this"
    )
    min_leads: Annotated[int, Field(ge=0)] = 20  # gini and growth bounds apply once the pool handed out this many


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
    objective: Objective | None = Field(None, description="decide on expected value (needs the policy's learning)")
    exploration: Exploration | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> Strategy:
        if self.exploration is not None and self.objective is None:
            raise ValueError("exploration: needs an objective (it explores over the expected value)")
        if self.objective is not None and self.selector.type == "weighted_draw":
            raise ValueError("selector: an objective decides by argmax (exploration replaces weighted_draw)")
        if self.selector.type != "claim_pool" and self.objective is None and not any(self.scorers.values()):
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


Duration = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,5}(s|m|h|d)$")]  # "90s", "30m", "4h", "2d"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    return float(text[:-1]) * _UNIT_SECONDS[text[-1]]


class FollowUp(_Model):
    """Follow-up SLA (docs/lifecycle.md): a lead its rep has not touched (any `leads.activity`) within
    `within` is reassigned, its previous holders excluded; once `max_attempts` reps held it and the last one
    stayed silent too, it returns to the open pool (`sent_to_claim_pool`)."""

    within: Duration = Field(description='Time a holder has for the first touch: "90s", "30m", "4h", "2d"')
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        3, description="Assignments (reps) a lead gets at most before it returns to the open pool"
    )
    working_hours: bool = Field(False, description="Count `within` only in the holder's working hours")

    @property
    def seconds(self) -> float:
        return duration_seconds(self.within)


class Claims(_Model):
    """The open pool (docs/lifecycle.md): who may claim a lead there, and how many."""

    holding_limit: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        None, description="Open leads a rep may hold by claim in this pool at once; null = no limit"
    )
    cooldown: Duration | None = Field(
        None, description="A previous holder may claim the lead again only this long after it returned to the pool"
    )
    window: Duration | None = Field(
        None, description="Unclaimed this long, the pool's policy assigns the lead (previous holders excluded)"
    )


class Waiting(_Model):
    """Waiting for capacity (docs/lifecycle.md): a lead nobody could take because every rep that would
    qualify is full waits in its pool, highest value (or score) first, then oldest, until capacity frees."""

    max_wait: Duration | None = Field(
        None, description="Waiting this long, the lead goes to the open pool (claimable); null = no limit"
    )


class Updates(_Model):
    """Lead updates (docs/lifecycle.md): what an open lead must still satisfy to keep its holder when a new
    version of it arrives and it stays in this pool."""

    holder_must_fit: bool = Field(
        True,
        description="The holder must still pass the strategy's structural checks for the new version (value"
        " tier's allowed rep tiers, must-have tags; the strategy's fallbacks count); otherwise the lead is"
        " released and decided again. false: an open lead always keeps its holder",
    )


Status = Literal["away", "offline", "inactive"]  # a rep's state other than available and active


class Availability(_Model):
    """What a rep's availability changes do to the leads it holds and to what it gets next
    (docs/lifecycle.md, "Availability changes")."""

    hand_back: list[Status] = Field(
        default_factory=list,
        description="A rep turning to one of these hands back its untouched open leads (reassigned, else the"
        " open pool); empty: it keeps them",
    )
    on_leave: Literal["reassign", "open_pool", "keep"] = Field(
        "reassign", description="A rep leaving the pool (or deleted from the roster): what happens to its open leads"
    )
    ramp_up: Duration | None = Field(
        None, description="A rep back from away/offline/inactive or out of office reaches full capacity over this"
    )
    ramp_start: Share = Field(0.25, description="The share of its capacity a returning rep has at once")
    tiers: Annotated[list[Literal["away", "offline"]], Field(max_length=2)] = Field(
        default_factory=list,
        description="When nobody available qualifies (after the strategy's relax chain), reps in these states"
        " are accepted, one more state at a time, in this order; empty: never",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Availability:
        if len(set(self.tiers)) != len(self.tiers) or len(set(self.hand_back)) != len(self.hand_back):
            raise ValueError("tiers and hand_back: a state may be listed once")
        return self

    @property
    def ramp_seconds(self) -> float | None:
        return duration_seconds(self.ramp_up) if self.ramp_up else None


DedupeKind = Literal["email", "phone", "domain"]
DEDUPE_DEFAULT: tuple[DedupeKind, ...] = ("email", "phone")  # a shared company domain is opt-in


class Dedupe(_Model):
    """Duplicates (docs/lifecycle.md): a lead whose dedupe key (a keyed hash of its normalised e-mail,
    phone or company domain) names a lead of this pool still open with an available holder, decided within
    `horizon`, goes to that holder (`trigger: duplicate_of`) and adds no load."""

    keys: Annotated[list[DedupeKind], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list(DEDUPE_DEFAULT), description="Key kinds looked up, in this order"
    )
    horizon: Duration = Field("30d", description='How long after its decision a lead takes duplicates: "30d"')

    @model_validator(mode="after")
    def _distinct(self) -> Dedupe:
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("dedupe.keys: a kind may be listed once")
        return self


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
    learning: Learning | None = Field(None, description="the calibrated pair model; None = the legacy counts")
    bounds: Bounds | None = Field(None, description="fairness bounds on argmax selection")
    follow_up: FollowUp | None = Field(None, description="follow-up SLA: reassign leads nobody touched")
    claims: Claims = Field(default_factory=Claims)
    waiting: Waiting | None = Field(None, description="leads everyone was too full for wait for capacity; None = off")
    updates: Updates = Field(default_factory=Updates)
    availability: Availability = Field(default_factory=Availability)
    dedupe: Dedupe | None = Field(None, description="duplicates go to the holder of the lead they repeat; None = off")

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
        if self.learning is None and any(s.objective for s in self.strategies.values()):
            raise ValueError("learning: a strategy with an objective needs the policy's `learning` section")
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
