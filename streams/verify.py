"""`leadrelay verify`: read every topic back and check the delivery invariants (design.md I1-I5).

I1 every accepted lead has exactly one effective decision (or is in the DLQ)
I2 no rep ever held more open leads than its capacity (each decision's own facts, and the final state)
I3 the loads table (its changelog) equals a replay of the decision log and the closed deals
I4 no decision went to a rep that was unavailable or absent in the roster at that point
I5 no input offset was skipped: each leads.new record led to a decision or a DLQ record
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import AssignmentDecision, DealClosed, LeadCreated, RepUpdated
from streams.clients import read_all
from streams.settings import Settings

ROSTER_SLACK_MS = 5000  # roster and decisions are different topics: allow this much clock overlap


@dataclass
class Report:
    leads_in: int = 0
    valid_leads: int = 0
    decisions_out: int = 0
    dead_letters: int = 0
    duplicate_decisions: int = 0  # the same decision re-emitted: harmless, consumers dedupe on its id
    conflicting_decisions: list[str] = field(default_factory=list)  # a lead with two different owners
    lost_leads: list[str] = field(default_factory=list)
    skipped_offsets: list[str] = field(default_factory=list)
    capacity_violations: list[str] = field(default_factory=list)
    unavailable_assignments: list[str] = field(default_factory=list)
    state_mismatches: list[str] = field(default_factory=list)
    checked_state: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.conflicting_decisions
            or self.lost_leads
            or self.skipped_offsets
            or self.capacity_violations
            or self.unavailable_assignments
            or self.state_mismatches
        )

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
            row("I1 lost leads", len(self.lost_leads), not self.lost_leads),
            row("I2 capacity violations", len(self.capacity_violations), not self.capacity_violations),
            row(
                "I3 state != replay" + ("" if self.checked_state else " (not checked)"),
                len(self.state_mismatches),
                not self.state_mismatches,
            ),
            row("I4 assigned while unavailable", len(self.unavailable_assignments), not self.unavailable_assignments),
            row("I5 skipped input offsets", len(self.skipped_offsets), not self.skipped_offsets),
        ]
        return "\n".join(lines)


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


async def collect(settings: Settings) -> dict[str, list[Any]]:
    topics = {
        "leads": settings.topic_leads_new,
        "deals": settings.topic_deals_closed,
        "roster": settings.topic_reps_roster,
        "decisions": settings.topic_assignments,
        "dlq": settings.topic_dlq,
        "loads": f"{settings.app_id}-loads-changelog",
    }
    results = await asyncio.gather(*(read_all(settings, t) for t in topics.values()))
    return dict(zip(topics, results, strict=True))


def check(records: dict[str, list[Any]], settings: Settings, *, check_state: bool = True) -> Report:
    report = Report(leads_in=len(records["leads"]), decisions_out=len(records["decisions"]))
    report.dead_letters = len(records["dlq"])
    dead_offsets = set()
    for r in records["dlq"]:
        h = _headers(r)
        if h.get("x-leadrelay-source-topic") == settings.topic_leads_new:
            dead_offsets.add((int(h["x-leadrelay-source-partition"]), int(h["x-leadrelay-source-offset"])))

    decisions: dict[str, list[tuple[Any, AssignmentDecision]]] = defaultdict(list)
    for r in records["decisions"]:
        d = AssignmentDecision.model_validate_json(r.value)
        decisions[d.lead_id].append((r, d))

    first: dict[str, tuple[Any, AssignmentDecision]] = {}
    for lead_id, items in decisions.items():
        owners = {(d.decision_id, d.rep_id) for _, d in items if d.attempt == 1}
        if len(owners) > 1:
            report.conflicting_decisions.append(f"{lead_id}: {sorted(map(str, owners))}")
        report.duplicate_decisions += len(items) - len({d.decision_id for _, d in items})
        first[lead_id] = min(items, key=lambda item: (item[1].attempt, item[0].timestamp))

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

    _check_capacity(report, first)
    _check_availability(report, first, records["roster"])
    if check_state:
        report.checked_state = True
        _check_state(report, first, records["deals"], records["loads"])
    return report


def _check_capacity(report: Report, first: dict[str, tuple[Any, AssignmentDecision]]) -> None:
    for lead_id, (_, d) in first.items():
        chosen = d.explanation.chosen
        if d.rep_id and chosen and chosen.facts.get("open", 0) >= chosen.facts.get("capacity", 1):
            report.capacity_violations.append(f"{lead_id} -> {d.rep_id} with {chosen.facts}")


def _check_availability(report: Report, first: dict[str, tuple[Any, AssignmentDecision]], roster: list[Any]) -> None:
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
    for lead_id, (record, d) in first.items():
        if not d.rep_id:
            continue
        history = sorted(timeline.get(d.rep_id, []), key=lambda x: x[0])
        # The state that was certainly in force: the last change older than the slack.
        settled = [p for ts, p in history if ts <= record.timestamp - ROSTER_SLACK_MS]
        recent = [p for ts, p in history if record.timestamp - ROSTER_SLACK_MS < ts <= record.timestamp]
        candidates = ([settled[-1]] if settled else []) + recent
        fine = any(
            p is not None and p.active and p.availability == "available" and d.pool in p.pools for p in candidates
        )
        if not fine:  # also a rep the roster never had
            report.unavailable_assignments.append(f"{lead_id} -> {d.rep_id}")


def _check_state(
    report: Report, first: dict[str, tuple[Any, AssignmentDecision]], deals: list[Any], loads: list[Any]
) -> None:
    expected: Counter[str] = Counter()
    owner: dict[str, str] = {}
    for lead_id, (_, d) in first.items():
        if d.rep_id:
            key = f"{d.pool}|{d.rep_id}"
            expected[key] += 1
            owner[lead_id] = key
    closed = set()
    for r in deals:
        try:
            deal = DealClosed.model_validate_json(r.value)
        except (ValidationError, TypeError):
            continue
        if deal.lead_id in owner and deal.lead_id not in closed:
            closed.add(deal.lead_id)
            expected[owner[deal.lead_id]] -= 1
    actual: dict[str, int] = {}
    for r in loads:
        key = r.key.decode()
        key = orjson.loads(key) if key.startswith('"') else key
        if r.value is None:
            actual.pop(key, None)
        else:
            actual[key] = int(orjson.loads(r.value).get("open", 0))
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key, 0) != actual.get(key, 0):
            report.state_mismatches.append(f"{key}: table {actual.get(key, 0)} != replay {expected.get(key, 0)}")


def verify(settings: Settings, *, check_state: bool = True) -> Report:
    return check(asyncio.run(collect(settings)), settings, check_state=check_state)
