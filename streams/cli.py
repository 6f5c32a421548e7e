"""The `leadrelay` command: worker, kafka, topics, produce, tail, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import orjson
from aiokafka.errors import KafkaError

from streams.settings import Settings, SettingsError


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(os.environ, Path(args.config) if args.config else None)


def _jsonl(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip(b"\n")


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker import run

    return run(_settings(args))


def cmd_kafka(args: argparse.Namespace) -> int:
    from streams import localkafka

    return localkafka.main([args.action, *(["--state-dir", args.state_dir] if args.state_dir else [])])


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.admin import ensure_topics

    created = asyncio.run(ensure_topics(_settings(args)))
    print("created: " + (", ".join(created) if created else "nothing (all present)"))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streams import synthetic
    from streams.clients import produce

    settings = _settings(args)
    topic = {"leads": settings.topic_leads_new, "deals": settings.topic_deals_closed}[args.kind]
    records: Iterator[tuple[bytes | None, bytes | None]]
    if args.file:
        # Leads and deals are both keyed by lead_id, like a CRM connector would key them.
        records = ((_key(line, "lead_id"), line) for line in _jsonl(Path(args.file)))
    elif args.kind == "leads":
        records = ((lead.lead_id.encode(), synthetic.wire(lead)) for lead in synthetic.leads(args.seed))
        records = islice(records, args.synthetic)
    else:
        rng = random.Random(args.seed)
        leads = islice(synthetic.leads(args.seed), args.synthetic)
        records = ((lead.lead_id.encode(), synthetic.deal_for(lead, rng).model_dump_json().encode()) for lead in leads)
    sent = asyncio.run(produce(settings, topic, records, rate=args.rate))
    print(f"sent {sent} records to {topic}")
    return 0


def _key(line: bytes, field: str) -> bytes | None:
    """Key by the record's id when it has one; a malformed line is still sent (the worker dead-letters it)."""
    try:
        value = orjson.loads(line).get(field)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(value).encode() if value is not None else None


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.clients import tail

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(_settings(args), print, from_beginning=args.from_beginning))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.clients import decisions_for
    from streams.explain import render

    found = asyncio.run(decisions_for(_settings(args), args.lead_id))
    if not found:
        print(f"no decision recorded for lead {args.lead_id}", file=sys.stderr)
        return 1
    seen: set[str] = set()
    for decision in found:
        if decision.decision_id in seen:  # re-emitted duplicates say the same thing
            continue
        seen.add(decision.decision_id)
        print(decision.model_dump_json(indent=2) if args.json else render(decision))
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    from streams.dryrun import dry_run
    from streams.explain import render

    try:
        decision = dry_run(
            lead_file=Path(args.lead),
            roster_file=Path(args.roster),
            policy_file=Path(args.policy) if args.policy else None,
            loads_file=Path(args.loads) if args.loads else None,
            pool=args.pool,
        )
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError too
        print(f"leadrelay dry-run: {exc}", file=sys.stderr)
        return 2
    print(decision.model_dump_json(indent=2) if args.json else render(decision))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from routing.policy import PolicyError, parse_policy
    from streams.clients import produce

    try:
        policy = parse_policy(Path(args.file).read_text())
    except PolicyError as exc:
        print(f"invalid policy: {exc}", file=sys.stderr)
        return 1
    if args.action == "check":
        print(f"ok: policy {policy.id} v{policy.version}" + (f" for pool {policy.pool}" if policy.pool else ""))
        return 0
    pool = args.pool or policy.pool
    if not pool:
        print("name the pool with --pool or in the policy file", file=sys.stderr)
        return 2
    settings = _settings(args)
    asyncio.run(produce(settings, settings.topic_policies, [(pool.encode(), policy.model_dump_json().encode())]))
    print(f"published policy {policy.id} v{policy.version} for pool {pool} to {settings.topic_policies}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from streams.verify import verify

    report = verify(_settings(args), check_state=not args.no_state)
    print(report.table())
    for name, items in report.problems().items():
        for item in items[:20]:
            print(f"{name}: {item}")
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, seed=args.seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadrelay", description=__doc__)
    p.add_argument("--config", help="settings file (YAML/JSON); env LEADRELAY_* overrides it")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run the worker").set_defaults(func=cmd_worker)
    k = sub.add_parser("kafka", help="a local single-node Kafka for development and tests")
    k.add_argument("action", choices=["start", "stop", "status"])
    k.add_argument("--state-dir")
    k.set_defaults(func=cmd_kafka)
    sub.add_parser("topics", help="create missing topics").set_defaults(func=cmd_topics)
    pr = sub.add_parser("produce", help="send leads or deals from JSON lines, or synthetic ones")
    pr.add_argument("kind", choices=["leads", "deals"])
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="JSON lines, one event each")
    src.add_argument("--synthetic", type=int, metavar="N", help="N generated events")
    pr.add_argument("--seed", type=int, default=1)
    pr.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    pr.set_defaults(func=cmd_produce)
    t = sub.add_parser("tail", help="print decisions as they arrive, one line each")
    t.add_argument("--from-beginning", action="store_true")
    t.set_defaults(func=cmd_tail)
    ex = sub.add_parser("explain", help="print the story of a lead's decisions from the decision log")
    ex.add_argument("lead_id")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_explain)
    dr = sub.add_parser("dry-run", help="evaluate a policy offline for one lead and roster (no Kafka)")
    dr.add_argument("--lead", required=True, help="a LeadCreated JSON file")
    dr.add_argument("--roster", required=True, help="JSON list or JSON lines of RepUpdated")
    dr.add_argument("--policy", help="YAML/JSON policy (default: the built-in one)")
    dr.add_argument("--loads", help='JSON {"rep_id": open_leads}')
    dr.add_argument("--pool")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_dry_run)
    po = sub.add_parser("policy", help="check a policy file, or publish it to the policies topic")
    po.add_argument("action", choices=["check", "publish"])
    po.add_argument("file")
    po.add_argument("--pool", help="the pool (default: the policy's own `pool`)")
    po.set_defaults(func=cmd_policy)
    v = sub.add_parser("verify", help="read all topics back and check the delivery invariants I1-I5")
    v.add_argument("--no-state", action="store_true", help="skip I3 (needs the route table's changelog)")
    v.set_defaults(func=cmd_verify)
    d = sub.add_parser("demo", help="local Kafka + worker + demo roster + synthetic traffic, then a summary")
    d.add_argument("--seconds", type=float, default=30)
    d.add_argument("--rate", type=float, default=10, help="leads per second")
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"leadrelay: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # refused credentials, unreachable brokers: one line, not a traceback
        print(f"leadrelay: cannot talk to Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
