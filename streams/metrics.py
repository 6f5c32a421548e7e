"""Prometheus metrics of the worker, created against an explicit registry (tests use a fresh one).

Agents call the `record_*`/`set_*` methods, never the collectors directly, so names, labels and
cardinality limits live here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.events import AssignmentDecision

OTHER = "_other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    pool: LabelLimiter
    decisions: Counter
    decision_latency: Histogram
    duplicate_leads: Counter
    dead_letters: Counter
    deals: Counter
    internal_errors: Counter
    open_leads: Gauge
    capacity: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, *, max_pools: int = 200) -> Metrics:
        return cls(
            registry=registry,
            pool=LabelLimiter(max_pools),
            decisions=Counter(
                "leadrelay_decisions",
                "Assignment decisions emitted (first emission per lead)",
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
            dead_letters=Counter(
                "leadrelay_dead_letters",
                "Records sent to the dead-letter topic",
                ["source", "reason"],
                registry=registry,
            ),
            deals=Counter(
                "leadrelay_deals",
                "Closed deals applied to pool state, by the variant that assigned the lead",
                ["pool", "outcome", "variant", "matched"],
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
                "Total capacity of active reps, per pool",
                ["pool"],
                registry=registry,
            ),
        )

    def record_decision(self, decision: AssignmentDecision, latency_seconds: float) -> None:
        """A first decision for a lead (not a re-emitted duplicate)."""
        self.decisions.labels(
            pool=self.pool(decision.pool),
            reason=decision.reason,
            strategy=decision.explanation.strategy,
            variant=decision.variant or "",
        ).inc()
        self.decision_latency.observe(max(0.0, latency_seconds))

    def record_duplicate(self, pool: str) -> None:
        self.duplicate_leads.labels(pool=self.pool(pool)).inc()

    def record_deal(self, pool: str, outcome: str, variant: str | None, *, matched: bool) -> None:
        self.deals.labels(
            pool=self.pool(pool), outcome=outcome, variant=variant or "", matched="true" if matched else "false"
        ).inc()

    def record_dead_letter(self, source: str, reason: str) -> None:
        self.dead_letters.labels(source=source, reason=reason).inc()

    def record_internal_error(self, agent: str) -> None:
        self.internal_errors.labels(agent=agent).inc()

    def record_release(self, pool: str) -> None:
        """A closed deal freed one open lead (the next decision re-sets the exact pool totals)."""
        self.open_leads.labels(pool=self.pool(pool)).dec()

    def set_pool_state(self, pool: str, *, open_leads: int, capacity: int) -> None:
        label = self.pool(pool)
        self.open_leads.labels(pool=label).set(open_leads)
        self.capacity.labels(pool=label).set(capacity)
