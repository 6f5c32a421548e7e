"""Prometheus metrics of the worker, created against an explicit registry (tests use a fresh one).

Agents call the `record_*`/`set_*` methods, never the collectors directly, so names, labels and
cardinality limits live here only. Everything is served on the worker's web port at /metrics, next to
Faust's own sensors (`leadrelay_faust_*`, see streams/web/health.py).

Conventions (checked by `promtool check metrics` in tests/unit/test_metrics.py and on a live worker):
- `leadrelay_<what>_<unit>`, base units (seconds, ratio), counters end in `_total` (the client adds
  it: the attribute is created as `leadrelay_decisions`, exposed as `leadrelay_decisions_total`).
- Label values come from closed vocabularies (reason, outcome, source topic, agent) or from ids that
  pass through a `LabelLimiter`: at most `max_pools` pools and `max_strategies`/`max_variants`
  strategy and variant ids. Past a limit a counter's observation is folded into the value `_other`,
  a gauge's is dropped (a summed `_other` gauge would be meaningless); either way
  `leadrelay_metric_label_overflow_total{label}` counts it, so a hit limit is visible.
- Per-rep series (`leadrelay_rep_*`) exist only when `Settings.metrics_per_rep` is on, for at most
  `metrics_max_reps` (pool, rep) pairs. Rep ids are employee ids, never lead data: no contact field
  and no lead id is ever a label.
- `_created` samples are switched off (process-wide): they double the series for no dashboard use.

Ownership of per-pool gauges: a pool's state lives on the worker that owns its partition of the pool
events topic. Each `set_*` for a pool notes the partition of the record being handled (`locate`,
wired to the runtime's current record by streams/runtime/app.py); after a rebalance `retain_partitions()` drops
the gauges of pools whose partition went to another worker, so `sum by (pool)` never counts a pool twice.

Slots for the lifecycle work (SLA timers, reassignment, claims) -- add them the same way, no
placeholders until then:
1. a collector in `create()`: `leadrelay_sla_breaches_total{pool, stage}`,
   `leadrelay_reassignments_total{pool, cause}`, `leadrelay_claims_total{pool, outcome}` and, if
   wanted, `leadrelay_claim_latency_seconds` (a histogram without pool label, like decision latency);
   label values from Literal vocabularies in schemas/, pools through `self._pool_label()`;
2. one method per observation (`record_sla_breach(pool, stage)`, `record_reassignment(pool, cause)`,
   `record_claim(pool, outcome, latency_seconds)`), called by the agents;
3. tests/unit/test_metrics.py lints the whole exposition, so the new names are checked at once; add
   panels to deploy/grafana/dashboards/leadrelay.json and alerts to deploy/prometheus/alerts.yml
   (tests/deploy/ checks that their expressions only use names that exist here).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from schemas.events import AssignmentDecision

if TYPE_CHECKING:
    from streams.settings import Settings

OTHER = "_other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Where the event being handled came from: (topic, partition), or None outside an agent.
Locator = Callable[[], "tuple[str, int] | None"]


def _nowhere() -> tuple[str, int] | None:
    return None


@dataclass
class LabelLimiter:
    """Keeps a label's cardinality bounded: the first `limit` values pass, later ones become _other."""

    limit: int
    seen: set[str] = field(default_factory=set)

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(eq=False)
class Metrics:
    registry: CollectorRegistry
    pool: LabelLimiter
    strategy: LabelLimiter
    variant: LabelLimiter
    rep: LabelLimiter
    per_rep: bool
    decisions: Counter
    decision_latency: Histogram
    duplicate_leads: Counter
    contact_duplicates: Counter
    dead_letters: Counter
    deals: Counter
    activity: Counter
    sla_reassignments: Counter
    lead_updates: Counter
    hand_backs: Counter
    claims: Counter
    waiting: Gauge
    waiting_assigned: Counter
    waiting_timeouts: Counter
    internal_errors: Counter
    records_read: Counter
    transactions_aborted: Counter
    open_leads: Gauge
    capacity: Gauge
    fairness: Gauge
    policy: Info
    rep_open_leads: Gauge
    rep_capacity: Gauge
    consumer_lag: Gauge
    lag_errors: Counter
    ready: Gauge
    label_overflow: Counter
    build: Info
    # pool -> (topic, partition) of the event that last set its gauges; reps set per pool
    owners: dict[str, tuple[str, int]] = field(default_factory=dict)
    reps_by_pool: dict[str, set[str]] = field(default_factory=dict)
    stated_pools: set[str] = field(default_factory=set)
    policies: dict[str, tuple[str, int, tuple[str, ...]]] = field(default_factory=dict)
    lag_partitions: set[tuple[str, str]] = field(default_factory=set)
    read_by_topic: dict[str, Any] = field(default_factory=dict)  # records_read's children: per record
    locate: Locator = _nowhere

    @classmethod
    def create(
        cls,
        registry: CollectorRegistry,
        *,
        max_pools: int = 200,
        max_strategies: int = 50,
        max_variants: int = 50,
        per_rep: bool = False,
        max_reps: int = 500,
        runtime_collectors: bool = True,
    ) -> Metrics:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if runtime_collectors:
            _add_runtime_collectors(registry)
        build = Info("leadrelay_build", "Versions of the running worker", registry=registry)
        build.info(
            {
                "version": _version("leadrelay"),
                "faust": _version("faust-streaming"),
                "aiokafka": _version("aiokafka"),
                "python": platform.python_version(),
            }
        )
        return cls(
            registry=registry,
            pool=LabelLimiter(max_pools),
            strategy=LabelLimiter(max_strategies),
            variant=LabelLimiter(max_variants),
            rep=LabelLimiter(max_reps if per_rep else 0),
            per_rep=per_rep,
            decisions=Counter(
                "leadrelay_decisions",
                "Assignment decisions emitted (first emission per lead), by pool, reason, strategy and variant",
                ["pool", "reason", "strategy", "variant"],
                registry=registry,
            ),
            decision_latency=Histogram(
                "leadrelay_decision_latency_seconds",
                "From the lead's Kafka timestamp on the input topic to its decision",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            duplicate_leads=Counter(
                "leadrelay_duplicate_leads",
                "Leads seen again; their stored decision was re-emitted",
                ["pool"],
                registry=registry,
            ),
            contact_duplicates=Counter(
                "leadrelay_contact_duplicates",
                "New leads sent to the holder of an open lead with the same dedupe key (trigger duplicate_of)",
                ["pool", "key"],
                registry=registry,
            ),
            dead_letters=Counter(
                "leadrelay_dead_letters",
                "Records sent to the dead-letter topic, by source topic and reason",
                ["source", "reason"],
                registry=registry,
            ),
            deals=Counter(
                "leadrelay_deals",
                "Closed deals applied to pool state, by the variant that assigned the lead",
                ["pool", "outcome", "variant", "matched"],
                registry=registry,
            ),
            activity=Counter(
                "leadrelay_activity_records",
                "Lead activity applied in the pool log, by kind and what it did (touched, closed, not_holder, ignored)",
                ["kind", "outcome"],
                registry=registry,
            ),
            sla_reassignments=Counter(
                "leadrelay_sla_reassignments",
                "Lead timers that fired: follow-up SLA (reassigned, returned_to_pool), claim window (window_assigned)",
                ["outcome"],
                registry=registry,
            ),
            lead_updates=Counter(
                "leadrelay_lead_updates",
                "Lead updates applied in the pool log, by what they did (kept, moved, redecided, requeued,"
                " stored, forwarded, ignored)",
                ["outcome"],
                registry=registry,
            ),
            hand_backs=Counter(
                "leadrelay_hand_backs",
                "Open leads a rep gave up by a roster change: trigger rep_left or rep_unavailable, outcome"
                " reassigned or returned_to_pool",
                ["trigger", "outcome"],
                registry=registry,
            ),
            waiting=Gauge(
                "leadrelay_waiting_leads", "Leads waiting for capacity, per pool", ["pool"], registry=registry
            ),
            waiting_assigned=Counter(
                "leadrelay_waiting_assigned",
                "Waiting leads assigned when capacity freed, per pool",
                ["pool"],
                registry=registry,
            ),
            waiting_timeouts=Counter(
                "leadrelay_waiting_timeouts",
                "Waiting leads sent to the open pool after the policy's max_wait, per pool",
                ["pool"],
                registry=registry,
            ),
            claims=Counter(
                "leadrelay_claims",
                "Claims on open-pool leads answered, by result (claimed, or the reason of the rejection)",
                ["result"],
                registry=registry,
            ),
            records_read=Counter(
                "leadrelay_records_read",
                "Input records read by the worker's agents, by topic (internal topics included)",
                ["topic"],
                registry=registry,
            ),
            transactions_aborted=Counter(
                "leadrelay_transactions_aborted",
                "Batches whose Kafka transaction failed (fenced, broker unreachable) and were done again, by stage",
                ["stage"],
                registry=registry,
            ),
            internal_errors=Counter(
                "leadrelay_internal_errors",
                "Unexpected errors while handling one record (record dead-lettered, loop continued)",
                ["agent"],
                registry=registry,
            ),
            open_leads=Gauge("leadrelay_open_leads", "Open leads held by reps, per pool", ["pool"], registry=registry),
            capacity=Gauge(
                "leadrelay_capacity_leads",
                "Total capacity of active reps, per pool (absent while an active rep has no limit)",
                ["pool"],
                registry=registry,
            ),
            fairness=Gauge(
                "leadrelay_fairness_gini_ratio",
                "Gini coefficient of what the pool's reps received (0 = even, 1 = one rep got everything)",
                ["pool"],
                registry=registry,
            ),
            policy=Info(
                "leadrelay_policy",
                "Routing policy in force per pool: id, version and experiment variants (value always 1)",
                ["pool"],
                registry=registry,
            ),
            rep_open_leads=Gauge(
                "leadrelay_rep_open_leads",
                "Open leads per rep (only with metrics_per_rep, at most metrics_max_reps series)",
                ["pool", "rep"],
                registry=registry,
            ),
            rep_capacity=Gauge(
                "leadrelay_rep_capacity_leads",
                "Capacity per rep (only with metrics_per_rep, at most metrics_max_reps series; absent without a limit)",
                ["pool", "rep"],
                registry=registry,
            ),
            consumer_lag=Gauge(
                "leadrelay_consumer_lag_records",
                "Records in an assigned input partition not yet committed by this worker (log end - committed)",
                ["topic", "partition"],
                registry=registry,
            ),
            lag_errors=Counter(
                "leadrelay_consumer_lag_errors",
                "Failed attempts to read offsets for the consumer lag",
                registry=registry,
            ),
            ready=Gauge(
                "leadrelay_worker_ready",
                "1 when tables are recovered and no rebalance is in progress (same as /readyz)",
                registry=registry,
            ),
            label_overflow=Counter(
                "leadrelay_metric_label_overflow",
                "Observations whose label value was past its cardinality limit (folded into _other or dropped)",
                ["label"],
                registry=registry,
            ),
            build=build,
        )

    @classmethod
    def for_settings(cls, settings: Settings, registry: CollectorRegistry) -> Metrics:
        return cls.create(
            registry,
            max_pools=settings.metrics_max_pools,
            per_rep=settings.metrics_per_rep,
            max_reps=settings.metrics_max_reps,
        )

    # --- labels -------------------------------------------------------------------------------------

    def _limited(self, limiter: LabelLimiter, label: str, value: str) -> str:
        out = limiter(value)
        if out == OTHER:
            self.label_overflow.labels(label=label).inc()
        return out

    def _pool_label(self, pool: str) -> str:
        return self._limited(self.pool, "pool", pool)

    def _pool_gauge_label(self, pool: str) -> str | None:
        """The pool's label for a gauge, or None past the limit (dropped). Notes who owns the pool."""
        label = self._pool_label(pool)
        if label == OTHER:
            return None
        where = self.locate()
        if where is not None:
            self.owners[pool] = where
        return label

    # --- observations from agents -------------------------------------------------------------------

    def record_decision(self, decision: AssignmentDecision, latency_seconds: float | None) -> None:
        """A first decision for a lead or attempt (not a re-emitted duplicate); a timer's decision has no
        latency (None)."""
        self.decisions.labels(
            pool=self._pool_label(decision.pool),
            reason=decision.reason,
            strategy=self._limited(self.strategy, "strategy", decision.explanation.strategy),
            variant=self._limited(self.variant, "variant", decision.variant or ""),
        ).inc()
        if latency_seconds is not None:
            self.decision_latency.observe(max(0.0, latency_seconds))

    def record_aborted(self, stage: str) -> None:
        self.transactions_aborted.labels(stage=stage).inc()

    def record_read(self, topic: str) -> None:
        child = self.read_by_topic.get(topic)
        if child is None:  # labels() per record cost more than the increment
            child = self.read_by_topic[topic] = self.records_read.labels(topic=topic)
        child.inc()

    def record_duplicate(self, pool: str) -> None:
        self.duplicate_leads.labels(pool=self._pool_label(pool)).inc()

    def record_contact_duplicate(self, pool: str, key: str) -> None:
        """A new lead joined an open lead of the same contact; `key` is the kind that matched (email,
        phone, domain: the Literal of routing/policy.py), never the key itself."""
        self.contact_duplicates.labels(pool=self._pool_label(pool), key=key).inc()

    def record_deal(self, pool: str, outcome: str, variant: str | None, *, matched: bool) -> None:
        """A closed deal; won/(won+lost) per variant is the conversion of an experiment arm."""
        self.deals.labels(
            pool=self._pool_label(pool),
            outcome=outcome,
            variant=self._limited(self.variant, "variant", variant or ""),
            matched="true" if matched else "false",
        ).inc()

    def record_activity(self, kind: str, outcome: str) -> None:
        """An activity applied to a lead (kind and outcome are closed sets: bounded labels)."""
        self.activity.labels(kind=kind, outcome=outcome).inc()

    def record_sla(self, outcome: str) -> None:
        """A lead's timer fired: `reassigned`, `returned_to_pool` (follow-up SLA), `window_assigned` (claim window)."""
        self.sla_reassignments.labels(outcome=outcome).inc()

    def record_update(self, outcome: str) -> None:
        """A lead update applied in the pool log (`outcome` is a closed set, routing/updates.OUTCOMES)."""
        self.lead_updates.labels(outcome=outcome).inc()

    def record_hand_back(self, trigger: str, outcome: str) -> None:
        """A lead taken from a rep that left the pool or turned unavailable (closed sets: see availability)."""
        self.hand_backs.labels(trigger=trigger, outcome=outcome).inc()

    def record_claim(self, result: str) -> None:
        """A claim answered (`result` is a ClaimReason: a closed set)."""
        self.claims.labels(result=result).inc()

    def record_dead_letter(self, source: str, reason: str) -> None:
        self.dead_letters.labels(source=source, reason=reason).inc()

    def record_internal_error(self, agent: str) -> None:
        self.internal_errors.labels(agent=agent).inc()

    def set_waiting(self, pool: str, n: int) -> None:
        """Leads waiting for capacity in the pool."""
        label = self._pool_gauge_label(pool)
        if label is not None:
            self.waiting.labels(pool=label).set(n)

    def record_waiting(self, pool: str, outcome: str) -> None:
        """A waiting lead left the queue: `assigned` (capacity freed) or `timed_out` (max_wait)."""
        counter = self.waiting_assigned if outcome == "assigned" else self.waiting_timeouts
        counter.labels(pool=self._pool_label(pool)).inc()

    def record_release(self, pool: str) -> None:
        """A closed deal freed one open lead (the next decision re-sets the exact pool totals)."""
        if pool not in self.stated_pools:
            return  # nothing to correct yet (e.g. after a restart): never show a negative load
        label = self._pool_gauge_label(pool)
        if label is not None:
            self.open_leads.labels(pool=label).dec()

    def set_pool_state(self, pool: str, *, open_leads: int, capacity: int | None) -> None:
        """Open leads and total capacity; capacity None (an active rep without a limit) drops the capacity
        series, so "open / capacity" alerts see no ratio instead of a false one."""
        label = self._pool_gauge_label(pool)
        if label is None:
            return
        self.open_leads.labels(pool=label).set(open_leads)
        if capacity is None:
            _remove(self.capacity, label)
        else:
            self.capacity.labels(pool=label).set(capacity)
        self.stated_pools.add(pool)

    def set_fairness(self, pool: str, gini: float) -> None:
        """The pool's Gini coefficient in [0, 1] (e.g. routing.fairness.gini of value received per rep)."""
        label = self._pool_gauge_label(pool)
        if label is not None:
            self.fairness.labels(pool=label).set(min(1.0, max(0.0, gini)))

    def set_policy(self, pool: str, policy_id: str, version: int, variant_ids: Iterable[str] = ()) -> None:
        """The policy now in force for the pool (replaces the previous one's series).

        Cheap when nothing changed, so it can be called on every decision (that also covers pools that
        run the default policy and never see a policy event).
        """
        current = (policy_id, version, tuple(sorted(set(variant_ids))))
        if self.policies.get(pool) == current:
            return
        label = self._pool_gauge_label(pool)
        if label is None:
            return
        variants = ",".join(sorted({self._limited(self.variant, "variant", v) for v in current[2]}))
        self.policy.labels(pool=label).info({"policy_id": policy_id, "version": str(version), "variants": variants})
        self.policies[pool] = current

    def set_rep_load(self, pool: str, rep_id: str, open_leads: int, capacity: int | None) -> None:
        """Per-rep load; a no-op unless metrics_per_rep is on, and bounded by metrics_max_reps pairs.
        A rep without a limit (capacity None) has no capacity series."""
        if not self.per_rep:
            return
        label = self._pool_gauge_label(pool)
        if label is None or self._limited(self.rep, "rep", f"{pool}|{rep_id}") == OTHER:
            return
        self.rep_open_leads.labels(pool=label, rep=rep_id).set(open_leads)
        if capacity is None:
            _remove(self.rep_capacity, label, rep_id)
        else:
            self.rep_capacity.labels(pool=label, rep=rep_id).set(capacity)
        self.reps_by_pool.setdefault(pool, set()).add(rep_id)

    def forget_rep(self, pool: str, rep_id: str) -> None:
        """A rep left the pool: drop its series (its limiter slot stays taken; the limit stays a bound)."""
        reps = self.reps_by_pool.get(pool)
        if not reps or rep_id not in reps:
            return
        reps.discard(rep_id)
        for gauge in (self.rep_open_leads, self.rep_capacity):
            _remove(gauge, pool, rep_id)

    # --- bookkeeping from the worker ----------------------------------------------------------------

    def retain_partitions(self, assigned: Collection[tuple[str, int]]) -> list[str]:
        """After a rebalance: drop the gauges of pools whose partition is no longer ours."""
        owned = {(topic, int(partition)) for topic, partition in assigned}
        gone = [pool for pool, where in self.owners.items() if where not in owned]
        for pool in gone:
            del self.owners[pool]
            self.stated_pools.discard(pool)
            self.policies.pop(pool, None)
            for gauge in (self.open_leads, self.capacity, self.fairness, self.policy):
                _remove(gauge, pool)
            for rep_id in self.reps_by_pool.pop(pool, set()):
                for gauge in (self.rep_open_leads, self.rep_capacity):
                    _remove(gauge, pool, rep_id)
        return gone

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int], *, keep: Collection[tuple[str, int]] = ()) -> None:
        """Lag per (topic, partition). Series of partitions neither in `lag` nor in `keep` are removed."""
        fresh = {(topic, str(partition)): value for (topic, partition), value in lag.items()}
        kept = {(topic, str(partition)) for topic, partition in keep} & self.lag_partitions
        for topic, partition in self.lag_partitions - fresh.keys() - kept:
            _remove(self.consumer_lag, topic, partition)
        for (topic, partition), value in fresh.items():
            self.consumer_lag.labels(topic=topic, partition=partition).set(max(0, value))
        self.lag_partitions = set(fresh) | kept


def _remove(collector: Gauge | Info, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set, or already removed
        collector.remove(*labels)


def _add_runtime_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, fds, start time), python_gc_* and python_info, as on the default registry."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
