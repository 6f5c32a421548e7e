"""The `leadrelay replay` and `leadrelay report` commands: options, inputs (files or Kafka), outputs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation import outcomes, writeup
from evaluation.history import History, HistoryError, from_jsonl, from_records, read_jsonl
from schemas.events import AssignmentDecision, DealClosed, LeadCreated, RepUpdated

if TYPE_CHECKING:
    from streams.settings import Settings


def _time(text: str) -> datetime:
    """argparse type: an ISO 8601 time, UTC when it has no offset."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _share(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _range_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--since", type=_time, help=f"Kafka: {what} from this time on (default: the oldest)")
    p.add_argument("--until", type=_time, help=f"Kafka: {what} before this time (default: up to now)")


def add_replay_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="re-decide recorded leads with a candidate policy and compare with history"
    )
    p.add_argument("--policy", required=True, help="the candidate policy file, YAML or JSON (required)")
    p.add_argument("--pool", action="append", help="replay only this pool, repeatable (default: every pool)")
    p.add_argument("--leads", help="JSON lines of LeadCreated: read the history from files (default: from Kafka)")
    p.add_argument("--deals", help="JSON lines of DealClosed (files: default none; Kafka: deals.closed)")
    p.add_argument("--decisions", help="JSON lines of recorded decisions (files: default none; Kafka: the topic)")
    p.add_argument("--roster", help="roster file, applied at each record's updated_at (default: reps.roster topic)")
    _range_options(p, "leads")
    p.add_argument(
        "--from-offset",
        action="append",
        metavar="[P:]N",
        help="Kafka: leads from offset N (of partition P) (default: 0)",
    )
    p.add_argument(
        "--to-offset",
        action="append",
        metavar="[P:]N",
        help="Kafka: leads before offset N (of partition P) (default: end)",
    )
    p.add_argument(
        "--segment-by",
        action="append",
        help="lead field the conversion model segments by, repeatable (default: industry)",
    )
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    p.add_argument("--alpha", type=_share, default=0.05, help="1 - interval coverage (default: %(default)s)")
    p.add_argument("--out", default="replay", help="directory for replay.md, replay.json, *.png (default: %(default)s)")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts (default: drawn)")
    return p


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "report", help="conversion by strategy, variant, rep and tier; A/B with a stopping rule; fairness over time"
    )
    p.add_argument("--decisions", help="JSON lines of decisions: read files (default: from Kafka)")
    p.add_argument(
        "--archive",
        nargs="?",
        const="",
        metavar="URL",
        help="read decisions and deals from the archive (`leadrelay archive`): its database URL, or the "
        "configured archive_url without one (default: from Kafka); --since/--until select by decided_at",
    )
    p.add_argument("--deals", help="JSON lines of DealClosed (files: default none; Kafka: deals.closed)")
    p.add_argument("--leads", help="JSON lines of LeadCreated, for lead values (files: default none; Kafka: leads.new)")
    p.add_argument("--roster", help="roster file, for rep tiers and capacity (files: default none; Kafka: reps.roster)")
    _range_options(p, "decisions")
    p.add_argument("--period", choices=["day", "week"], default="week", help="time buckets (default: %(default)s)")
    p.add_argument(
        "--min-effect",
        type=_share,
        default=0.05,
        help="smallest absolute change in conversion worth detecting (default: %(default)s)",
    )
    p.add_argument(
        "--alpha", type=_share, default=0.05, help="false positive rate of the A/B test (default: %(default)s)"
    )
    p.add_argument("--power", type=_share, default=0.8, help="power of the A/B test (default: %(default)s)")
    p.add_argument("--baseline", type=_share, help="control conversion to size the test (default: the observed one)")
    p.add_argument("--control", help="the control variant (default: the first variant id in sort order)")
    p.add_argument("--out", default="report", help="directory for report.md, report.json, *.png (default: %(default)s)")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts (default: drawn)")
    return p


def _history_from_kafka(settings: Settings, args: argparse.Namespace) -> History:
    from evaluation.sources import Range, parse_offsets, read_topics

    leads = Range(args.since, args.until, parse_offsets(args.from_offset), parse_offsets(args.to_offset))
    later = Range(since=args.since)  # decisions and deals of those leads come after them
    records = read_topics(
        settings,
        {
            "leads": (settings.topic_leads_new, leads),
            "deals": (settings.topic_deals_closed, later),
            "decisions": (settings.topic_assignments, later),
            "roster": (settings.topic_reps_roster, Range()),
        },
    )
    return from_records(**records)


def replay_main(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    from evaluation import replay
    from routing.policy import PolicyError, parse_policy

    try:
        policy = parse_policy(Path(args.policy).read_text())
        if args.leads:
            files = {k: Path(v) for k in ("leads", "deals", "decisions", "roster") if (v := getattr(args, k))}
            history = from_jsonl(**files)
            rules, default = [], "default"
        else:
            s = settings()
            history = _history_from_kafka(s, args)
            if args.roster:
                history.roster = from_jsonl(roster=Path(args.roster)).roster
            rules, default = list(s.territory_rules), s.default_pool
    except OSError as exc:
        print(f"leadrelay replay: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (HistoryError, PolicyError, ValueError) as exc:
        print(f"leadrelay replay: {exc}", file=sys.stderr)
        return 2
    run = replay.Replayer(
        policy, pools=args.pool or (), rules=rules, default_pool=default, segment_by=args.segment_by or ["industry"]
    ).run(history)
    summary = replay.summarize(run, resamples=args.resamples, seed=args.seed, alpha=args.alpha)
    summary["policy"] = {"id": policy.id, "version": policy.version, "file": str(args.policy)}
    text = writeup.replay_markdown(summary, f"{policy.id} v{policy.version}")
    out = Path(args.out)
    written = writeup.write(out, "replay", text, summary)
    if not args.no_charts:
        from evaluation import figures

        written += figures.replay(out, summary)
    print(text.split("\n## Load and fairness")[0].rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def report_main(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    try:
        if args.archive is not None:
            decisions, deals = _report_from_archive(settings, args)
            leads = read_jsonl(Path(args.leads), LeadCreated) if args.leads else []
            roster = read_jsonl(Path(args.roster), RepUpdated) if args.roster else []
        elif args.decisions:
            decisions = read_jsonl(Path(args.decisions), AssignmentDecision)
            deals = read_jsonl(Path(args.deals), DealClosed) if args.deals else []
            leads = read_jsonl(Path(args.leads), LeadCreated) if args.leads else []
            roster = read_jsonl(Path(args.roster), RepUpdated) if args.roster else []
        else:
            decisions, deals, leads, roster = _report_from_kafka(settings(), args)
    except OSError as exc:
        print(f"leadrelay report: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except HistoryError as exc:
        print(f"leadrelay report: {exc}", file=sys.stderr)
        return 2
    joined = outcomes.join(decisions, deals, leads=leads, roster=roster)
    summary = outcomes.summarize(
        joined,
        period=args.period,
        effect=args.min_effect,
        alpha=args.alpha,
        power=args.power,
        baseline=args.baseline,
        control=args.control,
    )
    text = writeup.report_markdown(summary)
    out = Path(args.out)
    written = writeup.write(out, "report", text, summary)
    if not args.no_charts:
        from evaluation import figures

        written += figures.report(out, summary)
    head = text.split("\n## Conversion by pool")[0].rstrip()
    experiments = text.split("\n## Experiments")[1].split("\n## Fairness")[0]
    print(head + "\n\n## Experiments" + experiments.rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    problems = outcomes.totals_add_up(summary)
    for problem in problems:  # a bug, never a property of the input: every lead is in one row of each table
        print(f"leadrelay report: totals do not add up: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _report_from_archive(
    settings: Callable[[], Settings], args: argparse.Namespace
) -> tuple[list[AssignmentDecision], list[DealClosed]]:
    """Decisions decided in [since, until) and deals closed since `since`, as the archive keeps them (every
    attempt once, by decision id): the history outlives the topics' retention there."""
    from streams.archive.store import ArchiveStore, redact
    from streams.archive.tables import DEALS, DECISIONS

    store = ArchiveStore(args.archive) if args.archive else ArchiveStore.from_settings(settings())
    try:
        rows = store.select(DECISIONS, since=args.since, until=args.until)
        decisions = [AssignmentDecision.model_validate_json(row[-1]) for row in rows]
        deals = [DealClosed.model_validate_json(row[-1]) for row in store.select(DEALS, since=args.since)]
    except Exception as exc:  # sqlite3 / psycopg errors, records that no longer validate: one line
        raise HistoryError(f"cannot read the archive {redact(store.url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        store.close()
    return decisions, deals


def _report_from_kafka(
    settings: Settings, args: argparse.Namespace
) -> tuple[list[AssignmentDecision], list[DealClosed], list[LeadCreated], list[RepUpdated]]:
    from evaluation.sources import Range, read_topics

    window = Range(args.since, args.until)
    records = read_topics(
        settings,
        {
            "decisions": (settings.topic_assignments, window),
            "deals": (settings.topic_deals_closed, Range(since=args.since)),
            "leads": (settings.topic_leads_new, Range(until=args.until)),
            "roster": (settings.topic_reps_roster, Range()),
        },
    )
    if args.roster:
        records["roster"] = []
    history = from_records(**records)
    roster = [c.profile for _, c in history.roster if c.profile is not None]
    if args.roster:
        roster = read_jsonl(Path(args.roster), RepUpdated)
    return history.decisions, [d for _, d in history.deals], [lead for _, lead in history.leads], roster
