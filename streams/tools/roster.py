"""Roster files (JSON list or JSON lines of RepUpdated) and publishing them to the roster topic."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.events import RepUpdated


def load_roster(path: Path) -> list[RepUpdated]:
    text = path.read_bytes().strip()
    if text.startswith(b"["):
        items = orjson.loads(text)
    else:
        items = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    return [RepUpdated.model_validate(item) for item in items]
