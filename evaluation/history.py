"""A recorded history (leads, deals, roster changes, decisions) from JSON lines or Kafka records, in event order.

Each input kind is a list of (time, record) plus a place in KINDS: the order in which events of the
same instant are applied (roster first, then deals, then leads, as the simulator closes due deals
before it decides). A new input, such as lead activity once its topic exists, is one more list, one
loader here and one handler registered in evaluation/replay.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from routing.model import Rep
from routing.policy import Policy
from schemas.events import AssignmentDecision, DealClosed, LeadCreated, RepUpdated

if TYPE_CHECKING:
    from evaluation.market import Market

KINDS = ("roster", "deal", "lead")  # same-instant order
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # roster records without updated_at apply from the start

M = TypeVar("M", bound=BaseModel)


class HistoryError(ValueError):
    """An input file that cannot be used, named by file and line (never quoting the value: leads may hold
    contact data)."""


@dataclass(frozen=True)
class RosterChange:
    rep_id: str
    profile: RepUpdated | None  # None: a tombstone (the rep leaves every pool)


@dataclass
class History:
    leads: list[tuple[datetime, LeadCreated]] = field(default_factory=list)
    deals: list[tuple[datetime, DealClosed]] = field(default_factory=list)
    roster: list[tuple[datetime, RosterChange]] = field(default_factory=list)
    decisions: list[AssignmentDecision] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # invalid records per input (the worker dead-letters them)

    def timeline(self) -> list[tuple[datetime, str, Any]]:
        """Every input event as (time, kind, record), ordered by time, then KINDS, then input order."""
        rows: list[tuple[datetime, int, int, str, Any]] = []
        for kind, items in (("roster", self.roster), ("deal", self.deals), ("lead", self.leads)):
            rank = KINDS.index(kind)
            rows += [(at, rank, seq, kind, record) for seq, (at, record) in enumerate(items)]
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return [(at, kind, record) for at, _, _, kind, record in rows]


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    text = path.read_bytes()
    if text.lstrip().startswith(b"["):  # a JSON list (like roster files) counts record by record
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise HistoryError(f"{path}: not valid JSON: {exc}") from None
        for n, item in enumerate(items, 1):
            yield n, orjson.dumps(item)
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line


def read_jsonl(path: Path, model: type[M]) -> list[M]:
    out = []
    for n, line in _lines(path):
        try:
            out.append(model.model_validate_json(line))
        except ValidationError as exc:
            raise HistoryError(f"{path}, line {n}: {_problem(exc)}") from None
    return out


def from_jsonl(
    *,
    leads: Path | None = None,
    deals: Path | None = None,
    decisions: Path | None = None,
    roster: Path | None = None,
) -> History:
    """A history from files of JSON lines (or JSON lists): leads at `created_at`, deals at `closed_at`,
    roster records at `updated_at` (from the start when absent: a static roster), decisions as recorded."""
    h = History()
    if leads is not None:
        h.leads = [(lead.created_at, lead) for lead in read_jsonl(leads, LeadCreated)]
    if deals is not None:
        h.deals = [(deal.closed_at, deal) for deal in read_jsonl(deals, DealClosed)]
    if roster is not None:
        h.roster = [(r.updated_at or BEGINNING, RosterChange(r.rep_id, r)) for r in read_jsonl(roster, RepUpdated)]
    if decisions is not None:
        h.decisions = read_jsonl(decisions, AssignmentDecision)
    return h


def _when(record: Any) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def _parsed(records: Iterable[Any], model: type[M], skipped: Counter[str], name: str) -> Iterator[tuple[Any, M]]:
    for r in records:
        try:
            yield r, model.model_validate_json(r.value or b"")
        except ValidationError:
            skipped[name] += 1


def from_records(
    *,
    leads: Iterable[Any] = (),
    deals: Iterable[Any] = (),
    decisions: Iterable[Any] = (),
    roster: Iterable[Any] = (),
) -> History:
    """A history from Kafka records (aiokafka ConsumerRecords, in topic order): each event at its record
    timestamp, the time it entered Kafka. Records the worker would refuse are counted and left out."""
    h = History()
    h.leads = [(_when(r), lead) for r, lead in _parsed(leads, LeadCreated, h.skipped, "leads")]
    h.deals = [(_when(r), deal) for r, deal in _parsed(deals, DealClosed, h.skipped, "deals")]
    h.decisions = [d for _, d in _parsed(decisions, AssignmentDecision, h.skipped, "decisions")]
    for r in roster:
        key = r.key.decode("utf-8", "replace") if r.key else None
        if not r.value:
            if key:
                h.roster.append((_when(r), RosterChange(key, None)))
            continue
        try:
            profile = RepUpdated.model_validate_json(r.value)
        except ValidationError:
            h.skipped["roster"] += 1
            continue
        if key != profile.rep_id:  # the worker dead-letters it as key_mismatch
            h.skipped["roster"] += 1
            continue
        h.roster.append((_when(r), RosterChange(profile.rep_id, profile)))
    return h


def write_jsonl(history: History, out: Path) -> dict[str, Path]:
    """The history as the four files `from_jsonl` reads (roster records carry their time in updated_at)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.jsonl" for name in ("leads", "deals", "decisions", "roster")}
    rows = {
        "leads": [lead.model_dump_json(exclude_none=True) for _, lead in history.leads],
        "deals": [deal.model_dump_json(exclude_none=True) for _, deal in history.deals],
        "decisions": [d.model_dump_json() for d in history.decisions],
        "roster": [_roster_line(at, c) for at, c in history.roster],
    }
    for name, path in files.items():
        path.write_text("".join(line + "\n" for line in rows[name]))
    return files


def _roster_line(at: datetime, change: RosterChange) -> str:
    when = at if at != BEGINNING else None
    # A tombstone becomes the equivalent profile in no pool (JSON lines have no null record).
    profile = change.profile or RepUpdated(rep_id=change.rep_id, pools=[])
    return profile.model_copy(update={"updated_at": when}).model_dump_json(exclude_none=True)


def recorded(market: Market, policy: Policy) -> History:
    """What a deployment running `policy` on the simulator's market would have logged: the roster, the
    leads, every decision and every deal, made by the simulator's own engine (evaluation/run.py), so a
    replay of it is checked against an independent implementation of the worker's state."""
    from evaluation.run import _Pool

    pool = _Pool(market)
    h = History()
    h.roster = [(BEGINNING, RosterChange(r.rep_id, _profile(r, pool.frame.pool))) for r in market.reps.values()]
    for lead in market.leads:
        rep, _, won = pool.step(lead, policy)
        h.leads.append((lead.created_at, lead))
        h.decisions.append(AssignmentDecision.model_validate(pool.ledger[lead.lead_id].decision))
        if rep is not None:
            at = lead.created_at + market.close_after(lead)
            value = lead.estimated_value or 0.0
            deal = DealClosed(
                lead_id=lead.lead_id, outcome="won" if won else "lost", amount=value if won else 0.0, closed_at=at
            )
            h.deals.append((at, deal))
    h.deals.sort(key=lambda item: item[0])  # the order the CRM would send them in
    return h


def _profile(rep: Rep, pool: str) -> RepUpdated:
    return RepUpdated(
        rep_id=rep.rep_id,
        pools=[pool],
        tier=rep.tier,
        tags=dict(rep.tags),
        capacity=rep.capacity,
        weight=rep.weight,
        hired_at=rep.hired_at,
    )
