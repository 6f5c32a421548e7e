"""Seed a worker's route changelog with synthetic ledger entries, shaped after the real ones.

The worker's state lives in `<app_id>-route-changelog`; a ledger entry is the row `ledger|<pool>|<lead>`
with a JSON LedgerEntry (routing/ledger.py). After a real backfill has written real rows, each pool's
last ledger row is the template: the synthetic rows are that row with another lead id (in key and
value), sent to the same partition, so they are exactly what the runtime that wrote the template reads
back. Plain (non-transactional) records are read by the runtime's read_committed restore like
committed ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from bench.kafkaio import Row, produce_bulk, read_topic
from streams.kafka.changelog import decode_key

LEDGER = "ledger|"


@dataclass
class Template:
    pool: str
    lead_id: str
    partition: int
    key: bytes
    value: bytes


@dataclass
class Seed:
    templates: list[Template]
    existing: int  # ledger rows already in the changelog (keys)
    value_bytes: int  # size of one template value


async def inspect(bootstrap: str, topic: str) -> Seed:
    records = await read_topic(bootstrap, topic)
    templates: dict[str, Template] = {}
    ledger_keys: set[str] = set()
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        key = decode_key(r.key)
        if key.startswith(LEDGER) and r.value is not None:
            _, pool, lead_id = key.split("|", 2)
            ledger_keys.add(key)
            templates[pool] = Template(pool, lead_id, r.partition, r.key, r.value)
    if not templates:
        raise RuntimeError(f"{topic}: no ledger rows to copy (did the backfill decide anything?)")
    sizes = [len(t.value) for t in templates.values()]
    return Seed(list(templates.values()), len(ledger_keys), max(sizes))


async def write(bootstrap: str, topic: str, seed: Seed, n: int, prefix: str = "SEED") -> int:
    """n synthetic ledger rows, spread over the template pools."""

    def rows() -> Iterator[Row]:
        for i in range(n):
            template = seed.templates[i % len(seed.templates)]
            old, new = template.lead_id.encode(), f"{prefix}-{i:08d}".encode()
            yield template.key.replace(old, new), template.value.replace(old, new), template.partition, []

    return await produce_bulk(bootstrap, topic, rows())


def probe(seed: Seed, n: int, prefix: str = "SEED") -> tuple[str, str, str]:
    """The last seeded entry: (lead_id, pool, the decision_id it stores). A worker that recovered it
    answers a re-sent lead with that decision; one that did not decides afresh, under another id."""
    i = n - 1
    template = seed.templates[i % len(seed.templates)]
    decision = orjson.loads(template.value)["decision"]
    return f"{prefix}-{i:08d}", template.pool, str(decision["decision_id"])
