"""Structured JSON logs: one object per line with lead_id, pool and topic/partition/offset; no PII.

Every line has `ts`, `level`, `logger`, `msg`, and, when known, the context keys of CONTEXT_KEYS. They
come from, in order of precedence:
1. `extra=` of the logging call (`log.info("...", extra={"lead_id": ..., "pool": ...})`);
2. `bind(lead_id=..., pool=...)`, a context manager an agent wraps around the handling of one record;
3. the Faust event being processed (topic, partition, offset), filled in automatically.

Personal data stays out by construction: only allowlisted keys are copied (a `contact`, `email` or
`name` extra is dropped), and e-mail addresses, phone numbers and pydantic's `input_value=...` echo of
rejected input are masked in the message, the context values and exception traces.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import GroupCoordinatorNotAvailableError

# Only these keys are copied into the line: an allowlist keeps contact data out by design.
CONTEXT_KEYS = (
    "lead_id",
    "pool",
    "rep_id",
    "topic",
    "partition",
    "offset",
    "reason",
    "decision_id",
    "agent",
)
EVENT_KEYS = ("topic", "partition", "offset")
REDACTED = "<redacted>"

_bound: ContextVar[dict[str, Any] | None] = ContextVar("leadrelay_log_context", default=None)

_PATTERNS = (
    # pydantic echoes rejected input: "[type=..., input_value='jane@…', input_type=str]"
    (re.compile(r"input_value=.*?(?=, input_type=)", re.DOTALL), f"input_value={REDACTED}"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "<redacted-email>"),
    (re.compile(r"(?<![\w+])\+\d[\d \t().-]{6,}\d"), "<redacted-phone>"),
)


def redact(text: str) -> str:
    """Mask e-mail addresses, international phone numbers and echoed input values."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add context keys (e.g. lead_id, pool) to every line logged inside the block, in this task only."""
    current = _bound.get() or {}
    token = _bound.set({**current, **{k: v for k, v in fields.items() if k in CONTEXT_KEYS and v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def _event_context() -> dict[str, Any]:
    try:
        from faust import current_event

        event = current_event()
    except Exception:  # no Faust, or no event: a log line must never fail because of its context
        return {}
    if event is None:
        return {}
    msg = event.message
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        context = {**_event_context(), **(_bound.get() or {})}
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is None:
                value = context.get(key)
            if value is not None:
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["trace"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class TransientCoordinatorFilter(logging.Filter):
    """Downgrades aiokafka's ERROR "Group Coordinator Request failed: ... GroupCoordinatorNotAvailableError"
    to WARNING while it is transient; a persistent one stays an ERROR.

    aiokafka logs that line at ERROR each time a FindCoordinator lookup for the consumer group is answered
    COORDINATOR_NOT_AVAILABLE, and retries after retry_backoff_ms (consumer/group_coordinator.py,
    ensure_coordinator_known). At start that is normal: the first group request makes a fresh broker
    create __consumer_offsets, and until its partitions have leaders and the coordinator has loaded the
    group's partition every lookup gets that answer (Kafka's own clients log it at DEBUG). A coordinator
    failover gives the same short gap. So a streak of these lines is downgraded for its first
    GRACE_SECONDS; a streak that lasts longer (the coordinator stays away) is logged at ERROR again.
    Only that error class from aiokafka's loggers is touched; every other error passes unchanged."""

    GRACE_SECONDS = 60.0  # longer than any start on a healthy cluster, short enough for an outage to alert
    STREAK_GAP_SECONDS = 30.0  # no such line for this long: the coordinator was found, a new streak starts

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.streak_start: float | None = None
        self.last: float = 0.0
        self.downgraded = 0  # how many lines were downgraded (for tests and debugging)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._is_transient_coordinator_error(record):
            return True
        if self.streak_start is None or record.created - self.last > self.STREAK_GAP_SECONDS:
            self.streak_start = record.created
        self.last = record.created
        if record.created - self.streak_start <= self.GRACE_SECONDS:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            self.downgraded += 1
        return True

    @staticmethod
    def _is_transient_coordinator_error(record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return (
            record.levelno == logging.ERROR
            and record.name.startswith("aiokafka")
            and any(isinstance(arg, GroupCoordinatorNotAvailableError) for arg in args)
        )


def worker_logging(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "streams.web.logs.JsonFormatter"}},
        "filters": {"transient_coordinator": {"()": "streams.web.logs.TransientCoordinatorFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
                "filters": ["transient_coordinator"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # Faust and aiokafka are chatty at INFO; their warnings still come through.
        "loggers": {name: {"level": "WARNING"} for name in ("aiokafka", "faust", "mode")},
    }
