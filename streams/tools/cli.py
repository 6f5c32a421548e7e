"""The `leadrelay` command: worker, ingress, sink, archive, export, kafka, topics, produce, tail, pool, claim,
demo, simulate, replay, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from evaluation.commands import add_replay_parser as add_replay
from evaluation.commands import add_report_parser as add_report
from evaluation.run import add_parser as add_simulate
from streams.archive.tables import BY_TABLE
from streams.kafka.admin import TopicMismatch
from streams.settings import Settings, SettingsError


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(os.environ, Path(args.config) if args.config else None)


def _jsonl(path: Path) -> Iterator[bytes]:
    fh = path.open("rb")  # opened now, not at the first record: a missing file fails before Kafka is contacted

    def lines() -> Iterator[bytes]:
        with fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip(b"\n")

    return lines()


def _cannot_read(command: str, exc: OSError) -> int:
    """A file the user named that cannot be read: one line, exit 2 (like a usage error)."""
    print(f"leadrelay {command}: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
    return 2


def _count(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _non_negative(text: str) -> float:
    """argparse type: a number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> float:
    """argparse type: a number above 0."""
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.runtime.worker import run

    return run(_settings(args))


def cmd_ingress(args: argparse.Namespace) -> int:
    from streams.ingress.app import run

    return run(_settings(args))


def cmd_sink(args: argparse.Namespace) -> int:
    from streams.sink.webhook import run

    return run(_settings(args))


def cmd_archive(args: argparse.Namespace) -> int:
    from streams.archive.archiver import run

    return run(_settings(args))


def cmd_export(args: argparse.Namespace) -> int:
    from streams.archive.export import Query, export, format_of
    from streams.archive.store import ArchiveStore, redact

    settings = _settings(args)
    query = Query(table=args.table, since=args.since, until=args.until, pool=args.pool, rep=args.rep)
    fmt = format_of(args.out, args.format)
    if fmt == "parquet" and (not args.out or args.out == "-"):
        print("leadrelay export: Parquet needs a file: --out PATH", file=sys.stderr)
        return 2
    store = ArchiveStore.from_settings(settings)
    try:
        count = export(store, query, fmt, args.out)
    except OSError as exc:
        print(f"leadrelay export: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the database: unreachable, refused credentials, no archive yet
        print(f"leadrelay export: archive {redact(settings.archive_url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    finally:
        store.close()
    if args.out and args.out != "-":
        print(f"exported {count} {args.table} rows to {args.out} ({fmt})", file=sys.stderr)
    return 0


def _timestamp(text: str) -> datetime:
    """argparse type: ISO 8601; without an offset it is UTC."""
    from streams.archive.tables import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 timestamp, got {text!r}") from None


def cmd_kafka(args: argparse.Namespace) -> int:
    from streams.tools import localkafka

    return localkafka.main([args.action, *(["--state-dir", args.state_dir] if args.state_dir else [])])


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.kafka.admin import ensure_topics

    created = asyncio.run(ensure_topics(_settings(args)))
    print("created: " + (", ".join(created) if created else "nothing (all present)"))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.kafka.clients import produce
    from streams.tools import synthetic

    settings = _settings(args)
    topic = {
        "leads": settings.topic_leads_new,
        "updates": settings.topic_leads_updated,
        "deals": settings.topic_deals_closed,
    }[args.kind]
    records: Iterator[tuple[bytes | None, bytes | None]]
    if args.file:
        try:
            lines = _jsonl(Path(args.file))
        except OSError as exc:
            return _cannot_read("produce", exc)
        # Leads and deals are both keyed by lead_id, like a CRM connector would key them.
        records = ((_key(line, "lead_id"), line) for line in lines)
    elif args.kind == "leads":
        records = ((lead.lead_id.encode(), synthetic.wire(lead)) for lead in synthetic.leads(args.seed))
        records = islice(records, args.synthetic)
    elif args.kind == "updates":  # the leads of `produce leads` with the same seed, each now worth twice as much
        updated = (
            u.model_copy(update={"estimated_value": 2 * (u.estimated_value or 500.0)})
            for u in synthetic.leads(args.seed)
        )
        records = islice(((u.lead_id.encode(), synthetic.wire(u)) for u in updated), args.synthetic)
    else:
        rng, now = random.Random(args.seed), datetime.now(UTC)
        leads = islice(synthetic.leads(args.seed, start=now), args.synthetic)
        deals = (synthetic.deal_for(lead, rng, now=now) for lead in leads)
        records = ((deal.lead_id.encode(), deal.model_dump_json().encode()) for deal in deals)
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
    from streams.kafka.clients import tail

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(_settings(args), print, from_beginning=args.from_beginning))
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    from streams.tools.openpool import claimable, waiting

    listing = waiting if args.waiting else claimable
    found = asyncio.run(listing(_settings(args), args.pool))
    for item in found:
        print(orjson.dumps(item.__dict__).decode() if args.json else item.line())
    if not args.json:
        print(f"{len(found)} {'waiting' if args.waiting else 'claimable'} lead(s)", file=sys.stderr)
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    from streams.tools.openpool import claim

    sent, answer = asyncio.run(claim(_settings(args), args.lead_id, args.rep, pool=args.pool, timeout=args.timeout))
    if answer is None:
        print(
            f"claim {sent.claim_id}: no answer within {args.timeout:g}s (the worker answers it later)", file=sys.stderr
        )
        return 3
    if args.json:
        print(answer.model_dump_json())
    else:
        verdict = f"won (attempt {answer.attempt})" if answer.accepted else f"refused: {answer.reason}"
        print(f"claim {answer.claim_id} on {answer.lead_id} by {answer.rep_id}: {verdict}; {answer.detail}")
    return 0 if answer.accepted else 1


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.kafka.clients import decisions_for
    from streams.tools.explain import render

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
    from streams.tools.dryrun import dry_run
    from streams.tools.explain import render

    try:
        decision = dry_run(
            lead_file=Path(args.lead),
            roster_file=Path(args.roster),
            policy_file=Path(args.policy) if args.policy else None,
            loads_file=Path(args.loads) if args.loads else None,
            pool=args.pool,
        )
    except OSError as exc:
        return _cannot_read("dry-run", exc)
    except ValueError as exc:  # DryRunError: names the file and the record
        print(f"leadrelay dry-run: {exc}", file=sys.stderr)
        return 2
    print(decision.model_dump_json(indent=2) if args.json else render(decision))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from routing.policy import PolicyError, parse_policy

    try:
        policy = parse_policy(Path(args.file).read_text())
    except OSError as exc:
        return _cannot_read(f"policy {args.action}", exc)
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
    if policy.pool is not None and policy.pool != pool:  # the worker dead-letters it as a key mismatch
        print(f"the policy names pool {policy.pool!r}, not {pool!r}: drop --pool or fix `pool`", file=sys.stderr)
        return 2
    return _publish(_settings(args), pool, policy.model_dump(mode="json"))


def _publish(settings: Settings, pool: str, body: dict[str, Any]) -> int:
    """Send a policy only if the worker will take it: the worker refuses (stale_policy_version) a policy
    that differs from the running one without a higher version. Compared with the running policy (the
    route table) and with the newest record on the policies topic (the worker may not have read it yet)."""
    from routing.policy import PolicyError, parse_policy
    from streams.kafka.clients import policy_state, produce

    state = asyncio.run(policy_state(settings, pool))
    on_topic = None
    if state.on_topic is not None:
        with contextlib.suppress(PolicyError):  # an invalid record there was dead-lettered: not a baseline
            on_topic = parse_policy(state.on_topic).model_dump(mode="json")

    def name(p: dict[str, Any] | None) -> str:
        return f"{p['id']} v{p['version']}" if p is not None else "none"

    topic = settings.topic_policies
    new = name(body)
    print(
        f"pool {pool}: live policy {name(state.live) if state.live else 'none (default)'}, newest on {topic}: "
        f"{name(on_topic)}; publishing {new}"
    )
    if body == state.live:
        print(f"already live: policy {new} for pool {pool}; nothing sent")
        return 0
    for where, current in (("live", state.live), (f"newest on {topic}", on_topic)):
        if current is not None and body != current and body["version"] <= current["version"]:
            print(
                f"refused: policy {new} differs from the {where} policy {name(current)} but is not newer, so the "
                f"worker would dead-letter it (stale_policy_version); set `version` to {current['version'] + 1} "
                "or more; nothing sent",
                file=sys.stderr,
            )
            return 1
    if body == on_topic:
        print(f"already on {topic}, not yet live (the worker applies it when it reads it); nothing sent")
        return 0
    asyncio.run(produce(settings, topic, [(pool.encode(), orjson.dumps(body))]))
    print(f"published policy {new} for pool {pool} to {topic}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from streams.tools.verify import verify

    report = verify(_settings(args), check_state=not args.no_state)
    print(report.table())
    for name, items in report.problems().items():
        for item in items[:20]:
            print(f"{name}: {item}")
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.tools.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, seed=args.seed)


def cmd_simulate(args: argparse.Namespace) -> int:
    from evaluation.run import main as simulate

    return simulate(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from evaluation.commands import replay_main

    return replay_main(args, lambda: _settings(args))


def cmd_report(args: argparse.Namespace) -> int:
    from evaluation.commands import report_main

    return report_main(args, lambda: _settings(args))


def _version() -> str:
    try:
        return importlib.metadata.version("leadrelay")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _add_processes(sub: Any) -> None:
    """The long-running processes: the worker, and at its edges HTTP in and CRM out."""
    w = sub.add_parser("worker", help="run the worker until SIGTERM/Ctrl-C (creates missing topics first)")
    w.set_defaults(func=cmd_worker)
    ig = sub.add_parser("ingress", help="serve POST /v1/leads and /v1/deals (signed) until SIGTERM/Ctrl-C")
    ig.set_defaults(func=cmd_ingress)
    si = sub.add_parser("sink", help="deliver decisions to a CRM until SIGTERM/Ctrl-C (sink_* settings)")
    si.add_argument("kind", choices=["webhook"], help="webhook: one HTTP request per decision (sink_template)")
    si.set_defaults(func=cmd_sink)
    ar = sub.add_parser(
        "archive", help="keep every decision and deal in the archive database until SIGTERM/Ctrl-C (archive_*)"
    )
    ar.set_defaults(func=cmd_archive)
    ex = sub.add_parser("export", help="write archived rows to CSV or Parquet, by time range, pool and rep")
    ex.add_argument(
        "--table", choices=sorted(BY_TABLE), default="decisions", help="what to export (default: %(default)s)"
    )
    ex.add_argument(
        "--since", type=_timestamp, help="rows at or after this time, ISO 8601, UTC if no offset (default: the oldest)"
    )
    ex.add_argument("--until", type=_timestamp, help="rows before this time (default: up to the newest)")
    ex.add_argument("--pool", help="only this pool (default: every pool)")
    ex.add_argument("--rep", help="only this rep; deals: the credited rep, else the lead's holder (default: every rep)")
    ex.add_argument(
        "--format", choices=["csv", "parquet"], help="default: parquet for an --out ending in .parquet, else csv"
    )
    ex.add_argument("--out", help="output file (default: standard output, CSV only)")
    ex.set_defaults(func=cmd_export)


def _add_open_pool(sub: Any) -> None:
    """The open pool for people and scripts: what is claimable, and a claim with its answer."""
    pl = sub.add_parser("pool", help="list the claimable leads of the open pool (from the route table)")
    pl.add_argument("--pool", help="only this pool (default: every pool)")
    pl.add_argument("--json", action="store_true", help="one JSON object per lead (default: one line each)")
    pl.add_argument(
        "--waiting", action="store_true", help="list the leads waiting for capacity instead, in the order taken"
    )
    pl.set_defaults(func=cmd_pool)
    cl = sub.add_parser("claim", help="claim an open-pool lead for a rep and wait for the answer (exit 1: refused)")
    cl.add_argument("lead_id", help="the lead's id")
    cl.add_argument("--rep", required=True, help="the claiming rep's id (required)")
    cl.add_argument("--pool", help="the lead's pool, informational (default: none; the lead index decides)")
    cl.add_argument(
        "--timeout", type=_positive, default=30, help="seconds to wait for the answer (default: %(default)s)"
    )
    cl.add_argument("--json", action="store_true", help="print the answer as JSON (default: one line)")
    cl.set_defaults(func=cmd_claim)


def parser() -> argparse.ArgumentParser:
    # Every command and option says what it does and its default (tests/unit/test_cli.py checks that).
    p = argparse.ArgumentParser(prog="leadrelay", description=__doc__)
    p.add_argument("--version", action="version", version=f"leadrelay {_version()}", help="print the version and exit")
    p.add_argument(
        "--config",
        help="settings file (YAML/JSON; default: $LEADRELAY_CONFIG_FILE, else none); LEADRELAY_* overrides it",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_processes(sub)
    k = sub.add_parser("kafka", help="a local single-node Kafka for development and tests")
    k.add_argument(
        "action", choices=["start", "stop", "status"], help="start (prints the bootstrap address), stop or status"
    )
    k.add_argument("--state-dir", help="broker state directory (default: $LEADRELAY_STATE/kafka, else ./.state/kafka)")
    k.set_defaults(func=cmd_kafka)
    to = sub.add_parser("topics", help="create missing topics and check their partition counts")
    to.set_defaults(func=cmd_topics)
    pr = sub.add_parser("produce", help="send leads, lead updates or deals from JSON lines, or synthetic ones")
    pr.add_argument(
        "kind", choices=["leads", "updates", "deals"], help="send to the leads, lead updates or deals topic"
    )
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="JSON lines, one event each, keyed by lead_id (no default: this or --synthetic)")
    src.add_argument("--synthetic", type=_count, metavar="N", help="N generated events (no default: this or --file)")
    pr.add_argument("--seed", type=int, default=1, help="seed of the synthetic events (default: %(default)s)")
    pr.add_argument(
        "--rate", type=_non_negative, default=0, help="events per second (default: %(default)s, as fast as possible)"
    )
    pr.set_defaults(func=cmd_produce)
    t = sub.add_parser("tail", help="print decisions as they arrive, one line each, until Ctrl-C")
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest decision (default: the newest)")
    t.set_defaults(func=cmd_tail)
    _add_open_pool(sub)
    ex = sub.add_parser("explain", help="print the story of a lead's decisions from the decision log")
    ex.add_argument("lead_id", help="the lead's id")
    ex.add_argument("--json", action="store_true", help="print the decisions as JSON (default: a readable report)")
    ex.set_defaults(func=cmd_explain)
    dr = sub.add_parser("dry-run", help="evaluate a policy offline for one lead and roster (no Kafka)")
    dr.add_argument("--lead", required=True, help="a LeadCreated JSON file (required)")
    dr.add_argument("--roster", required=True, help="JSON list or JSON lines of RepUpdated (required)")
    dr.add_argument("--policy", help="YAML/JSON policy (default: the built-in least-loaded one)")
    dr.add_argument("--loads", help='JSON {"rep_id": open_leads} (default: every rep has 0 open leads)')
    dr.add_argument("--pool", help="the pool (default: the lead's, else the policy's, else the roster's only pool)")
    dr.add_argument("--json", action="store_true", help="print the decision as JSON (default: a readable report)")
    dr.set_defaults(func=cmd_dry_run)
    po = sub.add_parser("policy", help="check a policy file, or publish it to the policies topic")
    po.add_argument(
        "action", choices=["check", "publish"], help="check: validate only; publish: send it if newer than the live one"
    )
    po.add_argument("file", help="the policy file (YAML or JSON)")
    po.add_argument("--pool", help="the pool (default: the policy's own `pool`)")
    po.set_defaults(func=cmd_policy)
    v = sub.add_parser("verify", help="read all topics back and check the delivery invariants I1-I5")
    v.add_argument(
        "--no-state", action="store_true", help="skip I3 (default: checked; needs the route table's changelog)"
    )
    v.set_defaults(func=cmd_verify)
    d = sub.add_parser("demo", help="local Kafka + worker + demo roster + synthetic traffic, then a summary")
    d.add_argument("--seconds", type=_positive, default=30, help="seconds of traffic (default: %(default)s)")
    d.add_argument("--rate", type=_positive, default=10, help="leads per second (default: %(default)s)")
    d.add_argument("--seed", type=int, default=7, help="seed of the synthetic leads (default: %(default)s)")
    d.set_defaults(func=cmd_demo)
    for add, func in ((add_simulate, cmd_simulate), (add_replay, cmd_replay), (add_report, cmd_report)):
        add(sub).set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"leadrelay: {exc}", file=sys.stderr)
        return 2
    except TopicMismatch as exc:  # from `topics` and at worker start, before the worker joins its group
        print(f"leadrelay: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # refused credentials, unreachable brokers: one line, not a traceback
        print(f"leadrelay: cannot talk to Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
