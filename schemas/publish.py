"""JSON Schema files of the public contracts: generated from the models, written to schemas/json/, checked.

    python -m schemas.publish                 write schemas/json/*.json from the models
    python -m schemas.publish --check         exit 1 when the committed files differ from the models
    python -m schemas.publish --compat REF    exit 1 on a breaking change against a git ref or a directory

docs/contracts.md explains the versioning rules the compatibility check enforces.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import core_schema

from routing.policy import Policy
from schemas import examples
from schemas.compat import Direction, breaking_changes
from schemas.deadletter import DEAD_LETTER_VERSION, DeadLetterHeaders
from schemas.events import (
    SCHEMA_VERSION,
    AssignmentDecision,
    ClaimResult,
    DealClosed,
    LeadActivity,
    LeadClaim,
    LeadCreated,
    RepUpdated,
)

JSON_DIR = Path(__file__).resolve().parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:leadrelay:schema:"
FILE_NAME = re.compile(r"^(?P<contract>[a-z0-9][a-z0-9._-]*?)\.v(?P<version>[0-9]+)\.json$")

UNKNOWN_INPUT = (
    " Unknown fields are refused: leadrelay validates with extra='forbid' and dead-letters such a record as"
    " `schema_violation`, so a typo never passes silently."
)
UNKNOWN_OUTPUT = (
    " Consumers must ignore fields they do not know: a later release may add fields (and objects may carry"
    " more properties than listed here) without moving the schema version."
)


@dataclass(frozen=True)
class Contract:
    """One public record: the topic it travels on, its model, and which way it flows."""

    name: str  # the topic's default name; the file is <name>.v<version>.json
    model: type[BaseModel]
    direction: Direction
    version: int
    key: str
    description: str
    examples: Sequence[Mapping[str, Any]]
    all_present: bool = False  # output whose every field is always written (model_dump_json, no exclusions)
    by_alias: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.name}.v{self.version}.json"

    @property
    def schema_id(self) -> str:
        return f"{ID_PREFIX}{self.name}:v{self.version}"


CONTRACTS: tuple[Contract, ...] = (
    Contract(
        "leads.new",
        LeadCreated,
        "input",
        SCHEMA_VERSION,
        "lead_id",
        "A lead that needs an owner. `contact` is accepted but never stored, logged or emitted.",
        examples.LEAD_CREATED,
    ),
    Contract(
        "leads.updated",
        LeadCreated,
        "input",
        SCHEMA_VERSION,
        "lead_id",
        "A new version of a lead (the full current lead, not a patch): a lead whose routing inputs changed is"
        " kept by its holder, decided again, or moved to the pool the territory rules now give it. An update"
        " for a lead leadrelay does not know is its first sight. `contact` is never stored, logged or emitted.",
        examples.LEAD_UPDATED,
    ),
    Contract(
        "deals.closed",
        DealClosed,
        "input",
        SCHEMA_VERSION,
        "lead_id",
        "The outcome of a lead, from the CRM; releases the lead's capacity and feeds performance.",
        examples.DEAL_CLOSED,
    ),
    Contract(
        "leads.activity",
        LeadActivity,
        "input",
        SCHEMA_VERSION,
        "lead_id",
        "What a rep did with a lead, from the CRM: any kind touches the lead and stops its follow-up timer;"
        " disqualified, duplicate and cancelled close it without a deal and release its rep's capacity."
        " `status` and `note` must not carry personal data (`note` is never stored).",
        examples.LEAD_ACTIVITY,
    ),
    Contract(
        "reps.roster",
        RepUpdated,
        "input",
        SCHEMA_VERSION,
        "rep_id (compacted; must equal the record's rep_id; a tombstone removes the rep)",
        "The full current profile of one rep (not a patch).",
        examples.REP_UPDATED,
    ),
    Contract(
        "routing.policies",
        Policy,
        "input",
        1,
        "pool id (compacted; a tombstone returns the pool to the default policy)",
        "One routing policy per pool, sent as JSON or YAML (YAML is read into the same structure). `version` is"
        " the policy's own revision, not the contract's. Cross-field rules JSON Schema cannot state are checked"
        " by leadrelay: a `default` strategy exists, every strategy named by rules and experiments exists,"
        " variant shares sum to 1, tie_break names no weighted scorer (docs/policies.md).",
        examples.POLICY,
    ),
    Contract(
        "leads.assignments",
        AssignmentDecision,
        "output",
        SCHEMA_VERSION,
        "lead_id",
        "One decision per lead and attempt. Read with isolation.level=read_committed and dedupe on `decision_id`:"
        " the same decision can be delivered more than once, byte for byte the same.",
        examples.ASSIGNMENT_DECISION,
        all_present=True,
    ),
    Contract(
        "leads.claims",
        LeadClaim,
        "input",
        SCHEMA_VERSION,
        "lead_id",
        "A rep's claim on a lead of the open pool (`sent_to_claim_pool`). The first valid claim in the pool's log"
        " wins; every claim is answered once on `leads.claim-results`, matched by `claim_id`.",
        examples.LEAD_CLAIM,
    ),
    Contract(
        "leads.claim-results",
        ClaimResult,
        "output",
        SCHEMA_VERSION,
        "lead_id",
        "The one answer to a claim: accepted (`claimed`, with the decision that gave the lead to the claimant)"
        " or rejected with its reason. Read with isolation.level=read_committed.",
        examples.CLAIM_RESULT,
        all_present=True,
    ),
    Contract(
        "leads.dlq",
        DeadLetterHeaders,
        "output",
        DEAD_LETTER_VERSION,
        "the refused record's key, as received",
        "The headers of a dead letter, decoded as UTF-8 and gathered into one object by header name. The record's"
        " value is the refused record exactly as it arrived (bytes, not necessarily JSON), so it has no schema.",
        examples.DEAD_LETTER_HEADERS,
        by_alias=True,
    ),
)


class _AlwaysPresent(GenerateJsonSchema):
    """Serialization schema of a model dumped whole: a field with a default is still always written."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return self.mode == "serialization" or super().field_is_required(field, total)


def build(contract: Contract) -> dict[str, Any]:
    """The published schema of one contract: the model's schema, repaired, annotated and with examples."""
    mode: JsonSchemaMode = "validation" if contract.direction == "input" else "serialization"
    generator = _AlwaysPresent if contract.all_present else GenerateJsonSchema
    body = contract.model.model_json_schema(by_alias=contract.by_alias, mode=mode, schema_generator=generator)
    body = _repair(body)
    if contract.direction == "output":
        body = _open_objects(body)
    body.pop("description", None)  # the model's docstring speaks to developers; the contract's to its users
    text = contract.description + UNKNOWN_INPUT if contract.direction == "input" else UNKNOWN_OUTPUT
    head: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": contract.schema_id,
        "title": f"{contract.name} v{contract.version}: {contract.model.__name__}",
        "description": text,
        "x-schema-version": contract.version,
        "x-topic": contract.name,
        "x-direction": contract.direction,
        "x-key": contract.key,
    }
    body.pop("title", None)
    return {**head, **body, "examples": [dict(example) for example in contract.examples]}


def _walk(node: Any, fix: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply `fix` to every schema object, children first."""
    if isinstance(node, list):
        return [_walk(item, fix) for item in node]
    if isinstance(node, dict):
        return fix({key: _walk(value, fix) for key, value in node.items()})
    return node


def _repair(schema: dict[str, Any]) -> dict[str, Any]:
    """Say in JSON Schema what pydantic enforces but writes in a form validators read differently."""

    def fix(node: dict[str, Any]) -> dict[str, Any]:
        patterns = node.get("patternProperties")
        if node.get("type") == "object" and isinstance(patterns, dict) and len(patterns) == 1:
            # dict[Key, V] with a key pattern: pydantic refuses a key that does not match; patternProperties
            # alone would let it through untyped.
            ((pattern, values),) = patterns.items()
            node = {k: v for k, v in node.items() if k != "patternProperties"}
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
            node["additionalProperties"] = values
        if "maxLength" in node and node.get("type", "string") != "string":
            raise ValueError(f"maxLength outside a string schema cannot be published as is: {node}")
        return node

    repaired: dict[str, Any] = _walk(schema, fix)
    return repaired


def _open_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """Outputs: every model object admits properties it does not list (consumers tolerate new fields)."""

    def fix(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = True
        return node

    opened: dict[str, Any] = _walk(schema, fix)
    return opened


def render(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def expected() -> dict[str, str]:
    """File name -> text of every schema file the models produce."""
    return {c.file_name: render(build(c)) for c in CONTRACTS}


def write(directory: Path = JSON_DIR) -> list[str]:
    """Write the schema files; return the names of those that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in expected().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def drift(directory: Path = JSON_DIR, *, context: int = 20) -> list[str]:
    """Problems between the committed files and the models, each with a short diff; [] when in step."""
    problems = []
    current = {c.name: c.version for c in CONTRACTS}
    for name, text in expected().items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing (run `make schemas`)")
            continue
        committed = path.read_text(encoding="utf-8")
        if committed != text:
            diff = list(
                difflib.unified_diff(committed.splitlines(), text.splitlines(), "committed", "models", lineterm="")
            )
            shown = "\n".join(diff[:context]) + (
                f"\n... {len(diff) - context} more diff lines" if len(diff) > context else ""
            )
            problems.append(f"{name}: differs from the models (run `make schemas`)\n{shown}")
    for path in sorted(directory.glob("*.json")):
        found = FILE_NAME.match(path.name)
        # Older versions of a current contract stay as frozen history for consumers still migrating.
        if not found or found["contract"] not in current or int(found["version"]) > current[found["contract"]]:
            problems.append(f"{path.name}: not produced by any model (remove it or add its contract)")
    return problems


def newest(files: Mapping[str, str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Contract name -> (version, schema) of the newest version among `files` (name -> text)."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for name, text in files.items():
        match = FILE_NAME.match(name)
        if match:
            version = int(match["version"])
            if match["contract"] not in found or version > found[match["contract"]][0]:
                found[match["contract"]] = (version, json.loads(text))
    return found


def compat(base: Mapping[str, str], current: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(breaking problems, notes) going from the `base` schema files to the `current` ones."""
    old, new = newest(base), newest(current)
    problems: list[str] = []
    notes: list[str] = []
    for contract, (old_version, old_schema) in sorted(old.items()):
        if contract not in new:
            problems.append(f"{contract}: contract removed (v{old_version})")
            continue
        new_version, new_schema = new[contract]
        direction = new_schema.get("x-direction", old_schema.get("x-direction"))
        if direction not in ("input", "output"):
            problems.append(f"{contract}: x-direction must be input or output, not {direction!r}")
            continue
        changes = breaking_changes(old_schema, new_schema, direction)
        for problem in _version_problems(contract, old_version, old_schema, new_version, new_schema):
            problems.append(problem)
        if new_version > old_version:
            notes += [f"{contract}: v{old_version} -> v{new_version} allows: {c}" for c in changes]
        else:
            problems += [f"{contract} v{new_version}: {c}" for c in changes]
    notes += [f"{c}: new contract (v{v})" for c, (v, _) in sorted(new.items()) if c not in old]
    return problems, notes


def _version_problems(contract: str, old: int, old_schema: Any, new: int, new_schema: Any) -> Iterator[str]:
    if new < old:
        yield f"{contract}: version went back from v{old} to v{new}"
    for version, schema in ((old, old_schema), (new, new_schema)):
        carried = schema.get("x-schema-version")
        if carried != version:
            yield f"{contract}.v{version}.json: x-schema-version is {carried!r}, the file name says {version}"


def read_directory(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.json"))}


def read_git(ref: str, root: Path, folder: str = "schemas/json") -> dict[str, str]:
    """The schema files as committed at `ref` (empty when the folder did not exist there yet)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout

    git("rev-parse", "--verify", f"{ref}^{{commit}}")  # a typo in the ref fails instead of comparing to nothing
    names = (
        [n for n in git("ls-tree", "--name-only", f"{ref}:{folder}").splitlines() if n.endswith(".json")]
        if _has(git, ref, folder)
        else []
    )
    return {name: git("show", f"{ref}:{folder}/{name}") for name in names}


def _has(git: Callable[..., str], ref: str, folder: str) -> bool:
    try:
        git("cat-file", "-e", f"{ref}:{folder}")
    except subprocess.CalledProcessError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.publish", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 when schemas/json/ drifts from the models")
    action.add_argument("--compat", metavar="BASE", help="git ref or directory of the schemas to compare against")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help="schema directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} schema file(s) out of date" if problems else "schemas/json is up to date")
        return 1 if problems else 0
    if args.compat:
        base_dir = Path(args.compat)
        try:
            base = read_directory(base_dir) if base_dir.is_dir() else read_git(args.compat, JSON_DIR.parents[1])
        except subprocess.CalledProcessError as exc:
            print(f"cannot read {args.compat!r}: {exc.stderr.strip()}", file=sys.stderr)
            return 2
        problems, notes = compat(base, expected())
        for note in notes:
            print(note)
        for problem in problems:
            print(f"BREAKING {problem}", file=sys.stderr)
        print(f"{len(problems)} breaking change(s) without a version move" if problems else "compatible")
        return 1 if problems else 0
    changed = write(args.dir)
    print(f"wrote {', '.join(changed)}" if changed else "schemas/json is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
