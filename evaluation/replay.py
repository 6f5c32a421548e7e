"""`leadrelay replay`: a recorded history re-decided with a candidate policy through the pure core
(routing.ledger.assign / close, as the route agent calls them), compared with what happened.

Each pool keeps the route agent's tables (reps, loads, performance, models, pool state, ledger) as
dicts and a frame built from them, and applies the history's events in time order: roster changes
as the roster stage fans them out, leads at the time the worker decided them (the recorded
`decided_at`, which is the `now` the worker passed to the core) and deals as they arrived. A deal
teaches the pool what happened: it is credited to the rep who really worked the lead (the
historical decision), not to the candidate's choice, whose outcome nobody knows; it releases the
candidate's holder, which is what the candidate's loads would have been.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from evaluation import offpolicy
from evaluation.history import History, RosterChange
from routing import fairness
from routing.frame import PoolFrame
from routing.learning import features
from routing.ledger import LedgerEntry, assign, close, cursor_after_leaving, with_member
from routing.model import Load, PoolState, Rep
from routing.policy import Policy
from routing.territory import TerritoryRule, resolve_pool
from schemas.events import AssignmentDecision, DealClosed, LeadCreated

SIZE_BANDS = (50, 250, 1000)


class _Pool:
    """One pool's tables, as the route agent keeps them, and the frame kept current from them."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.reps: dict[str, Rep] = {}
        self.loads: dict[str, Load] = {}
        self.buckets: dict[str, dict[str, list[float]]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.state = PoolState()
        self.ledger: dict[str, LedgerEntry] = {}
        self.ever: dict[str, Rep] = {}  # every rep the pool had, as last seen (capacity for fairness)
        self._frame: PoolFrame | None = None

    def frame(self) -> PoolFrame:
        if self._frame is None:
            reps = {r: self.reps[r] for r in self.state.members if r in self.reps}
            self._frame = PoolFrame(
                self.pool,
                reps,
                {r: self.loads.get(r) or Load() for r in reps},
                {r: b for r in reps if (b := self.buckets.get(r))},
                {r: m for r in reps if (m := self.models.get(r))},
                self.state,
            )
        return self._frame

    def on_rep(self, rep_id: str, profile: Any) -> None:
        """agents/route.py on_rep: the profile as this pool sees it, members in join order."""
        cursor = self.state.cursor
        if profile is None and cursor == rep_id:
            cursor = cursor_after_leaving(self.frame().rotation_ids(), cursor, rep_id)
        if profile is not None:
            self.reps[rep_id] = self.ever[rep_id] = Rep.from_event(profile, self.pool)
        else:
            self.reps.pop(rep_id, None)
        members = tuple(with_member(list(self.state.members), rep_id, profile is not None))
        self.state = replace(self.state, members=members, cursor=cursor)
        self._frame = None  # structural change: rebuilt on the next lead

    def decide(self, lead: LeadCreated, policy: Policy, now: datetime) -> AssignmentDecision:
        frame = self.frame()
        result = assign(lead, frame, policy, None, now=now)
        self.ledger[lead.lead_id] = result.entry
        if result.load is not None and result.decision.rep_id is not None:
            self.loads[result.decision.rep_id] = result.load
            frame.set_load(result.decision.rep_id, result.load)
        if result.state is not None:
            self.state = result.state
            frame.set_state(result.state)
        return result.decision

    def on_deal(self, deal: DealClosed, now: datetime, learn: bool) -> bool:
        """agents/route.py on_deal; False when the deal matched nothing here (the worker dead-letters it).
        `learn` False: nobody knows who worked the lead, so the outcome releases the load and teaches
        nothing."""
        entry = self.ledger.get(deal.lead_id)
        if entry is None and deal.rep_id is None:
            return False
        holder = entry.rep_id if entry else None
        credited = deal.rep_id or holder
        load = self.loads.get(holder) if holder else None
        buckets = self.buckets.get(credited) if credited else None
        model = self.models.get(credited) if credited else None
        result = close(deal, entry, load, buckets, model, now=now)
        if result.duplicate:
            return True
        if result.entry is not None:
            self.ledger[deal.lead_id] = result.entry
        if result.released is not None:
            rep_id, new_load = result.released
            self.loads[rep_id] = new_load
            if self._frame is not None:
                self._frame.set_load(rep_id, new_load)
        if learn and result.credited is not None:
            if result.buckets is not None:
                self.buckets[result.credited] = result.buckets
                if self._frame is not None:
                    self._frame.set_buckets(result.credited, result.buckets)
            if result.model is not None:
                self.models[result.credited] = result.model
                if self._frame is not None:
                    self._frame.set_model(result.credited, result.model)
        return True


@dataclass
class Replayed:
    """One lead, decided again."""

    lead_id: str
    pool: str
    value: float
    segment: str
    historical: AssignmentDecision | None
    candidate: AssignmentDecision
    outcome: str | None = None  # won | lost | None (no deal)

    @property
    def agrees(self) -> bool:
        return self.historical is not None and self.historical.rep_id == self.candidate.rep_id


@dataclass
class ReplayRun:
    rows: list[Replayed] = field(default_factory=list)
    pools: dict[str, _Pool] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)


class Replayer:
    """Re-decides a history with one candidate policy, in the pools asked for (default: every pool)."""

    def __init__(
        self,
        policy: Policy,
        *,
        pools: Iterable[str] = (),
        rules: list[TerritoryRule] | None = None,
        default_pool: str = "default",
        segment_by: Iterable[str] = ("industry",),
    ) -> None:
        self.policy = policy
        self.only = set(pools)
        self.rules = rules or []
        self.default_pool = default_pool
        self.segment_by = list(segment_by)
        # Register, don't branch: one handler per kind of input event (evaluation/history.py KINDS).
        self.handlers: dict[str, Callable[[ReplayRun, datetime, Any], None]] = {
            "roster": self._on_roster,
            "deal": self._on_deal,
            "lead": self._on_lead,
        }

    def run(self, history: History) -> ReplayRun:
        self._history = _first_decisions(history.decisions)
        self._lead_ids = {lead.lead_id for _, lead in history.leads}
        self._rep_pools: dict[str, set[str]] = {}
        self._waiting: dict[str, list[tuple[datetime, DealClosed]]] = defaultdict(list)
        self._where: dict[str, Replayed] = {}
        out = ReplayRun()
        out.counts.update({f"skipped {k}": v for k, v in history.skipped.items()})
        for at, kind, record in history.timeline():
            self.handlers[kind](out, at, record)
        out.counts["deals never matched"] += sum(len(v) for v in self._waiting.values())
        return out

    def _pool(self, out: ReplayRun, name: str) -> _Pool | None:
        if self.only and name not in self.only:
            return None
        if name not in out.pools:
            out.pools[name] = _Pool(name)
        return out.pools[name]

    def _on_roster(self, out: ReplayRun, at: datetime, change: RosterChange) -> None:
        """ingest_roster: the profile to every pool it joins, a removal to every pool it leaves."""
        before = self._rep_pools.get(change.rep_id, set())
        after = set(change.profile.pools) if change.profile else set()
        for name in sorted(before | after):
            pool = self._pool(out, name)
            if pool is not None:
                pool.on_rep(change.rep_id, change.profile if name in after else None)
        self._rep_pools[change.rep_id] = after

    def _on_lead(self, out: ReplayRun, at: datetime, lead: LeadCreated) -> None:
        out.counts["leads in"] += 1
        if lead.lead_id in self._where:  # a re-sent lead: the worker re-emits its first decision
            out.counts["duplicate leads"] += 1
            return
        recorded = self._history.get(lead.lead_id)
        name = recorded.pool if recorded else resolve_pool(lead, self.rules, self.default_pool)[0]
        pool = self._pool(out, name)
        if pool is None:
            out.counts["leads in other pools"] += 1
            return
        now = recorded.decided_at if recorded else at
        decision = pool.decide(lead, self.policy, now)
        feats = features(lead, None, self.segment_by, SIZE_BANDS) if self.segment_by else []
        row = Replayed(lead.lead_id, name, lead.estimated_value or 0.0, "|".join([name, *feats]), recorded, decision)
        self._where[lead.lead_id] = row
        out.rows.append(row)
        for when, deal in self._waiting.pop(lead.lead_id, []):  # deals that came before their lead waited
            self._apply(out, pool, row, deal, max(when, now))

    def _on_deal(self, out: ReplayRun, at: datetime, deal: DealClosed) -> None:
        out.counts["deals in"] += 1
        row = self._where.get(deal.lead_id)
        if row is not None:
            pool = out.pools[row.pool]
            self._apply(out, pool, row, deal, at)
        elif deal.lead_id in self._lead_ids and deal.lead_id not in self._where:
            self._waiting[deal.lead_id].append((at, deal))
        elif deal.pool and deal.rep_id and (pool_ := self._pool(out, deal.pool)) is not None:
            pool_.on_deal(deal, at, learn=True)  # a lead leadrelay never decided: performance only
        else:
            out.counts["deals never matched"] += 1

    def _apply(self, out: ReplayRun, pool: _Pool, row: Replayed, deal: DealClosed, at: datetime) -> None:
        worked_by = deal.rep_id or (row.historical.rep_id if row.historical else None)
        if row.outcome is None:
            row.outcome = deal.outcome
        else:
            out.counts["duplicate deals"] += 1
        pool.on_deal(deal.model_copy(update={"rep_id": worked_by}), at, learn=worked_by is not None)


def _first_decisions(decisions: Iterable[AssignmentDecision]) -> dict[str, AssignmentDecision]:
    """The first decision of each lead (attempt 1; its first record when re-emitted)."""
    out: dict[str, AssignmentDecision] = {}
    for d in decisions:
        have = out.get(d.lead_id)
        if have is None or d.attempt < have.attempt:
            out[d.lead_id] = d
    return out


def _capacity(rep: Rep | None) -> float:
    return float(rep.capacity) if rep is not None and rep.capacity else 1.0


def _spread(counts: Mapping[str, float], capacity: Mapping[str, float]) -> float:
    """Coefficient of variation of leads per unit of capacity over the pool's reps (0 = even)."""
    x = np.array([counts.get(r, 0.0) / capacity[r] for r in capacity])
    return float(x.std() / x.mean()) if len(x) and x.mean() > 0 else 0.0


def summarize(run: ReplayRun, *, resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Agreement, load per rep and its spread, fairness and the off-policy estimate, as plain data."""
    compared = [r for r in run.rows if r.historical is not None]
    agree = sum(r.agrees for r in compared)
    pools: dict[str, Any] = {}
    for name, pool in sorted(run.pools.items()):
        rows = [r for r in run.rows if r.pool == name]
        reps = sorted(set(pool.ever) | {r.historical.rep_id for r in rows if r.historical and r.historical.rep_id})
        capacity = {r: _capacity(pool.ever.get(r)) for r in reps}
        load: dict[str, dict[str, float]] = {r: defaultdict(float) for r in reps}
        for r in rows:
            if r.historical is not None and r.historical.rep_id:
                load[r.historical.rep_id]["historical_leads"] += 1
                load[r.historical.rep_id]["historical_value"] += r.value
            if r.candidate.rep_id:
                load.setdefault(r.candidate.rep_id, defaultdict(float))["candidate_leads"] += 1
                load[r.candidate.rep_id]["candidate_value"] += r.value
        sides = {}
        for side in ("historical", "candidate"):
            leads = {r: load[r].get(f"{side}_leads", 0.0) for r in reps}
            value = [load[r].get(f"{side}_value", 0.0) / capacity[r] for r in reps]
            total = sum(leads.values())
            sides[side] = {
                "assigned": int(total),
                "spread": _spread(leads, capacity),
                "max_share": max(leads.values()) / total if total else 0.0,
                "value_gini": fairness.gini(value),
            }
        pool_compared = [r for r in rows if r.historical is not None]
        pools[name] = {
            "leads": len(rows),
            "compared": len(pool_compared),
            "agreement": sum(r.agrees for r in pool_compared) / len(pool_compared) if pool_compared else None,
            "capacity": capacity,
            "per_rep": {r: {k: float(v) for k, v in load[r].items()} for r in reps},
            **sides,
        }
    scored = [r for r in compared if r.historical and r.historical.rep_id and r.outcome is not None]
    estimate = offpolicy.estimate(
        [r.segment for r in scored],
        [f"{r.pool}|{r.historical.rep_id}" for r in scored if r.historical],
        [f"{r.pool}|{r.candidate.rep_id}" if r.candidate.rep_id else None for r in scored],
        [r.outcome == "won" for r in scored],
        resamples=resamples,
        seed=seed,
        alpha=alpha,
    )
    return {
        "leads": len(run.rows),
        "compared": len(compared),
        "agreement": agree / len(compared) if compared else None,
        "same_reason": sum(r.historical.reason == r.candidate.reason for r in compared if r.historical) / len(compared)
        if compared
        else None,
        "counts": dict(sorted(run.counts.items())),
        "pools": pools,
        "conversion": estimate.to_dict(),
    }
