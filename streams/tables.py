"""Faust tables. Every table is keyed by what its agent's input topic is keyed by, so reads stay local."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

SEP = "|"


def key(*parts: str) -> str:
    """Compound keys start with the pool (pool tables) or the lead (lead tables): co-partitioning."""
    return SEP.join(parts)


@dataclass(frozen=True)
class Tables:
    # route agent (pool-events, key = pool)
    reps: faust.Table[str, Any]  # pool|rep -> Rep dict
    loads: faust.Table[str, Any]  # pool|rep -> Load dict
    performance: faust.Table[str, Any]  # pool|rep -> {day: [won, lost, revenue]}
    ledger: faust.Table[str, Any]  # pool|lead -> LedgerEntry dict
    models: faust.Table[str, Any]  # pool|rep -> learned conversion model (won/lost per lead feature)
    pools: faust.Table[str, Any]  # pool -> PoolState dict (members, rotation cursor and virtual time, totals)
    policies: faust.Table[str, Any]  # pool -> policy dict (the running version)
    # match_deals agent (lead-events, key = lead_id)
    lead_index: faust.Table[str, Any]  # lead -> {"pool", "rep_id", "decision_id"}
    parked_deals: faust.Table[str, Any]  # lead -> DealUnrouted dict
    # ingest_roster agent (reps.roster, key = rep_id)
    rep_pools: faust.Table[str, Any]  # rep -> [pool, ...]

    @classmethod
    def create(cls, app: faust.App, partitions: int) -> Tables:
        def table(name: str) -> faust.Table[str, Any]:
            return app.Table(name, default=None, partitions=partitions, key_type=str, help=TABLES[name])

        return cls(**{name.replace("-", "_"): table(name) for name in TABLES})


# Table name (as in its changelog topic `<app_id>-<name>-changelog`) -> what it holds.
TABLES = {
    "reps": "Rep profile per pool",
    "loads": "Open leads and value received per pool and rep",
    "performance": "Daily won/lost/revenue buckets per pool and rep",
    "ledger": "Decision and status per pool and lead",
    "models": "Learned conversion model per pool and rep",
    "pools": "Members, rotation state and totals per pool",
    "policies": "Running policy per pool",
    "lead-index": "Pool and owner of each decided lead",
    "parked-deals": "Deals waiting for their lead's decision",
    "rep-pools": "Pools each rep belongs to",
}


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"
