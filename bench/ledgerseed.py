"""Seed a worker's route changelog with synthetic ledger entries, shaped after the real ones.

The worker's state lives in `<app_id>-route-changelog`; a ledger entry is the row `ledger|<pool>|<lead>`
with a JSON LedgerEntry (routing/ledger.py). After a real backfill has written real rows, each pool's
last ledger row is the template: the synthetic rows are that row with another lead id (in key and
value), sent to the same partition, so they are exactly what the runtime that wrote the template reads
back. Rows of the faust runtime carry stamp and event-group headers (streams/changelog.py): a synthetic
row continues the partition's last writer (its stamp, a new group per row, so each row is released
by the next one), and a terminator closes the last group, as a worker that wrote them would. Rows of
the transactional runtime have no headers; plain (non-transactional) records are read by its
read_committed restore like committed ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from bench.kafkaio import Row, produce_bulk, read_topic
from streams.changelog import GROUP_HEADER, STAMP_HEADER, decode_key, end_key, is_end_key, stamp_of

GROUP_BASE = 1 << 40  # above any sequence a worker's process counts to
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
    stamps: dict[int, tuple[int, int]]  # partition -> stamp of its last row (faust runtime only)
    end_keys: dict[int, bytes]  # partition -> terminator key bytes for that stamp
    value_bytes: int  # size of one template value


async def inspect(bootstrap: str, topic: str) -> Seed:
    records = await read_topic(bootstrap, topic)
    templates: dict[str, Template] = {}
    ledger_keys: set[str] = set()
    stamps: dict[int, tuple[int, int]] = {}
    end_keys: dict[int, bytes] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        key = decode_key(r.key)
        stamp = stamp_of(r.headers)
        if stamp is not None:
            stamps[r.partition] = stamp
        if is_end_key(key):
            end_keys.setdefault(r.partition, b"")
            if key == end_key(stamp or (0, 0)):
                end_keys[r.partition] = r.key
        if key.startswith(LEDGER) and r.value is not None:
            _, pool, lead_id = key.split("|", 2)
            ledger_keys.add(key)
            templates[pool] = Template(pool, lead_id, r.partition, r.key, r.value)
    if not templates:
        raise RuntimeError(f"{topic}: no ledger rows to copy (did the backfill decide anything?)")
    sizes = [len(t.value) for t in templates.values()]
    return Seed(list(templates.values()), len(ledger_keys), stamps, end_keys, max(sizes))


async def write(bootstrap: str, topic: str, seed: Seed, n: int, prefix: str = "SEED") -> int:
    """n synthetic ledger rows (spread over the template pools), then one terminator per stamped partition."""
    last_group: dict[int, int] = {}

    def rows() -> Iterator[Row]:
        for i in range(n):
            template = seed.templates[i % len(seed.templates)]
            old, new = template.lead_id.encode(), f"{prefix}-{i:08d}".encode()
            partition, stamp = template.partition, seed.stamps.get(template.partition)
            headers = []
            if stamp is not None:
                group = last_group[partition] = GROUP_BASE + i
                headers = _headers(stamp, group, group)
            yield template.key.replace(old, new), template.value.replace(old, new), partition, headers

    sent = await produce_bulk(bootstrap, topic, rows())
    ends: list[Row] = []
    for partition, group in last_group.items():
        stamp, key = seed.stamps[partition], seed.end_keys.get(partition)
        if key:
            ends.append((key, orjson.dumps({"event": group}), partition, _headers(stamp, group + 1, group)))
    await produce_bulk(bootstrap, topic, ends)
    return sent


def _headers(stamp: tuple[int, int], sequence: int, group: int) -> list[tuple[str, bytes]]:
    return [(STAMP_HEADER, f"{stamp[0]}:{stamp[1]}:{sequence}".encode()), (GROUP_HEADER, str(group).encode())]


def probe(seed: Seed, n: int, prefix: str = "SEED") -> tuple[str, str, str]:
    """The last seeded entry: (lead_id, pool, the decision_id it stores). A worker that recovered it
    answers a re-sent lead with that decision; one that did not decides afresh, under another id."""
    i = n - 1
    template = seed.templates[i % len(seed.templates)]
    decision = orjson.loads(template.value)["decision"]
    return f"{prefix}-{i:08d}", template.pool, str(decision["decision_id"])
