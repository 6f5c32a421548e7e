"""Prometheus metrics of the archive, against an explicit registry. Labels: table, topic, partition, reason."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

ERROR_REASONS = ("invalid_record", "database", "commit_failed")


@dataclass(eq=False)
class ArchiveMetrics:
    registry: CollectorRegistry
    records: Counter
    errors: Counter
    lag: Gauge
    committed: Gauge
    write_seconds: Histogram
    ready: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ArchiveMetrics:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        return cls(
            registry=registry,
            records=Counter(
                "leadrelay_archive_records",
                "Records written to the archive database, by table (a record read twice counts twice)",
                ["table"],
                registry=registry,
            ),
            errors=Counter(
                "leadrelay_archive_errors",
                "Archive failures by reason: invalid_record (skipped), database (retried), commit_failed (re-read)",
                ["reason"],
                registry=registry,
            ),
            lag=Gauge(
                "leadrelay_archive_lag_records",
                "Committed records of an archived topic not yet in the database (last stable offset - position)",
                ["topic"],
                registry=registry,
            ),
            committed=Gauge(
                "leadrelay_archive_committed_offset",
                "Next offset to archive, committed to Kafka after the database commit",
                ["topic", "partition"],
                registry=registry,
            ),
            write_seconds=Histogram(
                "leadrelay_archive_write_seconds",
                "Time to write one batch to the database (one transaction)",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
            ready=Gauge(
                "leadrelay_archive_ready",
                "1 when the archive's consumer is started and its last database write succeeded",
                registry=registry,
            ),
        )
