"""`leadrelay verify`: read every topic back and check the delivery invariants (I1-I5, docs/architecture.md).

I1 every accepted lead has exactly one effective decision per attempt (or is in the DLQ), and no attempt
   goes to a rep that held the lead before (a follow-up reassignment excludes its previous holders)
I2 no rep ever held more open leads than its capacity: each decision's own facts, and a replay of the
   pool log counting open leads from the decisions and deals (independent of the worker's tables)
I3 the loads table (its changelog) equals a replay of the decision log (the latest attempt of a lead
   holds it; each reassignment released the silent holder; a duplicate, trigger duplicate_of, holds
   nothing), the closed deals and the closing activity
I4 no decision went to a rep that was unavailable or absent in the roster at that point: checked at the
   lead's own position in the pool log (the internal pool-events topic, where roster changes and leads
   are in the order the route agent saw them); a lead missing from that log falls back to the roster
   topic's timestamps (with ROSTER_SLACK_MS of overlap)
Claims: every valid leads.claims record is answered exactly once on leads.claim-results.
I5 no input offset was skipped: each leads.new record led to a decision or a DLQ record, and each
   deals.closed, leads.activity and leads.updated record reached its pool (pool-events) or the DLQ; every
   DLQ record says where it came from and why

Updates (docs/lifecycle.md): a move is a release in the old pool at the update's position in its log and
the next attempt in the new pool at the moved lead's position there; an update decided again in its pool
is replayed like a reassignment.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from routing import availability
from routing.decide import accepted
from routing.dedupe import TRIGGER as DUPLICATE_OF
from routing.model import Rep
from schemas.events import (
    CLOSING_KINDS,
    AssignmentDecision,
    ClaimResult,
    DealClosed,
    LeadActivity,
    LeadClaim,
    LeadCreated,
    RepUpdated,
)
from schemas.internal import POOL_EVENT, ActivityArrived, DealArrived, LeadArrived, LeadUpdated, RepChanged
from streams.kafka.changelog import namespace, read_table
from streams.kafka.clients import read_all
from streams.kafka.topics import home_partition, pool_events_topic
from streams.runtime.tables import changelog_topic
from streams.settings import Settings

ROSTER_SLACK_MS = 5000  # roster and decisions are different topics: allow this much clock overlap
Chains = dict[str, list[tuple[Any, AssignmentDecision]]]  # lead -> its effective decisions, by attempt


@dataclass
class Report:
    leads_in: int = 0
    valid_leads: int = 0
    decisions_out: int = 0
    dead_letters: int = 0
    duplicate_decisions: int = 0  # the same decision re-emitted: harmless, consumers dedupe on its id
    conflicting_decisions: list[str] = field(default_factory=list)  # a lead with two different owners
    repeated_holders: list[str] = field(default_factory=list)  # an attempt given to a previous holder
    reassignments: int = 0  # decisions of attempt 2 and later (follow-up timers)
    contact_duplicates: int = 0  # leads sent to the holder of an open lead of the same contact (no load)
    lost_leads: list[str] = field(default_factory=list)
    skipped_offsets: list[str] = field(default_factory=list)
    capacity_violations: list[str] = field(default_factory=list)
    unavailable_assignments: list[str] = field(default_factory=list)
    state_mismatches: list[str] = field(default_factory=list)
    skipped_deals: list[str] = field(default_factory=list)  # deals.closed offsets neither routed nor dead
    skipped_activity: list[str] = field(default_factory=list)  # leads.activity offsets neither routed nor dead
    updates_in: int = 0  # valid leads.updated records
    skipped_updates: list[str] = field(default_factory=list)  # leads.updated offsets neither routed nor dead
    claims_in: int = 0  # valid claims on leads.claims
    claim_answers: list[str] = field(default_factory=list)  # claims answered not exactly once
    unexplained_dead_letters: list[str] = field(default_factory=list)  # DLQ records without origin/reason
    internal_errors: int = 0  # DLQ records with reason internal_error: a bug was hit (not an invariant)
    checked_in_pool_log: int = 0  # decisions whose I4 check used the pool log (the rest: roster timestamps)
    checked_state: bool = False

    PROBLEMS = (
        "conflicting_decisions",
        "repeated_holders",
        "lost_leads",
        "capacity_violations",
        "state_mismatches",
        "unavailable_assignments",
        "skipped_offsets",
        "skipped_deals",
        "skipped_activity",
        "skipped_updates",
        "claim_answers",
        "unexplained_dead_letters",
    )

    def problems(self) -> dict[str, list[str]]:
        """Every failed check with its findings (empty when the run kept all invariants)."""
        return {name: getattr(self, name) for name in self.PROBLEMS if getattr(self, name)}

    @property
    def ok(self) -> bool:
        return not self.problems()

    def table(self) -> str:
        def row(name: str, value: Any, good: bool | None = None) -> str:
            mark = "" if good is None else ("ok" if good else "FAIL")
            return f"| {name:<34} | {value!s:>8} | {mark:<4} |"

        lines = [
            f"| {'check':<34} | {'count':>8} | {'':<4} |",
            f"|{'-' * 36}|{'-' * 10}|{'-' * 6}|",
            row("leads in (leads.new records)", self.leads_in),
            row("valid leads", self.valid_leads),
            row("decisions out (records)", self.decisions_out),
            row("dead letters", self.dead_letters),
            row("duplicate decisions (same id)", self.duplicate_decisions, True),
            row("I1 conflicting decisions", len(self.conflicting_decisions), not self.conflicting_decisions),
            row("reassignments (attempt > 1)", self.reassignments),
            row("duplicates (trigger duplicate_of)", self.contact_duplicates),
            row("I1 attempt to a previous holder", len(self.repeated_holders), not self.repeated_holders),
            row("I1 lost leads", len(self.lost_leads), not self.lost_leads),
            row("I2 capacity violations", len(self.capacity_violations), not self.capacity_violations),
            row(
                "I3 state != replay" + ("" if self.checked_state else " (not checked)"),
                len(self.state_mismatches),
                not self.state_mismatches,
            ),
            row("I4 assigned while unavailable", len(self.unavailable_assignments), not self.unavailable_assignments),
            row("I4 decisions checked in pool log", self.checked_in_pool_log),
            row("I5 skipped input offsets", len(self.skipped_offsets), not self.skipped_offsets),
            row("I5 deals neither routed nor DLQ", len(self.skipped_deals), not self.skipped_deals),
            row("I5 activity neither routed nor DLQ", len(self.skipped_activity), not self.skipped_activity),
            row("updates in (valid)", self.updates_in),
            row("I5 updates neither routed nor DLQ", len(self.skipped_updates), not self.skipped_updates),
            row("I5 DLQ records without reason", len(self.unexplained_dead_letters), not self.unexplained_dead_letters),
            row("claims in (valid)", self.claims_in),
            row("claims not answered exactly once", len(self.claim_answers), not self.claim_answers),
            row("internal errors (DLQ)", self.internal_errors),
        ]
        return "\n".join(lines)


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


async def collect(settings: Settings) -> dict[str, list[Any]]:
    topics = {
        "leads": settings.topic_leads_new,
        "updates": settings.topic_leads_updated,
        "deals": settings.topic_deals_closed,
        "activity": settings.topic_lead_activity,
        "claims": settings.topic_claims,
        "claim_results": settings.topic_claim_results,
        "roster": settings.topic_reps_roster,
        "decisions": settings.topic_assignments,
        "dlq": settings.topic_dlq,
        "route": changelog_topic(settings.app_id, "route"),
        "pool_events": pool_events_topic(settings),
    }
    results = await asyncio.gather(*(read_all(settings, t) for t in topics.values()))
    return dict(zip(topics, results, strict=True))


def check(records: dict[str, list[Any]], settings: Settings, *, check_state: bool = True) -> Report:
    report = Report(leads_in=len(records["leads"]), decisions_out=len(records["decisions"]))
    report.dead_letters = len(records["dlq"])
    dead = _dead_letters(report, records["dlq"])
    dead_offsets = dead.get(settings.topic_leads_new, set())
    pool_log = _parse_pool_log(records.get("pool_events") or [])

    decisions: dict[str, list[tuple[Any, AssignmentDecision]]] = defaultdict(list)
    for r in records["decisions"]:
        d = AssignmentDecision.model_validate_json(r.value)
        decisions[d.lead_id].append((r, d))

    first: dict[str, tuple[Any, AssignmentDecision]] = {}
    for lead_id, items in decisions.items():
        # One lead id, one effective decision per attempt: the same owner in the same pool under one id.
        # A re-sent lead decided again in another pool (same decision_id, maybe another rep) is a
        # conflict even when the rep happens to be the same: it holds a second load.
        for attempt in sorted({d.attempt for _, d in items}):
            owners = {(d.decision_id, d.pool, d.rep_id) for _, d in items if d.attempt == attempt}
            if len(owners) > 1:
                report.conflicting_decisions.append(f"{lead_id}: attempt {attempt}: {sorted(map(str, owners))}")
        report.duplicate_decisions += len(items) - len({d.decision_id for _, d in items})
        first[lead_id] = min(items, key=lambda item: (item[1].attempt, item[0].timestamp))
    chains = _chains(report, decisions)

    seen_leads = set()
    for r in records["leads"]:
        where = (r.partition, r.offset)
        try:
            lead = LeadCreated.model_validate_json(r.value) if r.value is not None else None
        except ValidationError:
            lead = None
        if lead is not None and len(r.value) <= settings.max_payload_bytes:
            report.valid_leads += 1
            seen_leads.add(lead.lead_id)
            if lead.lead_id not in first:
                report.lost_leads.append(lead.lead_id)
            continue
        if where not in dead_offsets:
            report.skipped_offsets.append(f"{settings.topic_leads_new}[{r.partition}]@{r.offset}")

    _check_capacity(report, chains)
    _check_availability(report, first, chains, records["roster"], pool_log, settings.partitions)
    dead_deals = dead.get(settings.topic_deals_closed, set())
    _check_deals_routed(report.skipped_deals, records["deals"], dead_deals, pool_log, settings.topic_deals_closed)
    topic = settings.topic_lead_activity
    _check_deals_routed(report.skipped_activity, records.get("activity") or [], dead.get(topic, set()), pool_log, topic)
    _check_updates(report, records.get("updates") or [], dead, pool_log, settings, first)
    _check_claims(report, records.get("claims") or [], records.get("claim_results") or [])
    if check_state:
        report.checked_state = True
        route = read_table(records.get("route") or [])
        live_deals = [r for r in records["deals"] if (r.partition, r.offset) not in dead_deals]
        dead_acts = dead.get(settings.topic_lead_activity, set())
        live_acts = [r for r in records.get("activity") or [] if (r.partition, r.offset) not in dead_acts]
        _check_state(report, chains, live_deals, live_acts, namespace(route, "loads"))
        if records.get("pool_events"):
            _check_reps_state(report, pool_log, namespace(route, "reps"))
    return report


def _chains(report: Report, decisions: dict[str, list[tuple[Any, AssignmentDecision]]]) -> Chains:
    """Each lead's effective decisions in attempt order (the first record of each attempt); an attempt whose
    rep held the lead at an earlier attempt is reported (I1: reassignment excludes previous holders), unless
    the rep claimed it back from the open pool (allowed after the policy's cooldown)."""
    chains: Chains = {}
    for lead_id, items in decisions.items():
        by_attempt: dict[int, tuple[Any, AssignmentDecision]] = {}
        for r, d in sorted(items, key=lambda item: (item[1].attempt, item[0].timestamp)):
            by_attempt.setdefault(d.attempt, (r, d))
        chain = [by_attempt[a] for a in sorted(by_attempt)]
        held: list[str] = []
        for _, d in chain:
            repeated = d.rep_id is not None and (d.rep_id in held or d.rep_id in (d.previous_holders or ()))
            if repeated and d.trigger != "claim":  # a previous holder may claim it back after its cooldown
                report.repeated_holders.append(f"{lead_id}: attempt {d.attempt} -> {d.rep_id}, held before: {held}")
            if d.rep_id is not None:
                held.append(d.rep_id)
            report.reassignments += d.attempt > 1
            report.contact_duplicates += d.trigger == DUPLICATE_OF
        chains[lead_id] = chain
    return chains


def _dead_letters(report: Report, dlq: list[Any]) -> dict[str, set[tuple[int, int]]]:
    """Source offsets of the DLQ records per source topic; records that do not say where from or why are
    reported (an operator could neither replay nor triage them)."""
    dead: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for r in dlq:
        h = _headers(r)
        reason = h.get("x-leadrelay-reason")
        try:
            where = (int(h["x-leadrelay-source-partition"]), int(h["x-leadrelay-source-offset"]))
            topic = h["x-leadrelay-source-topic"]
        except (KeyError, ValueError):
            report.unexplained_dead_letters.append(f"dlq[{r.partition}]@{r.offset}: no source headers")
            continue
        if not reason:
            report.unexplained_dead_letters.append(f"dlq[{r.partition}]@{r.offset}: no reason")
        if reason == "internal_error":
            report.internal_errors += 1
        dead[topic].add(where)
    return dead


@dataclass
class _PoolLog:
    """The pool-events topic parsed, each partition in offset order (what the route agent saw), with each
    record's timestamp (ms)."""

    partitions: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    origins: set[tuple[str, int, int]] = field(default_factory=set)  # of the deals and activity it holds


def _parse_pool_log(records: list[Any]) -> _PoolLog:
    log = _PoolLog()
    by_partition: dict[int, list[tuple[int, int, Any]]] = defaultdict(list)
    for r in records:
        try:
            ev = POOL_EVENT.validate_json(r.value) if r.value else None
        except ValidationError:
            continue
        if isinstance(ev, DealArrived | ActivityArrived | LeadUpdated | LeadArrived) and ev.origin is not None:
            log.origins.add((ev.origin.topic, ev.origin.partition, ev.origin.offset))
        if isinstance(ev, LeadArrived | LeadUpdated | RepChanged | DealArrived | ActivityArrived):
            by_partition[r.partition].append((r.offset, r.timestamp, ev))
    log.partitions = {
        p: [(ts, ev) for _, ts, ev in sorted(items, key=lambda x: x[0])] for p, items in by_partition.items()
    }
    return log


def _check_updates(
    report: Report,
    records: list[Any],
    dead: dict[str, set[tuple[int, int]]],
    pool_log: _PoolLog,
    settings: Settings,
    first: dict[str, tuple[Any, AssignmentDecision]],
) -> None:
    """I5 for leads.updated: each record reached a pool's log (as an update, or as the lead's first sight)
    or the DLQ; a valid update's lead has a decision (an update of an unknown lead is its first sight)."""
    topic = settings.topic_leads_updated
    _check_deals_routed(report.skipped_updates, records, dead.get(topic, set()), pool_log, topic)
    for r in records:
        try:
            lead = LeadCreated.model_validate_json(r.value) if r.value is not None else None
        except ValidationError:
            continue
        if lead is not None and len(r.value) <= settings.max_payload_bytes:
            report.updates_in += 1
            if lead.lead_id not in first and lead.lead_id not in report.lost_leads:
                report.lost_leads.append(lead.lead_id)


def _check_deals_routed(
    skipped: list[str], records: list[Any], dead: set[tuple[int, int]], pool_log: _PoolLog, topic: str
) -> None:
    """I5 for deals and activity: each record reached its lead's pool log or the DLQ."""
    for r in records:
        if (r.partition, r.offset) not in dead and (topic, r.partition, r.offset) not in pool_log.origins:
            skipped.append(f"{topic}[{r.partition}]@{r.offset}")


def _available(profile: RepUpdated | None, d: AssignmentDecision) -> bool:
    """The rep could take the decision's lead: active, in the pool, and available (or in a state the
    policy's availability tiers accepted for this decision, as its explanation says)."""
    if profile is None or not profile.active or d.pool not in profile.pools:
        return False
    return profile.availability == "available" or accepted(profile.availability) in d.explanation.relaxed


def _capacity(profile: RepUpdated | None, pool: str) -> float:
    """The rep's capacity in this pool as the worker sees it (`pool_capacity` over `capacity`, through
    the same Rep.from_event the route agent stores); None there means unlimited."""
    if profile is None:
        return 0
    capacity = Rep.from_event(profile, pool).capacity
    return float("inf") if capacity is None else capacity


def _holds(d: AssignmentDecision) -> bool:
    """Whether the decision gives its rep one more open lead: a duplicate joined a lead the rep holds already."""
    return d.rep_id is not None and d.trigger != DUPLICATE_OF


def _closes(ev: Any) -> bool:
    return isinstance(ev, DealArrived) or (isinstance(ev, ActivityArrived) and ev.activity.kind in CLOSING_KINDS)


def _lead_of(ev: Any) -> str:
    if isinstance(ev, LeadArrived | LeadUpdated):
        return ev.lead.lead_id
    return ev.deal.lead_id if isinstance(ev, DealArrived) else str(ev.activity.lead_id)


@dataclass
class _Replay:
    """One pool-log partition replayed: who holds which lead, and how many open leads each rep has."""

    report: Report
    first: dict[str, AssignmentDecision]
    checked: set[str]
    attempts: dict[tuple[str, int], AssignmentDecision] = field(default_factory=dict)  # the moved-in ones
    profiles: dict[tuple[str, str], RepUpdated | None] = field(default_factory=dict)
    open_: Counter[tuple[str, str]] = field(default_factory=Counter)
    holder: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    waiting: set[str] = field(default_factory=set)  # seen in the log without a rep: a later attempt may take it

    def release(self, lead_id: str, d: AssignmentDecision, silent: str | None) -> None:
        """A reassignment's silent holder (or a holder an update no longer fits) lets go of the lead."""
        if lead_id not in self.closed and silent is not None and self.holder.get(lead_id) == (d.pool, silent):
            self.open_[(d.pool, silent)] -= 1
            self.holder[lead_id] = None

    def move_out(self, lead_id: str, pool: str) -> None:
        """An update moved the lead out of `pool` (at the update's place in that pool's log): its holder
        there lets go of it. An update that found the lead closed or moved on already changes nothing."""
        held = self.holder.get(lead_id)
        if lead_id not in self.closed and held is not None and held[0] == pool:
            self.open_[held] -= 1
            self.holder[lead_id] = None
        self.waiting.discard(lead_id)

    def take(self, lead_id: str, d: AssignmentDecision) -> None:
        """A reassignment's new holder takes the lead (also a lead that had no holder yet: capacity freed,
        a claim, a claim window)."""
        if lead_id in self.waiting and lead_id not in self.closed:
            self.waiting.discard(lead_id)
            self.checked.add(lead_id)
        if lead_id not in self.closed and lead_id in self.checked and d.rep_id is not None:
            self.open_[(d.pool, d.rep_id)] += 1
            self.holder[lead_id] = (d.pool, d.rep_id)

    def close(self, lead_id: str) -> None:
        if lead_id in self.waiting:
            self.waiting.discard(lead_id)
            self.closed.add(lead_id)
        if lead_id in self.checked and lead_id not in self.closed:
            self.closed.add(lead_id)
            held = self.holder.get(lead_id)
            if held is not None:
                self.open_[held] -= 1

    def arrive(self, lead_id: str, d: AssignmentDecision) -> None:
        """The lead's first position in the log: its first decision's rep must be available and not full."""
        if lead_id in self.checked:
            return
        self.hold(lead_id, d)

    def move_in(self, lead_id: str, d: AssignmentDecision) -> None:
        """A moved lead's position in its new pool's log: decided there like a first sight."""
        self.waiting.discard(lead_id)
        self.hold(lead_id, d)

    def hold(self, lead_id: str, d: AssignmentDecision) -> None:
        """The decision's rep takes the lead here; it must be available and not full."""
        if d.rep_id is None:
            self.waiting.add(lead_id)
            return
        self.checked.add(lead_id)
        held = (d.pool, d.rep_id)
        profile = self.profiles.get(held)
        if not _available(profile, d):
            self.report.unavailable_assignments.append(f"{lead_id} -> {d.rep_id}")
        if not _holds(d):
            self.holder[lead_id] = None
            return
        self.holder[lead_id] = held
        self.open_[held] += 1
        capacity = _capacity(profile, d.pool)
        if self.open_[held] > capacity:
            self.report.capacity_violations.append(
                f"{lead_id} -> {d.rep_id}: {self.open_[held]} open > capacity {capacity} (pool log replay)"
            )

    def event(self, ev: Any) -> None:
        if isinstance(ev, RepChanged):
            self.profiles[(ev.pool, ev.rep_id)] = ev.profile
            return
        if isinstance(ev, ActivityArrived) and not _closes(ev):
            return
        lead_id = _lead_of(ev)
        if isinstance(ev, LeadUpdated):
            if ev.to_pool != ev.pool:
                self.move_out(lead_id, ev.pool)
            return
        if isinstance(ev, LeadArrived) and ev.attempt is not None:
            moved = self.attempts.get((lead_id, ev.attempt))
            if moved is not None and moved.pool == ev.pool:
                self.move_in(lead_id, moved)
            return
        d = self.first.get(lead_id)
        if d is None:
            return
        held = self.holder.get(lead_id)
        if _closes(ev) and (d.pool == ev.pool or (held is not None and held[0] == ev.pool)):
            self.close(lead_id)
        elif not _closes(ev) and d.pool == ev.pool:
            self.arrive(lead_id, d)


def _replay_pool_log(report: Report, chains: Chains, pool_log: _PoolLog, partitions: int) -> set[str]:
    """Replay each pool's log as the route agent saw it, with the effective decisions: at a lead's first
    position the chosen rep must be in the pool and available (I4) and hold fewer open leads than its
    capacity then (I2, counted from the decisions, deals and closing activity, not from the worker's
    tables: a table that lost writes cannot vouch for itself).

    A hand-back (trigger rep_left / rep_unavailable) is decided at the roster record that caused it, with
    that record's log time: the replay applies it right after that record. Other reassignments are not in
    the pool log (a timer fired, or capacity freed): the replay lets one release its silent holder at the
    first event up to ROSTER_SLACK_MS after it and count the new holder only from the first event
    ROSTER_SLACK_MS after it, so clock overlap can hide an overload but never invent one (each
    reassignment's own facts are checked too). A lead's attempts always apply in order: a release waits
    for nothing, it first applies the lead's earlier takes still held back by the slack."""
    first = {lead_id: chain[0][1] for lead_id, chain in chains.items()}
    moved = {(lead_id, d.attempt): d for lead_id, chain in chains.items() for _, d in chain if d.trigger == "moved"}
    checked: set[str] = set()
    for partition, events in pool_log.partitions.items():
        steps = sorted(
            ((round(d.decided_at.timestamp() * 1000), lead_id, d.attempt), d, prev.rep_id)
            for lead_id, chain in chains.items()
            for (_, prev), (_, d) in itertools.pairwise(chain)
            # Moves are in the pool logs (the update in the old pool, the lead in the new one): replayed
            # there. Every other pair is in one pool (a later attempt stays in its pool).
            if home_partition(d.pool, partitions) == partition and d.trigger != "moved"
        )
        _Attempts(_Replay(report, first, checked, moved), steps).replay(events)
    report.checked_in_pool_log = len(checked)
    return checked


class _Attempts:
    """The later attempts of one pool-log partition's leads, applied to its replay in log order."""

    def __init__(self, replay: _Replay, steps: list[Any]) -> None:
        self.r = replay
        self.at_roster: dict[tuple[str, str | None, int], list[Any]] = defaultdict(list)
        self.timed: list[Any] = []
        self.by_lead: dict[str, list[Any]] = defaultdict(list)
        self.taken: set[tuple[str, int]] = set()
        for step in steps:
            (ts_ms, lead_id, _), d, silent = step
            self.by_lead[lead_id].append(step)
            if d.trigger in (availability.LEFT, availability.UNAVAILABLE):
                self.at_roster[(d.pool, silent, ts_ms)].append(step)
            else:
                self.timed.append(step)

    def take(self, step: Any) -> None:
        (_, lead_id, attempt), d, _ = step
        if (lead_id, attempt) not in self.taken:
            self.taken.add((lead_id, attempt))
            self.r.take(lead_id, d)

    def release(self, step: Any) -> None:
        (_, lead_id, attempt), d, silent = step
        for earlier in self.by_lead[lead_id]:  # a lead's attempts apply in order
            if earlier[0][2] < attempt:
                self.take(earlier)
        self.r.release(lead_id, d, silent)

    def replay(self, events: list[tuple[int, Any]]) -> None:
        releases, takes = deque(self.timed), deque(self.timed)
        for ts, ev in events:
            while releases and releases[0][0][0] <= ts + ROSTER_SLACK_MS:
                self.release(releases.popleft())
            while takes and takes[0][0][0] <= ts - ROSTER_SLACK_MS:
                self.take(takes.popleft())
            self.r.event(ev)
            if isinstance(ev, RepChanged):  # the hand-backs this roster record caused, right after it
                for step in self.at_roster.pop((ev.pool, ev.rep_id, ts), []):
                    self.release(step)
                    self.take(step)
        for leftover in self.at_roster.values():  # their roster record was not found: at the end
            for step in leftover:
                self.release(step)
                self.take(step)


def _check_capacity(report: Report, chains: Chains) -> None:
    for lead_id, chain in chains.items():
        for _, d in chain:
            chosen = d.explanation.chosen
            if _holds(d) and chosen and chosen.facts.get("open", 0) >= chosen.facts.get("capacity", float("inf")):
                report.capacity_violations.append(f"{lead_id} -> {d.rep_id} (attempt {d.attempt}) with {chosen.facts}")


def _check_availability(
    report: Report,
    first: dict[str, tuple[Any, AssignmentDecision]],
    chains: Chains,
    roster: list[Any],
    pool_log: _PoolLog,
    partitions: int,
) -> None:
    in_log = _replay_pool_log(report, chains, pool_log, partitions)
    timeline: dict[str, list[tuple[int, RepUpdated | None]]] = defaultdict(list)
    for r in roster:
        rep_id = r.key.decode() if r.key else None
        if rep_id is None:
            continue
        try:
            profile = RepUpdated.model_validate_json(r.value) if r.value else None
        except ValidationError:
            continue
        timeline[rep_id].append((r.timestamp, profile))
    # First decisions not found in the pool log, and every reassignment (a timer's, not in the pool log),
    # against the roster topic's timestamps.
    by_roster = [(lead_id, item) for lead_id, item in first.items() if lead_id not in in_log]
    by_roster += [(lead_id, item) for lead_id, chain in chains.items() for item in chain[1:]]
    for lead_id, (record, d) in by_roster:
        if not d.rep_id:
            continue
        history = sorted(timeline.get(d.rep_id, []), key=lambda x: x[0])
        # The state that was certainly in force: the last change older than the slack.
        settled = [p for ts, p in history if ts <= record.timestamp - ROSTER_SLACK_MS]
        recent = [p for ts, p in history if record.timestamp - ROSTER_SLACK_MS < ts <= record.timestamp]
        candidates = ([settled[-1]] if settled else []) + recent
        fine = any(_available(p, d) for p in candidates)
        if not fine:  # also a rep the roster never had
            report.unavailable_assignments.append(f"{lead_id} -> {d.rep_id}")


def _check_state(
    report: Report, chains: Chains, deals: list[Any], activity: list[Any], loads: dict[str, bytes]
) -> None:
    """Each lead's latest attempt holds one open lead of its rep (every reassignment released the one
    before), until a deal or a closing activity closes it; a duplicate holds none."""
    expected: Counter[str] = Counter()
    owner: dict[str, str] = {}
    for lead_id, chain in chains.items():
        d = chain[-1][1]
        if _holds(d):
            key = f"{d.pool}|{d.rep_id}"
            expected[key] += 1
            owner[lead_id] = key
    closing = set()
    for r in deals:
        try:
            closing.add(DealClosed.model_validate_json(r.value).lead_id)
        except (ValidationError, TypeError):
            continue
    for r in activity:
        try:
            act = LeadActivity.model_validate_json(r.value)
        except (ValidationError, TypeError):
            continue
        if act.kind in CLOSING_KINDS:
            closing.add(act.lead_id)
    for lead_id in closing & set(owner):
        expected[owner[lead_id]] -= 1
    actual = {key: int(orjson.loads(value).get("open", 0)) for key, value in loads.items()}
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key, 0) != actual.get(key, 0):
            report.state_mismatches.append(f"{key}: table {actual.get(key, 0)} != replay {expected.get(key, 0)}")


def _check_claims(report: Report, claims: list[Any], results: list[Any]) -> None:
    """Every valid claim answered exactly once (a claim whose record is invalid is dead-lettered instead)."""
    asked: Counter[tuple[str, str]] = Counter()
    for r in claims:
        try:
            c = LeadClaim.model_validate_json(r.value)
        except (ValidationError, TypeError):
            continue
        asked[(c.lead_id, c.claim_id)] += 1
    answered: Counter[tuple[str, str]] = Counter()
    for r in results:
        a = ClaimResult.model_validate_json(r.value)
        answered[(a.lead_id, a.claim_id)] += 1
    report.claims_in = sum(asked.values())
    for lead_id, claim_id in sorted(set(asked) | set(answered)):
        n, m = asked[(lead_id, claim_id)], answered[(lead_id, claim_id)]
        if n != m:
            report.claim_answers.append(f"{lead_id} claim {claim_id}: {n} claim(s), {m} answer(s)")


def verify(settings: Settings, *, check_state: bool = True) -> Report:
    return check(asyncio.run(collect(settings)), settings, check_state=check_state)


def _check_reps_state(report: Report, pool_log: _PoolLog, reps: dict[str, bytes]) -> None:
    """I3 for the roster: the reps table equals the last profile each pool's log gave each rep (a roster
    change the route agent never applied would silently keep a rep out of, or in, a pool). The expected
    row is the rep as that pool sees it (its `pool_capacity`), built by the same Rep.from_event."""
    expected: dict[str, Rep | None] = {}
    for events in pool_log.partitions.values():
        for _, ev in events:
            if isinstance(ev, RepChanged):
                expected[f"{ev.pool}|{ev.rep_id}"] = None if ev.profile is None else Rep.from_event(ev.profile, ev.pool)
    actual = {key: orjson.loads(value) for key, value in reps.items()}
    for key in sorted(set(expected) | set(actual)):
        rep, row = expected.get(key), actual.get(key)
        want = None if rep is None else (rep.capacity, rep.availability, rep.active)
        have = None if row is None else (row.get("capacity"), row.get("availability"), row.get("active"))
        if want != have:
            report.state_mismatches.append(f"reps {key}: table {have} != pool log {want}")
