"""Prometheus metrics of the CRM sink, against an explicit registry. Labels are closed vocabularies."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from streams.web.metrics import LATENCY_BUCKETS

OUTCOMES = ("delivered", "skipped", "dead_lettered")
ATTEMPT_RESULTS = ("2xx", "3xx", "4xx", "429", "5xx", "timeout", "connection_error")


def attempt_result(status: int | None, error: str | None = None) -> str:
    if status is None:
        return "timeout" if error == "timeout" else "connection_error"
    return "429" if status == 429 else f"{status // 100}xx"


@dataclass(eq=False)
class SinkMetrics:
    registry: CollectorRegistry
    decisions: Counter
    attempts: Counter
    dead_letters: Counter
    age: Histogram
    ready: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SinkMetrics:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        return cls(
            registry=registry,
            decisions=Counter(
                "leadrelay_sink_decisions",
                "Decisions the sink finished with, by outcome (delivered, skipped: unassigned, dead_lettered)",
                ["outcome"],
                registry=registry,
            ),
            attempts=Counter(
                "leadrelay_sink_attempts",
                "HTTP requests to the CRM, by result (status class, 429, timeout, connection_error)",
                ["result"],
                registry=registry,
            ),
            dead_letters=Counter(
                "leadrelay_sink_dead_letters",
                "Decisions sent to the sink's dead-letter topic, by reason",
                ["reason"],
                registry=registry,
            ),
            age=Histogram(
                "leadrelay_sink_delivery_lag_seconds",
                "From the decision (decided_at) to the CRM's acknowledgement",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            ready=Gauge("leadrelay_sink_ready", "1 when the sink's Kafka clients are started", registry=registry),
        )
