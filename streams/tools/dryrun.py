"""`leadrelay dry-run`: evaluate a policy offline against a roster and a lead, no Kafka involved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from routing.decide import decide
from routing.frame import PoolFrame
from routing.model import Load, PoolState, Rep
from routing.policy import DEFAULT_POLICY, PolicyError, parse_policy
from schemas.events import AssignmentDecision, LeadCreated, RepUpdated


class DryRunError(ValueError):
    """An input that cannot be used, named by file and record, in one line."""


def _problem(exc: ValidationError) -> str:
    """The first problem as `field: message` (never the input value: a lead may hold contact data)."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"


def _roster_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, item) per rep: `record N` of a JSON list, `line N` of JSON lines (as streams.tools.roster reads)."""
    text = path.read_bytes().strip()
    if text.startswith(b"["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise DryRunError(f"roster file {path}: not valid JSON: {exc}") from None
        yield from ((f"record {n}", item) for n, item in enumerate(items, 1))
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {n}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DryRunError(f"roster file {path}, line {n}: not valid JSON: {exc}") from None


def _load_roster(path: Path) -> list[RepUpdated]:
    reps = []
    for where, item in _roster_items(path):
        try:
            reps.append(RepUpdated.model_validate(item))
        except ValidationError as exc:
            rep_id = item.get("rep_id") if isinstance(item, dict) else None
            named = f" (rep_id {rep_id})" if isinstance(rep_id, str) else ""
            raise DryRunError(f"roster file {path}, {where}{named}: {_problem(exc)}") from None
    return reps


def dry_run(
    *,
    lead_file: Path,
    roster_file: Path,
    policy_file: Path | None = None,
    loads_file: Path | None = None,
    pool: str | None = None,
    now: datetime | None = None,
) -> AssignmentDecision:
    """The decision the worker would make for this lead, given the roster (and optional open loads)."""
    policy = DEFAULT_POLICY
    if policy_file is not None:
        try:
            policy = parse_policy(policy_file.read_text())
        except PolicyError as exc:
            raise DryRunError(f"policy file {policy_file}: {exc}") from None
    try:
        lead = LeadCreated.model_validate_json(lead_file.read_bytes())
    except ValidationError as exc:
        raise DryRunError(f"lead file {lead_file}: {_problem(exc)}") from None
    target = pool or lead.pool or policy.pool
    roster = _load_roster(roster_file)
    pools = sorted({p for rep in roster for p in rep.pools})
    if target is None:
        if len(pools) != 1:
            raise DryRunError(f"name the pool with --pool (roster has {pools})")
        target = pools[0]
    if target not in pools:  # a typo would otherwise decide no_eligible_rep and look like a real answer
        raise DryRunError(f"pool {target!r} has no rep in roster file {roster_file} (its pools: {pools})")
    reps = {r.rep_id: Rep.from_event(r, target) for r in roster if target in r.pools}
    loads: dict[str, Load] = {}
    if loads_file is not None:  # {"rep_id": open_count or a Load dict}
        try:
            for rep_id, value in orjson.loads(loads_file.read_bytes()).items():
                loads[rep_id] = Load(open=value, assigned=value) if isinstance(value, int) else Load.from_dict(value)
        except (ValueError, AttributeError, TypeError) as exc:  # orjson's JSONDecodeError is a ValueError
            raise DryRunError(f'loads file {loads_file}: expected {{"rep_id": open_leads}}: {exc}') from None
    # Members in roster-file order, as the worker would have them joined (rotation follows join order).
    frame = PoolFrame(target, reps, loads, state=PoolState(members=tuple(reps)))
    return decide(lead, frame, policy, now=now or datetime.now(UTC))
