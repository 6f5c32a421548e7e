"""Prometheus metrics of the worker, created against an explicit registry (tests use a fresh one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
                ["pool", "reason", "strategy"],
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
                "Closed deals applied to pool state",
                ["pool", "outcome", "matched"],
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
