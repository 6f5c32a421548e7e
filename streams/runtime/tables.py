"""The tables: one per stage that keeps state, keyed like that stage's input, so reads stay local.

Each table is a local store per partition (streams/runtime/store.py) backed by a compacted changelog
topic `<app_id>-<table>-changelog` whose partition is the task's. The kinds of row a stage keeps (the
route stage's ledger, loads, pools, ...) are namespaces of its table: `ledger|<pool>|<lead>`.
"""

from __future__ import annotations

SEP = "|"

# Table name -> what it holds.
TABLES = {
    "route": "Route stage state per pool: the kinds of ROUTE_KINDS",
    "match": "Lead stage state per lead: the kinds of MATCH_KINDS",
    "rep-pools": "Pools each rep belongs to",
}
# Kinds of row (key prefix `<kind>|`) -> what they hold.
ROUTE_KINDS = {
    "reps": "Rep profile per pool",
    "loads": "Open leads and value received per pool and rep",
    "performance": "Daily won/lost/revenue buckets per pool and rep",
    "ledger": "Decision and status per pool and lead",
    "models": "Learned conversion model per pool and rep",
    "pools": "Members, rotation state and totals per pool",
    "policies": "Running policy per pool",
    "wait": "Leads waiting for capacity, keyed <pool>|<order>|<lead> so they scan in the order they are taken",
    "held": "Open leads per holder, keyed <pool>|<rep>|<lead> (the lead, for a hand-back's next attempt)",
    "dedupe": "Dedupe keys, keyed <pool>|<kind>|<hash> (a keyed hash, never the contact): the lead decided with it",
    "sla": "Follow-up timers, keyed <due>|<pool>|<lead> so they scan in due order (the lead, for its next attempt)",
}
MATCH_KINDS = {
    "lead-index": "Pool and owner of each decided lead",
    "parked-deals": "Deals waiting for their lead's decision",
    "parked-activity": "Activity waiting for its lead's decision",
}


def key(*parts: str) -> str:
    """Compound keys start with the pool (route) or the lead (match): co-partitioning."""
    return SEP.join(parts)


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"
