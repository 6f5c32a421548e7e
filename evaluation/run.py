"""`leadrelay simulate`: policies through the pure core (routing.ledger.assign / close, as the worker
calls them) on a synthetic closed-loop market, against round robin and an oracle that knows the truth."""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.market import Market, MarketConfig, build
from routing import fairness
from routing.frame import PoolFrame, day_keys
from routing.ledger import OPEN, LedgerEntry, assign, close
from routing.model import PoolState
from routing.policy import Policy, PolicyError, parse_policy
from schemas.events import DealClosed, LeadCreated

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "deploy" / "policies"
OVERLOADED = 0.75  # a lead taken at this share of capacity or more counts as taken while overloaded
ORACLE = "oracle"
BASELINE = "round-robin"

# name -> (file in deploy/policies, changes to its top level): the comparison of docs/evaluation.md.
DEFAULT_POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    BASELINE: ("weighted-rotation.yaml", {}),
    "least-loaded": ("frappe-load-balancing.yaml", {}),
    "value-tiers": ("value-tiers.yaml", {}),
    "tags": ("capability-tags.yaml", {}),
    "performance": ("performance-growth.yaml", {}),
    "full": ("full.yaml", {"experiment": None}),
    "learning": ("learning.yaml", {}),
    "learning-no-tags": ("learning-no-tags.yaml", {}),
    "learning-no-bounds": ("learning.yaml", {"bounds": None}),
    "learning-no-growth": ("learning.yaml", {"growth": None}),
    "learning-no-bounds-no-growth": ("learning.yaml", {"bounds": None, "growth": None}),
}


@dataclass
class Result:
    policy: str
    seed: int
    leads: int = 0
    assigned: int = 0
    won: int = 0
    revenue: float = 0.0
    overloaded: int = 0
    junior_leads: int = 0
    value_gini: float = 0.0
    per_rep: dict[str, dict[str, float]] = field(default_factory=dict)
    monthly_won: list[int] = field(default_factory=list)
    monthly_leads: list[int] = field(default_factory=list)

    @property
    def conversion(self) -> float:
        return self.won / self.leads if self.leads else 0.0

    @property
    def junior_share(self) -> float:
        return self.junior_leads / self.assigned if self.assigned else 0.0

    @property
    def overload_rate(self) -> float:
        return self.overloaded / self.assigned if self.assigned else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(conversion=self.conversion, junior_share=self.junior_share, overload_rate=self.overload_rate)
        return out


class _Pool:
    """One pool's state as the route agent keeps it: tables (dicts) and the frame kept current."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.frame = PoolFrame("sim", market.reps, state=PoolState(members=tuple(market.reps)))
        self.ledger: dict[str, LedgerEntry] = {}
        self.buckets: dict[str, dict[str, list[float]]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.closes: list[tuple[datetime, str, bool]] = []  # (closed_at, lead_id, won): a heap

    def close_until(self, now: datetime | None) -> None:
        while self.closes and (now is None or self.closes[0][0] <= now):
            at, lead_id, won = heapq.heappop(self.closes)
            entry = self.ledger[lead_id]
            deal = DealClosed(
                lead_id=lead_id, outcome="won" if won else "lost", amount=entry.value if won else 0.0, closed_at=at
            )
            holder = entry.rep_id
            load = self.frame.loads[self.frame.index[holder]] if holder else None
            result = close(deal, entry, load, self.buckets.get(holder or ""), self.models.get(holder or ""), now=at)
            if result.entry is not None:
                self.ledger[lead_id] = result.entry
            if result.released is not None:
                self.frame.set_load(*result.released)
            if result.credited is not None and result.buckets is not None:
                self.buckets[result.credited] = result.buckets
                self.frame.set_buckets(result.credited, result.buckets)
            if result.credited is not None and result.model is not None:
                self.models[result.credited] = result.model
                self.frame.set_model(result.credited, result.model)

    def utilisation(self, rep_id: str) -> float:
        i = self.frame.index[rep_id]
        return float(self.frame.open[i] / self.frame.capacity[i])

    def step(self, lead: LeadCreated, policy: Policy | None) -> tuple[str | None, float, bool]:
        """Deals closed by the lead's time first, then the decision; the true outcome is drawn at the
        rep's load when it took the lead, and its deal closes later. (rep, its utilisation, won)."""
        now = lead.created_at
        self.close_until(now)
        loads = {r: self.utilisation(r) for r in self.frame.ids}
        rep = self.decide(lead, policy)
        if rep is None:
            return None, 0.0, False
        won = self.market.won(rep, lead, now, loads[rep])
        heapq.heappush(self.closes, (now + self.market.close_after(lead), lead.lead_id, won))
        return rep, loads[rep], won

    def decide(self, lead: LeadCreated, policy: Policy | None) -> str | None:
        if policy is None:
            return self._oracle(lead)
        result = assign(lead, self.frame, policy, None, now=lead.created_at)
        self.ledger[lead.lead_id] = result.entry
        if result.load is not None and result.decision.rep_id is not None:
            self.frame.set_load(result.decision.rep_id, result.load)
        if result.state is not None:
            self.frame.set_state(result.state)
        return result.decision.rep_id

    def _oracle(self, lead: LeadCreated) -> str | None:
        """Knows the truth: the rep with room whose true expected value, at its current load, is highest."""
        f, now, value = self.frame, lead.created_at, lead.estimated_value or 0.0
        room = [r for r in f.ids if f.open[f.index[r]] < f.capacity[f.index[r]]]
        if not room:
            self.ledger[lead.lead_id] = LedgerEntry(decision={}, status="unassigned", rep_id=None, value=value)
            return None
        rep = max(room, key=lambda r: (self.market.p_win(r, lead, now, self.utilisation(r)), r))
        today, week, _ = day_keys(now)
        i = f.index[rep]
        f.set_load(rep, f.loads[i].received(value, False, today, week, 0.0))
        self.ledger[lead.lead_id] = LedgerEntry(decision={}, status=OPEN, rep_id=rep, value=value)
        return rep


def simulate(market: Market, policy: Policy | None, name: str) -> Result:
    """One policy (None: the oracle) over the whole market, lead by lead in event time."""
    pool = _Pool(market)
    out = Result(name, market.seed)
    months = market.config.days // 30 + 1
    out.monthly_won, out.monthly_leads = [0] * months, [0] * months
    for lead in market.leads:
        month = int(market.day(lead.created_at) // 30)
        out.leads += 1
        out.monthly_leads[month] += 1
        rep, utilisation, won = pool.step(lead, policy)
        if rep is None:
            continue
        out.assigned += 1
        out.overloaded += utilisation >= OVERLOADED
        out.junior_leads += market.reps[rep].tier == "junior"
        stats = out.per_rep.setdefault(rep, {"leads": 0, "won": 0, "value": 0.0})
        stats["leads"] += 1
        stats["value"] += lead.estimated_value or 0.0
        if won:
            out.won += 1
            out.revenue += lead.estimated_value or 0.0
            out.monthly_won[month] += 1
            stats["won"] += 1
    pool.close_until(None)
    per_capacity = [out.per_rep.get(r, {}).get("value", 0.0) / (rep.capacity or 1) for r, rep in market.reps.items()]
    out.value_gini = fairness.gini(per_capacity)
    return out


def load_policies(files: Sequence[str] = ()) -> dict[str, Policy]:
    """The named policies to compare: the default set, or round robin plus the given files."""
    if not files:
        out = {}
        for name, (file, changes) in DEFAULT_POLICIES.items():
            data = parse_policy((POLICIES / file).read_text()).model_dump(mode="json", exclude_defaults=True)
            data.update(changes)
            out[name] = parse_policy(data)
        return out
    base, _ = DEFAULT_POLICIES[BASELINE]
    out = {BASELINE: parse_policy((POLICIES / base).read_text())}
    for file in files:
        try:
            out[Path(file).stem] = parse_policy(Path(file).read_text())
        except PolicyError as exc:
            raise PolicyError(f"policy file {file}: {exc}", exc.field) from None
    return out


def run(
    seeds: Sequence[int], policies: Mapping[str, Policy], config: MarketConfig | None = None, oracle: bool = True
) -> list[Result]:
    results = []
    for seed in seeds:
        market = build(seed, config)
        for name, policy in policies.items():
            results.append(simulate(market, policy, name))
        if oracle:
            results.append(simulate(market, None, ORACLE))
    return results


def summary(results: Sequence[Result]) -> dict[str, dict[str, float]]:
    """Per policy, means over seeds; lifts and shares against round robin of the same seed."""
    by_seed = {(r.policy, r.seed): r for r in results}
    names = list(dict.fromkeys(r.policy for r in results))
    out: dict[str, dict[str, float]] = {}
    for name in names:
        rows = [r for r in results if r.policy == name]
        base = [by_seed.get((BASELINE, r.seed)) for r in rows]
        oracle = [by_seed.get((ORACLE, r.seed)) for r in rows]
        lift = [r.conversion / b.conversion - 1 for r, b in zip(rows, base, strict=True) if b and b.conversion]
        junior = [r.junior_share / b.junior_share for r, b in zip(rows, base, strict=True) if b and b.junior_share]
        gap = [1 - r.conversion / o.conversion for r, o in zip(rows, oracle, strict=True) if o and o.conversion]
        out[name] = {
            "conversion": float(np.mean([r.conversion for r in rows])),
            "lift": float(np.mean(lift)) if lift else float("nan"),
            "lift_min": float(np.min(lift)) if lift else float("nan"),
            "lift_max": float(np.max(lift)) if lift else float("nan"),
            "revenue": float(np.mean([r.revenue for r in rows])),
            "value_gini": float(np.mean([r.value_gini for r in rows])),
            "value_gini_max": float(np.max([r.value_gini for r in rows])),
            "junior_share": float(np.mean([r.junior_share for r in rows])),
            "junior_vs_rr": float(np.mean(junior)) if junior else float("nan"),
            "junior_vs_rr_min": float(np.min(junior)) if junior else float("nan"),
            "overload_rate": float(np.mean([r.overload_rate for r in rows])),
            "gap_to_oracle": float(np.mean(gap)) if gap else float("nan"),
            "unassigned": float(np.mean([1 - r.assigned / r.leads for r in rows])),
        }
    return out


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `leadrelay simulate` command on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate", help="policies on a synthetic market with a hidden truth (docs/evaluation.md)"
    )
    p.add_argument("--seed", type=int, action="append", help="market seed, repeatable (default: 1 2 3)")
    p.add_argument(
        "--policy", action="append", help="policy file, repeatable (default: the comparison of docs/evaluation.md)"
    )
    p.add_argument(
        "--out", default="simulation", help="directory for report.md, results.json, *.png (default: %(default)s)"
    )
    p.add_argument("--days", type=int, default=MarketConfig.days, help="days of leads (default: %(default)s)")
    p.add_argument(
        "--leads-per-day",
        type=float,
        default=MarketConfig.leads_per_day,
        help="mean leads a day (default: %(default)s)",
    )
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts (default: drawn)")
    return p


def main(args: argparse.Namespace) -> int:
    from evaluation import report

    config = MarketConfig(days=args.days, leads_per_day=args.leads_per_day)
    seeds = args.seed or [1, 2, 3]
    try:
        policies = load_policies(args.policy or ())
    except OSError as exc:  # an installed copy has no deploy/policies: name the files instead
        print(f"leadrelay simulate: cannot read {exc.filename}: {exc.strerror} (pass --policy FILE)", file=sys.stderr)
        return 2
    except PolicyError as exc:  # one line naming the file and the field, like every other command
        print(f"leadrelay simulate: {exc}", file=sys.stderr)
        return 2
    results = run(seeds, policies, config)
    out = Path(args.out)
    written = report.write(out, results, summary(results), seeds, config, charts=not args.no_charts)
    print(report.table(summary(results)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
