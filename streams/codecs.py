"""Bytes <-> models at the boundary; orjson-backed pydantic parsing with classified errors."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from streams.errors import InvalidJson, PayloadTooLarge, from_validation

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def check_size(raw: bytes | None, max_bytes: int) -> bytes:
    if raw is None:
        raise InvalidJson("empty record (tombstone) where an event was expected")
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"{len(raw)} bytes > limit {max_bytes}")
    return raw


def parse(model: type[M], raw: bytes | None, *, max_bytes: int) -> M:
    """Validate untrusted bytes against a contract; raise an InvalidInput subclass on failure."""
    data = check_size(raw, max_bytes)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def parse_internal(adapter: TypeAdapter[T], raw: bytes | None, *, max_bytes: int = 1 << 20) -> T:
    """Internal topics are written by leadrelay itself but still parsed defensively."""
    data = check_size(raw, max_bytes)
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
