"""`leadrelay dry-run`: evaluate a policy offline against a roster and a lead, no Kafka involved."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from routing.decide import decide
from routing.frame import PoolFrame
from routing.model import Load, PoolState, Rep
from routing.policy import DEFAULT_POLICY, parse_policy
from schemas.events import AssignmentDecision, LeadCreated
from streams.roster import load_roster


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
    policy = parse_policy(policy_file.read_text()) if policy_file else DEFAULT_POLICY
    lead = LeadCreated.model_validate_json(lead_file.read_bytes())
    target = pool or lead.pool or policy.pool
    roster = load_roster(roster_file)
    if target is None:
        pools = sorted({p for rep in roster for p in rep.pools})
        if len(pools) != 1:
            raise ValueError(f"name the pool with --pool (roster has {pools})")
        target = pools[0]
    reps = {r.rep_id: Rep.from_event(r, target) for r in roster if target in r.pools}
    loads: dict[str, Load] = {}
    if loads_file is not None:  # {"rep_id": open_count or a Load dict}
        for rep_id, value in orjson.loads(loads_file.read_bytes()).items():
            loads[rep_id] = Load(open=value, assigned=value) if isinstance(value, int) else Load.from_dict(value)
    frame = PoolFrame(target, reps, loads, state=PoolState(members=tuple(sorted(reps))))
    return decide(lead, frame, policy, now=now or datetime.now(UTC))
