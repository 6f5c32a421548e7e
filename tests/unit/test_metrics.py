"""streams.web.metrics and streams.web.health without a broker: names, labels, bounds, lag, readiness."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from schemas.events import AssignmentDecision, Explanation
from streams.web.health import FAUST_LINT_FINDINGS, FAUST_PREFIX
from streams.web.metrics import OTHER, Metrics
from tests.deploy.observability import build_exposition, exposed_series_names, promtool_lint

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def decision(pool: str = "dach", reason: str = "assigned", strategy: str = "balanced", variant: str | None = None):
    return AssignmentDecision(
        decision_id=f"d-{pool}",
        lead_id="L1",
        pool=pool,
        rep_id="anna" if reason == "assigned" else None,
        reason=reason,  # type: ignore[arg-type]
        policy_id="default",
        policy_version=1,
        variant=variant,
        explanation=Explanation(strategy=strategy, summary="test"),
        lead_created_at=NOW,
        decided_at=NOW,
    )


def fresh(**kwargs: Any) -> Metrics:
    return Metrics.create(CollectorRegistry(), runtime_collectors=False, **kwargs)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def series(m: Metrics, name: str) -> list[dict[str, str]]:
    return [s.labels for metric in m.registry.collect() for s in metric.samples if s.name == name]


def exercise(m: Metrics) -> None:
    """One observation of everything agents and the worker report."""
    m.record_decision(decision(variant="b"), 0.2)
    m.record_decision(decision(reason="no_eligible_rep"), 0.3)
    m.record_duplicate("dach")
    m.record_deal("dach", "won", "b", matched=True)
    m.record_dead_letter("leads.new", "invalid_json")
    m.record_internal_error("route")
    m.set_pool_state("dach", open_leads=3, capacity=10)
    m.record_release("dach")
    m.set_fairness("dach", 0.25)
    m.set_policy("dach", "default", 3, ["a", "b"])
    m.set_rep_load("dach", "anna", 2, 5)
    m.set_consumer_lag({("leads.new", 0): 4})
    m.record_activity("first_contact", "touched")
    m.record_sla("reassigned")
    m.set_waiting("dach", 2)
    m.record_waiting("dach", "assigned")
    m.record_waiting("dach", "timed_out")


# --- names: promtool lint on the real exposition -------------------------------------------------


def test_real_exposition_passes_promtool_except_documented_faust_names(tmp_path: Path) -> None:
    _, relay = build_exposition(tmp_path, metrics_per_rep=True)
    exercise(relay.metrics)
    text = generate_latest(relay.metrics.registry).decode()
    findings = promtool_lint(text)
    ours = {metric: problem for metric, problem in findings.items() if not metric.startswith(FAUST_PREFIX)}
    assert ours == {}
    assert findings.keys() == FAUST_LINT_FINDINGS.keys()
    for metric, problem in FAUST_LINT_FINDINGS.items():
        assert problem in findings[metric]


def test_promtool_lint_does_catch_a_bad_name() -> None:
    """Guard the guard: a counter without _total and an abbreviated unit are reported."""
    bad = (
        "# HELP x_latency_ms bad\n# TYPE x_latency_ms gauge\nx_latency_ms 1\n"
        "# HELP y_sent y\n# TYPE y_sent counter\ny_sent 1\n"
    )
    findings = promtool_lint(bad)
    assert set(findings) == {"x_latency_ms", "y_sent"}


def test_exposition_has_every_metric_of_the_issue(tmp_path: Path) -> None:
    text, _ = build_exposition(tmp_path)
    names = exposed_series_names(text)
    wanted = {
        "leadrelay_decisions_total",  # by pool, reason, strategy, variant
        "leadrelay_decision_latency_seconds_bucket",
        "leadrelay_dead_letters_total",  # by source, reason
        "leadrelay_open_leads",
        "leadrelay_capacity_leads",
        "leadrelay_fairness_gini_ratio",
        "leadrelay_deals_total",  # conversion by variant
        "leadrelay_policy_info",
        "leadrelay_consumer_lag_records",
        "leadrelay_worker_ready",
        "leadrelay_build_info",
        "leadrelay_faust_messages_received_total",  # Faust's sensors
        "leadrelay_faust_total_rebalances",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
    }
    assert wanted <= names
    assert not any(name.endswith("_created") for name in names)


# --- labels and cardinality ----------------------------------------------------------------------


def test_decision_labels_and_latency() -> None:
    m = fresh()
    m.record_decision(decision(variant="b"), 0.2)
    m.record_decision(decision(reason="no_eligible_rep"), -1.0)  # clock skew is clamped, not negative
    labels = {"pool": "dach", "reason": "assigned", "strategy": "balanced", "variant": "b"}
    assert value(m, "leadrelay_decisions_total", **labels) == 1
    assert value(m, "leadrelay_decision_latency_seconds_count") == 2
    assert value(m, "leadrelay_decision_latency_seconds_bucket", le="0.005") == 1
    assert value(m, "leadrelay_decision_latency_seconds_sum") == pytest.approx(0.2)


def test_lifecycle_counters_and_a_timers_decision_without_latency() -> None:
    m = fresh()
    m.record_activity("disqualified", "closed")
    m.record_activity("disqualified", "closed")
    m.record_sla("returned_to_pool")
    m.record_decision(decision(reason="sent_to_claim_pool"), None)
    assert value(m, "leadrelay_activity_records_total", kind="disqualified", outcome="closed") == 2
    assert value(m, "leadrelay_sla_reassignments_total", outcome="returned_to_pool") == 1
    assert value(m, "leadrelay_decision_latency_seconds_count") == 0, "a timer's decision has no lead latency"


def test_waiting_metrics_per_pool_with_bounded_labels() -> None:
    m = fresh(max_pools=1)
    m.set_waiting("p1", 3)
    m.record_waiting("p1", "assigned")
    m.record_waiting("p1", "timed_out")
    m.record_waiting("p2", "assigned")
    m.set_waiting("p2", 5)  # past the limit: a gauge is dropped, not folded
    assert value(m, "leadrelay_waiting_leads", pool="p1") == 3
    assert value(m, "leadrelay_waiting_assigned_total", pool="p1") == 1
    assert value(m, "leadrelay_waiting_timeouts_total", pool="p1") == 1
    assert value(m, "leadrelay_waiting_assigned_total", pool="_other") == 1
    assert [s["pool"] for s in series(m, "leadrelay_waiting_leads")] == ["p1"]


def test_contact_duplicates_per_pool_and_key_kind_with_bounded_labels() -> None:
    m = fresh(max_pools=1)
    m.record_contact_duplicate("p1", "email")
    m.record_contact_duplicate("p1", "email")
    m.record_contact_duplicate("p2", "phone")
    assert value(m, "leadrelay_contact_duplicates_total", pool="p1", key="email") == 2
    assert value(m, "leadrelay_contact_duplicates_total", pool="_other", key="phone") == 1
    assert value(m, "leadrelay_duplicate_leads_total", pool="p1") is None, "re-sent leads are another counter"


def test_counter_pools_past_the_limit_fold_into_other_and_are_counted() -> None:
    m = fresh(max_pools=2)
    for pool in ("p1", "p2", "p3", "p4", "p1"):
        m.record_decision(decision(pool=pool), 0.1)
    pools = sorted(labels["pool"] for labels in series(m, "leadrelay_decisions_total"))
    assert pools == [OTHER, "p1", "p2"]
    assert value(m, "leadrelay_decisions_total", pool=OTHER, reason="assigned", strategy="balanced", variant="") == 2
    assert value(m, "leadrelay_metric_label_overflow_total", label="pool") == 2


def test_gauge_pools_past_the_limit_are_dropped_not_summed_into_other() -> None:
    m = fresh(max_pools=1)
    m.set_pool_state("p1", open_leads=1, capacity=5)
    m.set_pool_state("p2", open_leads=7, capacity=9)
    m.set_fairness("p2", 0.5)
    assert [s["pool"] for s in series(m, "leadrelay_open_leads")] == ["p1"]
    assert series(m, "leadrelay_fairness_gini_ratio") == []
    assert value(m, "leadrelay_metric_label_overflow_total", label="pool") == 2


def test_strategy_and_variant_are_bounded_too() -> None:
    m = fresh(max_strategies=1, max_variants=1)
    m.record_decision(decision(strategy="s1", variant="v1"), 0.1)
    m.record_decision(decision(strategy="s2", variant="v2"), 0.1)
    got = {(s["strategy"], s["variant"]) for s in series(m, "leadrelay_decisions_total")}
    assert got == {("s1", "v1"), (OTHER, OTHER)}


def test_release_never_drives_the_open_load_negative() -> None:
    m = fresh()
    m.record_release("dach")  # a deal closed before this worker decided anything in the pool
    assert series(m, "leadrelay_open_leads") == []
    m.set_pool_state("dach", open_leads=2, capacity=4)
    m.record_release("dach")
    assert value(m, "leadrelay_open_leads", pool="dach") == 1


def test_fairness_is_clamped_to_a_ratio() -> None:
    m = fresh()
    m.set_fairness("dach", 1.7)
    m.set_fairness("emea", -0.1)
    assert value(m, "leadrelay_fairness_gini_ratio", pool="dach") == 1.0
    assert value(m, "leadrelay_fairness_gini_ratio", pool="emea") == 0.0


def test_policy_info_keeps_one_series_per_pool() -> None:
    m = fresh()
    m.set_policy("dach", "balanced", 1)
    m.set_policy("dach", "balanced", 2, ["control", "b"])
    assert series(m, "leadrelay_policy_info") == [
        {"pool": "dach", "policy_id": "balanced", "version": "2", "variants": "b,control"}
    ]
    m.set_policy("dach", "balanced", 2, ["b", "control"])  # per-decision calls: unchanged, no work
    m.set_policy("emea", "default", 1)
    assert len(series(m, "leadrelay_policy_info")) == 2


def test_per_rep_series_only_when_enabled_and_bounded() -> None:
    off = fresh()
    off.set_rep_load("dach", "anna", 1, 5)
    assert series(off, "leadrelay_rep_open_leads") == []

    on = fresh(per_rep=True, max_reps=2)
    for rep in ("anna", "bernd", "clara"):
        on.set_rep_load("dach", rep, 1, 5)
    assert sorted(s["rep"] for s in series(on, "leadrelay_rep_open_leads")) == ["anna", "bernd"]
    assert value(on, "leadrelay_metric_label_overflow_total", label="rep") == 1
    on.forget_rep("dach", "anna")
    assert [s["rep"] for s in series(on, "leadrelay_rep_capacity_leads")] == ["bernd"]


def test_pools_whose_partition_moved_away_lose_their_gauges() -> None:
    m = fresh(per_rep=True)
    where = {"at": ("lr-pool-events", 0)}
    m.locate = lambda: where["at"]
    m.set_pool_state("dach", open_leads=1, capacity=5)
    m.set_policy("dach", "default", 1)
    m.set_rep_load("dach", "anna", 1, 5)
    where["at"] = ("lr-pool-events", 1)
    m.set_pool_state("emea", open_leads=2, capacity=6)
    m.set_fairness("emea", 0.1)
    m.record_decision(decision(pool="dach"), 0.1)

    gone = m.retain_partitions({TP("lr-pool-events", 1), TP("leads.new", 0)})

    assert gone == ["dach"]
    assert [s["pool"] for s in series(m, "leadrelay_open_leads")] == ["emea"]
    assert [s["pool"] for s in series(m, "leadrelay_capacity_leads")] == ["emea"]
    assert series(m, "leadrelay_policy_info") == []
    assert series(m, "leadrelay_rep_open_leads") == []
    where["at"] = ("lr-pool-events", 1)  # the pool comes back to this worker later: its policy is re-exported
    m.set_policy("dach", "default", 1)
    assert [s["pool"] for s in series(m, "leadrelay_policy_info")] == ["dach"]
    assert value(m, "leadrelay_fairness_gini_ratio", pool="emea") == 0.1
    # counters are cumulative per process and stay
    assert value(m, "leadrelay_decisions_total", pool="dach", reason="assigned", strategy="balanced", variant="") == 1


def test_no_contact_data_can_become_a_label() -> None:
    """Labels are ids and closed vocabularies; the decision model carries no contact field at all."""
    m = fresh(per_rep=True)
    exercise(m)
    labels = {k for metric in m.registry.collect() for s in metric.samples for k in s.labels}
    assert labels <= {
        "pool", "reason", "strategy", "variant", "outcome", "matched", "source", "agent", "rep",
        "policy_id", "version", "variants", "topic", "partition", "label", "le", "kind",
        "aiokafka", "faust", "python",
    }  # fmt: skip


# --- consumer lag --------------------------------------------------------------------------------


def _samples(m: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for metric in m.registry.collect() for s in metric.samples if s.name == name]


def test_lag_series_follow_the_assignment() -> None:
    m = fresh()
    m.set_consumer_lag({("leads.new", 0): 5, ("leads.new", 1): 0})
    m.set_consumer_lag({("leads.new", 1): 2, ("deals.closed", 1): -3})
    got = {(s["topic"], s["partition"]): v for s, v in _samples(m, "leadrelay_consumer_lag_records")}
    assert got == {("leads.new", "1"): 2, ("deals.closed", "1"): 0}
    # during a rebalance: keep what is still ours, drop the rest
    m.set_consumer_lag({}, keep=[("deals.closed", 1)])
    got = {(s["topic"], s["partition"]): v for s, v in _samples(m, "leadrelay_consumer_lag_records")}
    assert got == {("deals.closed", "1"): 0}


def test_readiness_follows_the_runtimes_tasks(tmp_path: Path) -> None:
    from streams.runtime.loop import Task

    _, relay = build_exposition(tmp_path)
    runtime = relay.runtime
    assert runtime is not None
    registry = relay.metrics.registry
    assert b"leadrelay_worker_ready 0.0" in generate_latest(registry)  # not in the group yet
    runtime.joined, runtime.rebalancing = True, False
    stage = next(iter(runtime.stages.values()))
    task = Task(stage, 0, [], None, None)
    runtime.tasks[(stage.name, 0)] = task
    assert not runtime.ready, "a task still restoring"
    task.ready = True
    assert runtime.ready and b"leadrelay_worker_ready 1.0" in generate_latest(registry)
    runtime.rebalancing = True
    assert not runtime.ready


def test_pool_gauges_belong_to_the_partition_being_handled(tmp_path: Path) -> None:
    _, relay = build_exposition(tmp_path)
    m, runtime = relay.metrics, relay.runtime
    runtime._current = ("lr-pool-events", 3)
    m.set_pool_state("dach", open_leads=1, capacity=2)
    runtime._current = None
    runtime.on_assigned([("lr-pool-events", 0)])  # the partition moved away
    assert series(m, "leadrelay_open_leads") == []


def test_the_runtime_counts_aborted_batches_per_stage(tmp_path: Path) -> None:
    _, relay = build_exposition(tmp_path)
    assert relay.runtime.on_abort is not None
    relay.runtime.on_abort("route")
    relay.runtime.on_abort("route")
    assert value(relay.metrics, "leadrelay_transactions_aborted_total", stage="route") == 2
