"""Prometheus metrics of the ingress, created against an explicit registry (tests use a fresh one).

Labels are closed vocabularies: route (`leads`, `deals`, `other`), status class (`2xx`...`5xx`), record
outcome, auth failure reason, and the source names of the sources file (bounded by the operator's
configuration; a request is labelled with its source only once it is authenticated).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# An HTTP answer waits for acks=all: from a millisecond on a local broker to the ack timeout.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECORD_OUTCOMES = ("accepted", "invalid", "too_large", "unavailable", "overloaded")


@dataclass(eq=False)
class IngressMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    records: Counter
    auth_failures: Counter
    in_flight: Gauge
    ready: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngressMetrics:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        return cls(
            registry=registry,
            requests=Counter(
                "leadrelay_ingress_requests",
                "HTTP requests answered by the ingress, by route and status class",
                ["route", "status_class"],
                registry=registry,
            ),
            duration=Histogram(
                "leadrelay_ingress_request_duration_seconds",
                "From request received to answer sent (a 202 includes Kafka's acknowledgement)",
                ["route"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            records=Counter(
                "leadrelay_ingress_records",
                "Records in authenticated requests, by route, source and outcome",
                ["route", "source", "outcome"],
                registry=registry,
            ),
            auth_failures=Counter(
                "leadrelay_ingress_auth_failures",
                "Requests refused 401, by reason (missing_headers, unknown_source, bad_signature, ...)",
                ["reason"],
                registry=registry,
            ),
            in_flight=Gauge(
                "leadrelay_ingress_in_flight_records",
                "Records sent to Kafka and not yet acknowledged",
                registry=registry,
            ),
            ready=Gauge("leadrelay_ingress_ready", "1 when connected to Kafka (same as /readyz)", registry=registry),
        )

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status_class=f"{status // 100}xx").inc()
        self.duration.labels(route=route).observe(max(0.0, seconds))

    def record_records(self, route: str, source: str, outcome: str, n: int = 1) -> None:
        if n:
            self.records.labels(route=route, source=source, outcome=outcome).inc(n)
