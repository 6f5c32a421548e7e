"""Breaking changes between two versions of a contract's JSON Schema, judged by who reads the record.

An input (producers write, leadrelay reads) breaks when the new schema refuses something the old one
accepted: a narrowing. An output (leadrelay writes, consumers read) breaks when the new schema allows
something the old one never produced: a widening. Removing a field breaks both ways. The comparison walks
both schemas side by side and sorts every difference into narrowed, widened or both (a changed pattern or
format: nobody can tell which way, so it counts as both).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["input", "output"]
Way = Literal["narrowed", "widened", "both", "removed"]

_ANY: dict[str, Any] = {}
# Bounds: keyword -> which way a larger number moves the accepted set.
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_OPAQUE = ("pattern", "format", "multipleOf", "uniqueItems")


@dataclass(frozen=True)
class Change:
    path: str
    way: Way
    what: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.what}"


def breaking_changes(old: dict[str, Any], new: dict[str, Any], direction: Direction) -> list[Change]:
    """The changes from `old` to `new` that break the contract's readers, in schema order."""
    bad: set[Way] = {"narrowed", "both", "removed"} if direction == "input" else {"widened", "both", "removed"}
    return [c for c in changes(old, new) if c.way in bad]


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference that moves the set of accepted records, with its direction."""
    return list(_Walk(old, new).compare(old, new, "", frozenset()))


class _Walk:
    def __init__(self, old_root: dict[str, Any], new_root: dict[str, Any]) -> None:
        self.roots = (old_root, new_root)

    def resolve(self, schema: Any, side: int) -> tuple[Any, str | None]:
        """Follow local `$ref`s (#/$defs/Name); return the target and the name of the last one."""
        name = None
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/") or seen > 32:
                raise ValueError(f"only local references are supported, not {ref!r}")
            target: Any = self.roots[side]
            for part in ref[2:].split("/"):
                target = target[part]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema, name, seen = {**target, **siblings}, ref, seen + 1
        return schema, name

    def compare(self, old: Any, new: Any, path: str, seen: frozenset[tuple[str, str]]) -> Iterator[Change]:
        old, old_ref = self.resolve(old, 0)
        new, new_ref = self.resolve(new, 1)
        if old_ref and new_ref:
            if (old_ref, new_ref) in seen:  # a recursive definition: already being compared further up
                return
            seen = seen | {(old_ref, new_ref)}
        if old is True or old == _ANY:
            old = {}
        if new is True or new == _ANY:
            new = {}
        if old is False or new is False:
            if old is not new:
                yield Change(
                    path,
                    "narrowed" if new is False else "widened",
                    "now refused" if new is False else "now accepted (was refused)",
                )
            return
        if "default" in old and "default" in new and old["default"] != new["default"]:
            # Producers who leave the field out get another value: their records now mean something else.
            yield Change(path, "both", f"default {old['default']!r} -> {new['default']!r}")
        yield from self.branches(old, new, path, seen)

    def branches(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[tuple[str, str]]
    ) -> Iterator[Change]:
        """anyOf/oneOf alternatives (pydantic's `X | None`), paired by their kind."""
        old_alts = _alternatives(old)
        new_alts = _alternatives(new)
        if old_alts is None and new_alts is None:
            yield from self.single(old, new, path, seen)
            return
        old_by = {_kind(self.resolve(a, 0)[0]): a for a in (old_alts or [old])}
        new_by = {_kind(self.resolve(a, 1)[0]): a for a in (new_alts or [new])}
        for kind in old_by:
            if kind not in new_by:
                yield Change(path, "narrowed", f"no longer accepts {kind}")
        for kind in new_by:
            if kind not in old_by:
                yield Change(path, "widened", f"now also accepts {kind}")
        for kind in old_by.keys() & new_by.keys():
            yield from self.compare(old_by[kind], new_by[kind], path, seen)
        outer_old = {k: v for k, v in old.items() if k not in ("anyOf", "oneOf")}
        outer_new = {k: v for k, v in new.items() if k not in ("anyOf", "oneOf")}
        if old_alts is not None and new_alts is not None:
            yield from self.single(outer_old, outer_new, path, seen)

    def single(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[tuple[str, str]]
    ) -> Iterator[Change]:
        yield from _types(old, new, path)
        yield from _values(old, new, path)
        yield from _bounds(old, new, path)
        for key in _OPAQUE:
            if old.get(key) != new.get(key):
                way: Way = "narrowed" if key not in old else "widened" if key not in new else "both"
                yield Change(path, way, f"{key} {old.get(key)!r} -> {new.get(key)!r}")
        yield from self.objects(old, new, path, seen)
        if "items" in old or "items" in new:
            yield from self.compare(old.get("items", {}), new.get("items", {}), f"{path}/items", seen)
        if "propertyNames" in old or "propertyNames" in new:
            yield from self.compare(
                old.get("propertyNames", {}), new.get("propertyNames", {}), f"{path}/propertyNames", seen
            )

    def objects(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[tuple[str, str]]
    ) -> Iterator[Change]:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required = set(old.get("required", ()))
        new_required = set(new.get("required", ()))
        for name, schema in old_props.items():
            where = f"{path}/{name}"
            if name not in new_props:
                yield Change(where, "removed", "field removed (or renamed)")
                continue
            if name in new_required and name not in old_required:
                yield Change(where, "narrowed", "field became required")
            if name in old_required and name not in new_required:
                yield Change(where, "widened", "field may now be absent")
            yield from self.compare(schema, new_props[name], where, seen)
        for name, schema in new_props.items():
            if name in old_props:
                continue
            where = f"{path}/{name}"
            if name in new_required:
                yield Change(where, "narrowed", "new required field")
            elif _extra(old) is not False:
                # Old readers saw this name under additionalProperties; compare against that. (Where the old
                # schema refused unknown fields, a new optional field only widens: fine for inputs, and outputs
                # promise new fields, which their consumers ignore.)
                yield from self.compare(_extra(old), schema, where, seen)
        if "additionalProperties" in old or "additionalProperties" in new:
            yield from self.compare(_extra(old), _extra(new), f"{path}/*", seen)


def _extra(schema: dict[str, Any]) -> Any:
    return schema.get("additionalProperties", True)


def _alternatives(schema: dict[str, Any]) -> list[Any] | None:
    alts = schema.get("anyOf", schema.get("oneOf"))
    return list(alts) if isinstance(alts, list) else None


def _kind(schema: Any) -> str:
    """What an alternative is, to pair it with its counterpart: its type, or `any`."""
    if not isinstance(schema, dict):
        return "anything" if schema is not False else "nothing"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(sorted(kind))
    return str(kind) if kind else "anything"


def _type_set(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    found = set(kind) if isinstance(kind, list) else {kind}
    if "number" in found:
        found.add("integer")  # every integer is a number
    return found


def _types(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    before, after = _type_set(old), _type_set(new)
    if before == after:
        return
    if after is not None and (before is None or not before <= after):
        yield Change(path, "narrowed", f"type {old.get('type', 'any')} -> {new.get('type')}")
    if before is not None and (after is None or not after <= before):
        yield Change(path, "widened", f"type {old.get('type')} -> {new.get('type', 'any')}")


def _value_set(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _values(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    before, after = _value_set(old), _value_set(new)
    if before == after:
        return
    removed = [v for v in before or () if after is not None and v not in after]
    added = [v for v in after or () if before is not None and v not in before]
    if before is None:
        yield Change(path, "narrowed", f"now limited to {after!r}")
    elif after is None:
        yield Change(path, "widened", f"no longer limited to {before!r}")
    if removed:
        yield Change(path, "narrowed", f"value(s) removed: {removed!r}")
    if added:
        yield Change(path, "widened", f"value(s) added: {added!r}")


def _bounds(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    for keys, tighter in ((_LOWER, 1), (_UPPER, -1)):
        for key in keys:
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            if a is None:
                yield Change(path, "narrowed", f"{key} {b!r} added")
            elif b is None:
                yield Change(path, "widened", f"{key} {a!r} removed")
            elif (b - a) * tighter > 0:
                yield Change(path, "narrowed", f"{key} {a!r} -> {b!r}")
            else:
                yield Change(path, "widened", f"{key} {a!r} -> {b!r}")
