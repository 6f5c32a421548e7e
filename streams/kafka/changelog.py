"""How a changelog is read back into a table, for the tools (verify, explain, the demo's summary).

The runtime writes a batch's rows in the batch's transaction, so a read_committed reader sees whole
batches only: the table is simply the newest row per key. Pure: no Kafka client.

Changelogs written by leadrelay 0.1 (the Faust runtime) may still hold its JSON-quoted keys and its
event terminators (keys starting with LEGACY_END_KEY): keys are decoded either way and terminators
skipped, so a deployment upgraded in place reads on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

LEGACY_END_KEY = "\x00leadrelay-end|"  # cannot collide with a table key: those start with printable text


def decode_key(raw: bytes) -> str:
    text = raw.decode()
    return str(orjson.loads(text)) if text.startswith('"') else text


def is_legacy_end_key(key: str) -> bool:
    return key.startswith(LEGACY_END_KEY)


def read_table(records: Iterable[Any]) -> dict[str, bytes]:
    """The newest row per key: in offset order within a partition, by timestamp between partitions (a
    key written to two partitions, e.g. by a foreign producer); tombstones remove the key. Records need
    partition, offset, key (bytes), value and timestamp."""
    newest: dict[str, dict[int, Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is None:
            continue
        key = decode_key(r.key)
        if not is_legacy_end_key(key):
            newest.setdefault(key, {})[r.partition] = r
    out: dict[str, bytes] = {}
    for key, per_partition in newest.items():
        last = max(per_partition.values(), key=lambda r: (r.timestamp, r.partition))
        if last.value is not None:
            out[key] = last.value
    return out


def namespace(table: dict[str, bytes], name: str, sep: str = "|") -> dict[str, bytes]:
    """The rows of one kind (`ledger`, `loads`, ...) of a shared table, keys without the kind."""
    prefix = name + sep
    return {k[len(prefix) :]: v for k, v in table.items() if k.startswith(prefix)}
