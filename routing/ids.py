"""Deterministic ids and hashes: the same lead and attempt always give the same decision id."""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.UUID("6f1b3c1e-9a55-4f0e-8d2a-6c2b7d0e4a11")


def decision_id(lead_id: str, attempt: int) -> str:
    """Stable across workers, restarts and replays, so consumers can dedupe on it."""
    return str(uuid.uuid5(_NAMESPACE, f"{lead_id}#{attempt}"))


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) derived only from its inputs (never from wall clock or global random)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
